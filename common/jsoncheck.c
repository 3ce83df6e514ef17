/* jsoncheck: strict JSON syntax check; see jsoncheck.h. */
#include "jsoncheck.h"

typedef struct jc {
    const unsigned char *s;
    size_t n, i;
    int depth, max_depth;
    const char *why;
} jc;

static bool fail(jc *c, const char *why) {
    if (!c->why) c->why = why;
    return false;
}

static void ws(jc *c) {
    while (c->i < c->n && (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\n' ||
                           c->s[c->i] == '\r'))
        c->i++;
}

static bool hex(unsigned char x) {
    return (x >= '0' && x <= '9') || (x >= 'a' && x <= 'f') || (x >= 'A' && x <= 'F');
}

/* A key may hold U+0000 like any string: the decoder compares a key's whole decoded bytes,
 * so "items\u0000x" is an unknown member, never "items". */
static bool string(jc *c) {
    c->i++; /* opening quote */
    while (c->i < c->n) {
        unsigned char x = c->s[c->i];
        if (x == '"') { c->i++; return true; }
        if (x < 0x20) return fail(c, "control character in a string");
        if (x == '\\') {
            if (++c->i >= c->n) break;
            x = c->s[c->i];
            if (x == 'u') {
                for (int k = 1; k <= 4; k++)
                    if (c->i + k >= c->n || !hex(c->s[c->i + k])) return fail(c, "bad \\u escape");
                c->i += 5;
                continue;
            }
            if (x != '"' && x != '\\' && x != '/' && x != 'b' && x != 'f' && x != 'n' && x != 'r' && x != 't')
                return fail(c, "bad escape in a string");
        }
        c->i++;
    }
    return fail(c, "unterminated string");
}

static bool digits(jc *c) {
    size_t start = c->i;
    while (c->i < c->n && c->s[c->i] >= '0' && c->s[c->i] <= '9') c->i++;
    return c->i > start;
}

static bool number(jc *c) {
    if (c->s[c->i] == '-') c->i++;
    if (c->i < c->n && c->s[c->i] == '0') c->i++;
    else if (!digits(c)) return fail(c, "bad number");
    if (c->i < c->n && c->s[c->i] == '.') {
        c->i++;
        if (!digits(c)) return fail(c, "bad number");
    }
    if (c->i < c->n && (c->s[c->i] == 'e' || c->s[c->i] == 'E')) {
        c->i++;
        if (c->i < c->n && (c->s[c->i] == '+' || c->s[c->i] == '-')) c->i++;
        if (!digits(c)) return fail(c, "bad number");
    }
    return true;
}

static bool literal(jc *c, const char *w) {
    size_t k = 0;
    for (; w[k]; k++)
        if (c->i + k >= c->n || c->s[c->i + k] != (unsigned char)w[k]) return fail(c, "unexpected character");
    c->i += k;
    return true;
}

static bool value(jc *c);

static bool container(jc *c, unsigned char close) {
    if (++c->depth > c->max_depth) return fail(c, "nesting too deep");
    c->i++;
    ws(c);
    if (c->i < c->n && c->s[c->i] == close) {
        c->i++;
        c->depth--;
        return true;
    }
    for (;;) {
        if (close == '}') {
            if (c->i >= c->n || c->s[c->i] != '"') return fail(c, "expected a string key");
            if (!string(c)) return false;
            ws(c);
            if (c->i >= c->n || c->s[c->i] != ':') return fail(c, "expected ':'");
            c->i++;
            ws(c);
        }
        if (!value(c)) return false;
        ws(c);
        if (c->i >= c->n) return fail(c, "unexpected end of data");
        if (c->s[c->i] == ',') {
            c->i++;
            ws(c);
            continue;
        }
        if (c->s[c->i] == close) {
            c->i++;
            c->depth--;
            return true;
        }
        return fail(c, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static bool value(jc *c) {
    if (c->i >= c->n) return fail(c, "unexpected end of data");
    switch (c->s[c->i]) {
    case '{': return container(c, '}');
    case '[': return container(c, ']');
    case '"': return string(c);
    case 't': return literal(c, "true");
    case 'f': return literal(c, "false");
    case 'n': return literal(c, "null");
    default:
        if (c->s[c->i] == '-' || (c->s[c->i] >= '0' && c->s[c->i] <= '9')) return number(c);
        return fail(c, "unexpected character");
    }
}

bool jsoncheck_valid(const char *s, size_t n, int max_depth, const char **why, size_t *at) {
    jc c = {(const unsigned char *)s, n, 0, 0, max_depth, NULL};
    ws(&c);
    bool ok = value(&c);
    if (ok) {
        ws(&c);
        if (c.i != c.n) ok = fail(&c, "unexpected data after the document");
    }
    if (!ok) {
        if (why) *why = c.why;
        if (at) *at = c.i;
    }
    return ok;
}
