/* jsonw: append-only JSON writer; see jsonw.h. */
#include "jsonw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void jsonw_init(jsonw *w) { memset(w, 0, sizeof *w); }

void jsonw_free(jsonw *w) {
    free(w->buf);
    memset(w, 0, sizeof *w);
}

void jsonw_reset(jsonw *w) {
    w->len = 0;
    w->oom = false;
    if (w->buf) w->buf[0] = '\0';
}

char *jsonw_take(jsonw *w) {
    char *b = w->buf;
    if (w->oom) { free(b); b = NULL; }
    memset(w, 0, sizeof *w);
    return b;
}

static bool reserve(jsonw *w, size_t extra) {
    if (w->oom) return false;
    if (w->len + extra + 1 <= w->cap) return true;
    size_t cap = w->cap ? w->cap : 256;
    while (cap < w->len + extra + 1) cap *= 2;
    char *b = realloc(w->buf, cap);
    if (!b) { w->oom = true; return false; }
    w->buf = b;
    w->cap = cap;
    return true;
}

void jsonw_rawn(jsonw *w, const char *s, size_t n) {
    if (!reserve(w, n)) return;
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

void jsonw_raw(jsonw *w, const char *s) { jsonw_rawn(w, s, strlen(s)); }

static char last(const jsonw *w) { return w->len ? w->buf[w->len - 1] : '\0'; }

void jsonw_keyn(jsonw *w, const char *key, size_t n) {
    if (last(w) != '{' && w->len) jsonw_rawn(w, ",", 1);
    jsonw_strn(w, key, n);
    jsonw_rawn(w, ":", 1);
}

void jsonw_key(jsonw *w, const char *key) { jsonw_keyn(w, key, strlen(key)); }

void jsonw_elem(jsonw *w) {
    if (last(w) != '[' && w->len) jsonw_rawn(w, ",", 1);
}

void jsonw_strn(jsonw *w, const char *s, size_t n) {
    /* Worst case every byte becomes \u00XX. */
    if (!reserve(w, n * 6 + 2)) return;
    char *o = w->buf + w->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': *o++ = '\\'; *o++ = '"'; break;
        case '\\': *o++ = '\\'; *o++ = '\\'; break;
        case '\n': *o++ = '\\'; *o++ = 'n'; break;
        case '\r': *o++ = '\\'; *o++ = 'r'; break;
        case '\t': *o++ = '\\'; *o++ = 't'; break;
        default:
            if (c < 0x20 || c == 0x7f) {
                static const char hex[] = "0123456789abcdef";
                *o++ = '\\'; *o++ = 'u'; *o++ = '0'; *o++ = '0';
                *o++ = hex[c >> 4]; *o++ = hex[c & 15];
            } else {
                *o++ = (char)c;
            }
        }
    }
    *o++ = '"';
    w->len = (size_t)(o - w->buf);
    w->buf[w->len] = '\0';
}

void jsonw_str(jsonw *w, const char *s) { jsonw_strn(w, s, strlen(s)); }

void jsonw_int(jsonw *w, long long v) {
    char b[32];
    int n = snprintf(b, sizeof b, "%lld", v);
    jsonw_rawn(w, b, (size_t)n);
}

void jsonw_double(jsonw *w, double v) {
    char b[40];
    int n = snprintf(b, sizeof b, "%.6g", v);
    jsonw_rawn(w, b, (size_t)n);
}
