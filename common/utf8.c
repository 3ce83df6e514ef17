/* utf8: strict UTF-8 validation, code point counting, blank test; see utf8.h. */
#include "utf8.h"

#include <stdint.h>

/* Decodes one code point at s[i..n); returns its length, or 0 when invalid. */
static size_t decode(const unsigned char *s, size_t i, size_t n, uint32_t *cp) {
    unsigned char c = s[i];
    if (c < 0x80) { *cp = c; return 1; }
    size_t len;
    uint32_t min, v;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; min = 0x80; v = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; min = 0x800; v = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; min = 0x10000; v = c & 0x07; }
    else return 0;
    if (n - i < len) return 0;
    for (size_t k = 1; k < len; k++) {
        unsigned char d = s[i + k];
        if ((d & 0xC0) != 0x80) return 0;
        v = (v << 6) | (d & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

bool utf8_valid(const char *str, size_t n, size_t *bad_at) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        /* Fast path over ASCII. */
        if (s[i] < 0x80) { i++; continue; }
        uint32_t cp;
        size_t l = decode(s, i, n, &cp);
        if (!l) {
            if (bad_at) *bad_at = i;
            return false;
        }
        i += l;
    }
    return true;
}

size_t utf8_count(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) count++;
    return count;
}

static bool is_space(uint32_t cp) {
    switch (cp) {
    case ' ': case '\t': case '\n': case '\v': case '\f': case '\r':
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F:
    case 0x205F: case 0x3000: case 0xFEFF:
        return true;
    default:
        return cp >= 0x2000 && cp <= 0x200A;
    }
}

bool utf8_blank(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t l = decode(s, i, n, &cp);
        if (!l || !is_space(cp)) return false;
        i += l;
    }
    return true;
}
