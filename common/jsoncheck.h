/*
 * jsoncheck: a strict RFC 8259 syntax check of a whole document, run before json-c parses
 * it, because json-c 0.16 accepts single quotes, NaN/Infinity, "1." and raw control
 * characters inside strings even in its strict mode. Pure, no allocation; nesting is
 * bounded so hostile input cannot exhaust the stack.
 */
#ifndef MW_JSONCHECK_H
#define MW_JSONCHECK_H

#include <stdbool.h>
#include <stddef.h>

/* True when s[0..n) is one JSON value with optional surrounding white space. Otherwise
 * false, with *why (a static string) and *at (byte offset) describing the first error. */
bool jsoncheck_valid(const char *s, size_t n, int max_depth, const char **why, size_t *at);

#endif
