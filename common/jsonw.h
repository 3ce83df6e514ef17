/*
 * jsonw: a small append-only JSON writer over a growable buffer. Used on the hot path
 * (results, log lines, the upsert's batch document) where building json-c objects per
 * value would cost an allocation each.
 *
 * Ownership: the jsonw owns buf; jsonw_free releases it, jsonw_take hands it to the caller.
 * Allocation failure sets oom and turns further writes into no-ops.
 */
#ifndef MW_JSONW_H
#define MW_JSONW_H

#include <stdbool.h>
#include <stddef.h>

typedef struct jsonw {
    char *buf;
    size_t len, cap;
    bool oom;
} jsonw;

void jsonw_init(jsonw *w);
void jsonw_free(jsonw *w);
void jsonw_reset(jsonw *w); /* length 0, buffer kept */
char *jsonw_take(jsonw *w); /* NUL-terminated; the caller frees; w is reset to empty */

void jsonw_raw(jsonw *w, const char *s);
void jsonw_rawn(jsonw *w, const char *s, size_t n);
/* Writes "key": preceded by a comma unless it opens an object. */
void jsonw_key(jsonw *w, const char *key);
void jsonw_keyn(jsonw *w, const char *key, size_t n);
/* Writes a comma unless the element opens an array. */
void jsonw_elem(jsonw *w);
void jsonw_str(jsonw *w, const char *s);
void jsonw_strn(jsonw *w, const char *s, size_t n); /* may hold NUL bytes: written as \u0000 */
void jsonw_int(jsonw *w, long long v);
void jsonw_double(jsonw *w, double v);

#endif
