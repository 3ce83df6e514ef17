/*
 * utf8: strict UTF-8 checks on byte strings (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF). Pure functions, no allocation.
 */
#ifndef MW_UTF8_H
#define MW_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* True when s[0..n) is valid UTF-8; otherwise false and *bad_at (if not NULL) is the
 * offset of the first byte of the first invalid sequence. */
bool utf8_valid(const char *s, size_t n, size_t *bad_at);

/* Number of code points in valid UTF-8 s[0..n). */
size_t utf8_count(const char *s, size_t n);

/* True when valid UTF-8 s[0..n) is empty or only white space (ASCII white space and the
 * Unicode space separators: U+0085, U+00A0, U+1680, U+2000–U+200A, U+2028, U+2029,
 * U+202F, U+205F, U+3000, and U+FEFF). */
bool utf8_blank(const char *s, size_t n);

#endif
