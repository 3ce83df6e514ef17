/*
 * batch: message decoding and item validation (docs/contract.md §2, §3). Pure logic; see batch.h.
 *
 * Decoding is two passes over the bytes and no tree: common/jsoncheck proves the message is
 * strict RFC 8259 JSON (and not nested deeper than MW_JSON_MAX_DEPTH), then this file walks
 * the known-good text, finds the members it needs (the last of duplicate names wins, as in
 * most parsers) and decodes only the strings it keeps, into one block per message. A decoded
 * string is never longer than its quoted form, so a block of the message's size is enough.
 */
#include "batch.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uuid/uuid.h>

#include "../common/jsoncheck.h"
#include "../common/utf8.h"

const mw_field_def batch_fields[F_COUNT] = {
    [F_CONVERSATION] = {"externalConversationId", "external_conversation_id", 256, true},
    [F_CUSTOMER] = {"externalCustomerId", "external_customer_id", 256, true},
    [F_EVENT] = {"eventId", "event_id", 256, false},
    [F_STATUS] = {"status", "status", 256, false},
    [F_PHONE] = {"phoneNumber", "phone_number", 32, false},
    [F_EMAIL] = {"emailAddress", "email_address", 320, false},
    [F_USER] = {"userId", "user_id", 256, false},
    [F_COUNTRY] = {"addressCountry", "address_country", 128, false},
    [F_STATE] = {"addressState", "address_state", 128, false},
    [F_ZIP] = {"addressZipcode", "address_zipcode", 16, false},
};

#define ATTR_NAME_MAX 256
#define ATTR_VALUE_MAX 4096

/* Namespace of generated eventIds (a fixed, random UUID; changing it changes every
 * generated id, so it never changes). */
static const uuid_t event_ns = {0x6b, 0x3c, 0x2e, 0x0a, 0x9d, 0x41, 0x4f, 0x7e,
                                0x8a, 0x55, 0x1c, 0x93, 0xd2, 0x07, 0xe4, 0x6f};

void batch_set_source(mw_batch *b, const mw_source *src) {
    b->src = *src;
    for (int i = 0; i < b->n_items; i++) {
        mw_item *it = &b->items[i];
        if (it->f[F_EVENT].p == it->gen_event_id) batch_event_id(it->gen_event_id, src, it->index);
    }
    if (b->bad_request) batch_event_id(b->bad_event_id, &b->src, 0);
}

void batch_event_id(char out[MW_UUID_STR_LEN + 1], const mw_source *src, int index) {
    char name[512];
    int n = snprintf(name, sizeof name, "%s/%d/%lld/%d", src->topic ? src->topic : "",
                     (int)src->partition, (long long)src->offset, index);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof name) n = (int)sizeof name - 1;
    uuid_t u;
    uuid_generate_sha1(u, (unsigned char *)event_ns, name, (size_t)n);
    uuid_unparse_lower(u, out);
}

static char *fmt_error(const char *prefix, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static char *fmt_error(const char *prefix, const char *fmt, ...) {
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t len = strlen(prefix) + strlen(msg) + 1;
    char *s = malloc(len);
    if (s) snprintf(s, len, "%s%s", prefix, msg);
    return s;
}

#define BAD_REQUEST "FAIL_BAD_REQUEST: ERROR: "
#define BAD_PARAMS "FAIL_BAD_PARAMS: ERROR: "

/* ---- walking known-good JSON ------------------------------------------------------------
 * Every function below takes the index of a value's first byte in a document that
 * jsoncheck accepted, so none of them meets a syntax error; each stays inside [0, n) anyway. */

typedef struct doc {
    const char *s;
    size_t n;
    mw_batch *b; /* where decoded strings go */
} doc;

static size_t skip_ws(const doc *d, size_t i) {
    while (i < d->n && (d->s[i] == ' ' || d->s[i] == '\t' || d->s[i] == '\n' || d->s[i] == '\r'))
        i++;
    return i;
}

/* i at an opening quote: the index just past the closing one, the first quote not escaped
 * (preceded by an even number of backslashes). memchr finds quotes a word at a time: this
 * walk was the worker's hottest code when it went byte by byte. */
static size_t skip_string(const doc *d, size_t i) {
    const char *start = d->s + i + 1, *end = d->s + d->n, *p = start;
    while (p < end) {
        const char *q = memchr(p, '"', (size_t)(end - p));
        if (!q) break;
        const char *b = q; /* the backslashes right before q (none before p: p follows a quote) */
        while (b > p && b[-1] == '\\') b--;
        if (((q - b) & 1) == 0) return (size_t)(q - d->s) + 1;
        p = q + 1;
    }
    return d->n;
}

/* i at a value: the index just past it. Containers are skipped by counting brackets. */
static size_t skip_value(const doc *d, size_t i) {
    if (i >= d->n) return d->n;
    char c = d->s[i];
    if (c == '"') return skip_string(d, i);
    if (c != '{' && c != '[') {
        while (i < d->n && d->s[i] != ',' && d->s[i] != '}' && d->s[i] != ']' && d->s[i] != ' ' &&
               d->s[i] != '\t' && d->s[i] != '\n' && d->s[i] != '\r')
            i++;
        return i;
    }
    int depth = 0;
    while (i < d->n) {
        c = d->s[i];
        if (c == '"') {
            i = skip_string(d, i);
            continue;
        }
        if (c == '{' || c == '[') depth++;
        else if ((c == '}' || c == ']') && --depth == 0) return i + 1;
        i++;
    }
    return d->n;
}

static unsigned hex4(const char *p) {
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p[k];
        v = v * 16 + (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Decodes the string at i (an opening quote) into out, which has room for at least its
 * quoted length; returns the decoded length (out is NUL-terminated after it). Escapes of a
 * lone UTF-16 surrogate become U+FFFD, so the result is always valid UTF-8. */
static size_t decode_string(const doc *d, size_t i, char *out) {
    size_t o = 0;
    for (i++; i < d->n;) {
        size_t run = i;
        while (i < d->n && d->s[i] != '"' && d->s[i] != '\\') i++;
        memcpy(out + o, d->s + run, i - run);
        o += i - run;
        if (i >= d->n || d->s[i] == '"') break;
        char e = d->s[i + 1];
        i += 2;
        switch (e) {
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'u': {
            unsigned cp = hex4(d->s + i);
            i += 4;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                unsigned lo = (i + 6 <= d->n && d->s[i] == '\\' && d->s[i + 1] == 'u')
                                  ? hex4(d->s + i + 2) : 0;
                if (lo >= 0xdc00 && lo <= 0xdfff) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    i += 6;
                } else {
                    cp = 0xfffd;
                }
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                cp = 0xfffd;
            }
            o += put_utf8(out + o, cp);
            break;
        }
        default: out[o++] = e; break; /* '"', '\\', '/' */
        }
    }
    out[o] = '\0';
    return o;
}

/* The longest member name looked for is 22 bytes; a key that decodes to more matches none. */
#define KEY_MAX 64

/* A member's name, decoded: the text itself when it has no escape, else a copy in buf;
 * name.p NULL when its escaped form could not fit KEY_MAX bytes (it matches no name). */
typedef struct key {
    mw_str name;
    char buf[6 * KEY_MAX + 1];
} key;

static bool key_is(const key *k, const char *name, size_t name_len) {
    return k->name.p && k->name.n == name_len && memcmp(k->name.p, name, name_len) == 0;
}

/* Iterates a container's elements (arrays) or members (objects, with k). *it starts at the
 * opening bracket; each call sets *v to the next value (and k to its member's name) and
 * returns false after the last. */
static bool next_in(const doc *d, size_t *it, key *k, size_t *v) {
    size_t i = *it;
    if (i >= d->n || d->s[i] == '}' || d->s[i] == ']') return false;
    i = skip_ws(d, i + 1); /* past the bracket or the comma */
    if (i >= d->n || d->s[i] == '}' || d->s[i] == ']') {
        *it = i;
        return false;
    }
    if (k) {
        size_t end = skip_string(d, i), raw = end - i - 2; /* without the quotes */
        if (!memchr(d->s + i + 1, '\\', raw)) k->name = (mw_str){d->s + i + 1, raw};
        else if (raw <= 6 * KEY_MAX) k->name = (mw_str){k->buf, decode_string(d, i, k->buf)};
        else k->name = (mw_str){NULL, 0};
        i = skip_ws(d, skip_ws(d, end) + 1); /* past the colon */
    }
    *v = i;
    *it = skip_ws(d, skip_value(d, i)); /* at ',' or the closing bracket */
    return true;
}

/* The value of the last member named name of the object at obj, or (size_t)-1. */
#define NONE ((size_t)-1)

static size_t member(const doc *d, size_t obj, const char *name) {
    size_t it = obj, v, found = NONE, len = strlen(name);
    key k;
    while (next_in(d, &it, &k, &v))
        if (key_is(&k, name, len)) found = v;
    return found;
}

static mw_str take_string(const doc *d, size_t i) {
    mw_batch *b = d->b;
    char *out = b->strings + b->strings_used;
    size_t n = decode_string(d, i, out);
    b->strings_used += n + 1;
    return (mw_str){out, n};
}

/* ---- validation --------------------------------------------------------------------------- */

enum check { CHECK_OK = 0, CHECK_TYPE, CHECK_BLANK, CHECK_EMPTY, CHECK_NUL, CHECK_LONG };

static bool is_null(const doc *d, size_t v) { return v == NONE || d->s[v] == 'n'; }

/* Checks one string value (v: its index, NONE when absent): type, then blank (required
 * fields), then U+0000, then length in code points. */
static enum check check_string(const doc *d, size_t v, bool required, bool nonempty, size_t max,
                               mw_str *out) {
    out->p = NULL;
    out->n = 0;
    if (is_null(d, v)) return required ? CHECK_BLANK : CHECK_OK;
    if (d->s[v] != '"') return CHECK_TYPE;
    mw_str s = take_string(d, v);
    if (required && utf8_blank(s.p, s.n)) return CHECK_BLANK;
    if (nonempty && s.n == 0) return CHECK_EMPTY;
    if (memchr(s.p, '\0', s.n)) return CHECK_NUL;
    if (s.n > max && utf8_count(s.p, s.n) > max) return CHECK_LONG;
    *out = s;
    return CHECK_OK;
}

static char *check_message(const char *field, enum check c, size_t max, bool or_null) {
    switch (c) {
    case CHECK_TYPE:
        return fmt_error(BAD_PARAMS, "%s must be a string%s", field, or_null ? " or null" : "");
    case CHECK_BLANK: return fmt_error(BAD_PARAMS, "%s cannot be blank", field);
    case CHECK_EMPTY: return fmt_error(BAD_PARAMS, "%s cannot be empty", field);
    case CHECK_NUL: return fmt_error(BAD_PARAMS, "%s cannot contain U+0000", field);
    case CHECK_LONG:
        return fmt_error(BAD_PARAMS, "%s exceeds maximum length of %zu", field, max);
    default: return NULL;
    }
}

static mw_attr *attr_add(mw_batch *b, bool *oom) {
    if (b->n_attr_pool == b->cap_attr_pool) {
        int cap = b->cap_attr_pool ? b->cap_attr_pool * 2 : 64;
        mw_attr *p = realloc(b->attr_pool, (size_t)cap * sizeof *p);
        if (!p) {
            *oom = true;
            return NULL;
        }
        b->attr_pool = p;
        b->cap_attr_pool = cap;
    }
    return &b->attr_pool[b->n_attr_pool++];
}

/* Validates attributes (v: NONE when absent) into the item's patch. Returns NULL on
 * success or an error string; *oom when memory ran out. */
static char *check_attributes(const doc *d, size_t v, mw_item *it, bool *oom) {
    mw_batch *b = d->b;
    it->has_attrs = false;
    it->n_attrs = 0;
    it->attr_start = b->n_attr_pool;
    if (is_null(d, v)) return NULL;
    if (d->s[v] != '[') return fmt_error(BAD_PARAMS, "attributes must be an array or null");
    size_t iter = v, e;
    for (size_t i = 0; next_in(d, &iter, NULL, &e); i++) {
        char field[64];
        if (d->s[e] != '{') {
            return fmt_error(BAD_PARAMS, "attributes[%zu] must be an object", i);
        }
        mw_str name, value;
        enum check c = check_string(d, member(d, e, "name"), false, true, ATTR_NAME_MAX, &name);
        if (c == CHECK_OK && !name.p) c = CHECK_EMPTY; /* a name is required */
        if (c != CHECK_OK) {
            snprintf(field, sizeof field, "attributes[%zu].name", i);
            return check_message(field, c, ATTR_NAME_MAX, false);
        }
        c = check_string(d, member(d, e, "value"), false, false, ATTR_VALUE_MAX, &value);
        if (c != CHECK_OK) {
            snprintf(field, sizeof field, "attributes[%zu].value", i);
            return check_message(field, c, ATTR_VALUE_MAX, true);
        }
        mw_attr *a = attr_add(b, oom);
        if (!a) return NULL;
        a->name = name;
        a->value = value;
        it->n_attrs++;
    }
    it->has_attrs = true;
    return NULL;
}

/* Validates one item: the error reported is the first in the table's order, but every
 * field is looked at so that a valid eventId is kept even when an earlier field fails
 * (the producer can then correlate the error). Returns 0, or -1 when memory ran out. */
static int validate_item(const doc *d, mw_item *it, size_t v, const mw_source *src) {
    if (d->s[v] != '{') {
        it->error = fmt_error(BAD_PARAMS, "item must be an object");
        if (!it->error) return -1;
    } else {
        /* One walk over the members: where each known field's (last) value is. */
        size_t at[F_COUNT + 1], len[F_COUNT + 1];
        const char *names[F_COUNT + 1];
        for (int f = 0; f <= F_COUNT; f++) {
            at[f] = NONE;
            names[f] = f < F_COUNT ? batch_fields[f].name : "attributes";
            len[f] = strlen(names[f]);
        }
        size_t iter = v, fv;
        key k;
        while (next_in(d, &iter, &k, &fv)) {
            for (int f = 0; f <= F_COUNT; f++) {
                if (key_is(&k, names[f], len[f])) {
                    at[f] = fv;
                    break;
                }
            }
        }
        for (int f = 0; f < F_COUNT; f++) {
            const mw_field_def *fd = &batch_fields[f];
            enum check c = check_string(d, at[f], fd->required, false, fd->max_len, &it->f[f]);
            /* eventId is optional, but a blank one could not identify anything. */
            if (c == CHECK_OK && f == F_EVENT && it->f[f].p && utf8_blank(it->f[f].p, it->f[f].n))
                c = CHECK_BLANK;
            if (c != CHECK_OK) {
                it->f[f].p = NULL;
                it->f[f].n = 0;
                if (!it->error) {
                    it->error = check_message(fd->name, c, fd->max_len, false);
                    if (!it->error) return -1;
                }
            }
        }
        if (!it->error) {
            bool oom = false;
            it->error = check_attributes(d, at[F_COUNT], it, &oom);
            if (oom) return -1;
            if (it->error) { /* an invalid item has no patch */
                it->n_attrs = 0;
                d->b->n_attr_pool = it->attr_start;
            }
        }
    }
    if (!it->f[F_EVENT].p) {
        /* Only now: SHA-1 per item is not free, and most items bring their own. */
        batch_event_id(it->gen_event_id, src, it->index);
        it->f[F_EVENT].p = it->gen_event_id;
        it->f[F_EVENT].n = MW_UUID_STR_LEN;
    }
    return 0;
}

static int bad_request(mw_batch *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad_request(mw_batch *b, const char *fmt, ...) {
    batch_event_id(b->bad_event_id, &b->src, 0);
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    b->bad_request = fmt_error(BAD_REQUEST, "%s", msg);
    return b->bad_request ? 0 : -1;
}

int batch_decode(mw_batch *b, const void *buf, size_t len, const mw_source *src, int max_items) {
    memset(b, 0, sizeof *b);
    b->src = *src;
    const char *s = buf;
    int rc = 0;

    if (len == 0 || s == NULL) {
        rc = bad_request(b, "message is empty");
        goto done;
    }
    size_t bad_at = 0;
    if (!utf8_valid(s, len, &bad_at)) {
        rc = bad_request(b, "message is not valid UTF-8 (byte %zu)", bad_at);
        goto done;
    }
    if (len > (size_t)INT32_MAX) {
        rc = bad_request(b, "message is too large");
        goto done;
    }
    const char *why = NULL;
    size_t at = 0;
    if (!jsoncheck_valid(s, len, MW_JSON_MAX_DEPTH, &why, &at)) {
        rc = bad_request(b, "message is not valid JSON: %s at byte %zu", why, at);
        goto done;
    }
    doc d = {s, len, b};
    size_t root = skip_ws(&d, 0);
    if (s[root] != '{') {
        rc = bad_request(b, "message must be a JSON object with an items array");
        goto done;
    }
    size_t items = member(&d, root, "items");
    if (is_null(&d, items)) {
        rc = bad_request(b, "items is required");
        goto done;
    }
    if (s[items] != '[') {
        rc = bad_request(b, "items must be an array");
        goto done;
    }
    size_t n = 0, iter = items, v;
    while (next_in(&d, &iter, NULL, &v)) n++;
    if (n == 0) {
        rc = bad_request(b, "items cannot be empty");
        goto done;
    }
    if (n > (size_t)max_items) {
        rc = bad_request(b, "items exceeds maximum of %d items (got %zu)", max_items, n);
        goto done;
    }
    b->items = calloc(n, sizeof *b->items);
    b->strings = malloc(len + 1);
    if (!b->items || !b->strings) { rc = -1; goto done; }
    b->n_items = (int)n;
    iter = items;
    for (size_t i = 0; i < n && next_in(&d, &iter, NULL, &v); i++) {
        mw_item *it = &b->items[i];
        it->index = (int)i;
        if (validate_item(&d, it, v, src) != 0) {
            rc = -1;
            goto done;
        }
        if (it->error) b->invalid_count++;
    }
    /* The pool has stopped moving: point each item at its attributes. */
    for (int i = 0; i < b->n_items; i++)
        if (b->items[i].n_attrs) b->items[i].attrs = b->attr_pool + b->items[i].attr_start;
done:
    if (rc != 0) batch_free(b);
    return rc;
}

void batch_free(mw_batch *b) {
    for (int i = 0; i < b->n_items; i++) free(b->items[i].error);
    free(b->items);
    free(b->bad_request);
    free(b->strings);
    free(b->attr_pool);
    memset(b, 0, sizeof *b);
}
