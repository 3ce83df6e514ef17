/* ref_decode: the fuzz target's reference decoder; see ref_decode.h. */
#include "ref_decode.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

#define BAD_REQUEST "FAIL_BAD_REQUEST: ERROR: "
#define BAD_PARAMS "FAIL_BAD_PARAMS: ERROR: "

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz_batch: batch_decode differs from the json-c reference: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

json_object *ref_patch_of(const mw_item *it) {
    if (!it->has_attrs) return NULL;
    json_object *o = json_object_new_object();
    for (int i = 0; i < it->n_attrs; i++) {
        char *name = strndup(it->attrs[i].name.p, it->attrs[i].name.n);
        const mw_str *v = &it->attrs[i].value;
        json_object_object_add(o, name, v->p ? json_object_new_string_len(v->p, (int)v->n) : NULL);
        free(name);
    }
    return o;
}

/* ---- the rules, on json-c values ---- */

static void message(char *out, size_t size, const char *field, const char *problem) {
    snprintf(out, size, BAD_PARAMS "%s %s", field, problem);
}

/* 0 when v is fine (a string in p and n, or absent/null: p NULL), else 1 and the error. */
static int check_string(json_object *v, const char *field, bool required, bool nonempty,
                        size_t max, bool or_null, const char **p, size_t *n, char *err,
                        size_t esize) {
    *p = NULL;
    *n = 0;
    if (!v || json_object_is_type(v, json_type_null)) {
        if (required) message(err, esize, field, "cannot be blank");
        return required;
    }
    if (!json_object_is_type(v, json_type_string)) {
        message(err, esize, field, or_null ? "must be a string or null" : "must be a string");
        return 1;
    }
    const char *s = json_object_get_string(v);
    size_t len = (size_t)json_object_get_string_len(v);
    char tmp[64];
    if (required && utf8_blank(s, len)) { message(err, esize, field, "cannot be blank"); return 1; }
    if (nonempty && len == 0) { message(err, esize, field, "cannot be empty"); return 1; }
    if (memchr(s, '\0', len)) { message(err, esize, field, "cannot contain U+0000"); return 1; }
    if (len > max && utf8_count(s, len) > max) {
        snprintf(tmp, sizeof tmp, "exceeds maximum length of %zu", max);
        message(err, esize, field, tmp);
        return 1;
    }
    *p = s;
    *n = len;
    return 0;
}

static bool same_str(const char *p, size_t n, const mw_str *s) {
    if (!p) return s->p == NULL;
    return s->p && s->n == n && memcmp(s->p, p, n) == 0;
}

static void compare_item(json_object *v, const mw_item *it, int i) {
    char err[700] = "";
    bool bad = false;
    const char *fp[F_COUNT] = {0};
    size_t fn[F_COUNT] = {0};
    json_object *patch = NULL;
    if (!json_object_is_type(v, json_type_object)) {
        snprintf(err, sizeof err, BAD_PARAMS "item must be an object");
        bad = true;
    } else {
        for (int f = 0; f < F_COUNT; f++) {
            const mw_field_def *d = &batch_fields[f];
            json_object *fv = NULL;
            json_object_object_get_ex(v, d->name, &fv);
            char e[700];
            int r = check_string(fv, d->name, d->required, false, d->max_len, false, &fp[f],
                                 &fn[f], e, sizeof e);
            if (!r && f == F_EVENT && fp[f] && utf8_blank(fp[f], fn[f])) {
                message(e, sizeof e, d->name, "cannot be blank");
                r = 1;
            }
            if (r) {
                fp[f] = NULL;
                if (!bad) snprintf(err, sizeof err, "%s", e);
                bad = true;
            }
        }
        json_object *av = NULL;
        json_object_object_get_ex(v, "attributes", &av);
        if (!bad && av && !json_object_is_type(av, json_type_null)) {
            if (!json_object_is_type(av, json_type_array)) {
                snprintf(err, sizeof err, BAD_PARAMS "attributes must be an array or null");
                bad = true;
            } else {
                patch = json_object_new_object();
                for (size_t k = 0; k < json_object_array_length(av) && !bad; k++) {
                    json_object *a = json_object_array_get_idx(av, k), *jn = NULL, *jv = NULL;
                    char field[64];
                    if (!a || !json_object_is_type(a, json_type_object)) {
                        snprintf(err, sizeof err, BAD_PARAMS "attributes[%zu] must be an object", k);
                        bad = true;
                        break;
                    }
                    json_object_object_get_ex(a, "name", &jn);
                    json_object_object_get_ex(a, "value", &jv);
                    const char *np, *vp;
                    size_t nn, vn;
                    snprintf(field, sizeof field, "attributes[%zu].name", k);
                    if (check_string(jn, field, false, true, 256, false, &np, &nn, err, sizeof err)) {
                        bad = true;
                        break;
                    }
                    if (!np) {
                        message(err, sizeof err, field, "cannot be empty");
                        bad = true;
                        break;
                    }
                    snprintf(field, sizeof field, "attributes[%zu].value", k);
                    if (check_string(jv, field, false, false, 4096, true, &vp, &vn, err, sizeof err)) {
                        bad = true;
                        break;
                    }
                    json_object_object_add(patch, np, vp ? json_object_get(jv) : NULL);
                }
            }
        }
    }
    if (bad != (it->error != NULL) || (bad && strcmp(err, it->error) != 0))
        fail("item %d: error %s, reference %s", i, it->error ? it->error : "(none)",
             bad ? err : "(none)");
    for (int f = 0; f < F_COUNT; f++) {
        if (f == F_EVENT && !fp[f]) {
            if (it->f[f].p != it->gen_event_id) fail("item %d: eventId not generated", i);
            continue;
        }
        if (!same_str(fp[f], fn[f], &it->f[f]))
            fail("item %d: %s is %.*s, reference %.*s", i, batch_fields[f].name,
                 (int)(it->f[f].p ? it->f[f].n : 6), it->f[f].p ? it->f[f].p : "(null)",
                 (int)(fp[f] ? fn[f] : 6), fp[f] ? fp[f] : "(null)");
    }
    if (!bad) {
        json_object *got = ref_patch_of(it);
        if ((got == NULL) != (patch == NULL) || (got && !json_object_equal(got, patch)))
            fail("item %d: attributes %s, reference %s", i,
                 got ? json_object_to_json_string(got) : "(none)",
                 patch ? json_object_to_json_string(patch) : "(none)");
        json_object_put(got);
    }
    json_object_put(patch);
}

/* True when some object key of the (strictly valid) document escapes U+0000: json-c cuts
 * such a key short ("items\u0000x" reads as "items"), so it cannot be the reference there.
 * A string is a key when a colon follows it. */
static bool key_has_nul(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '"') continue;
        bool nul = false;
        for (i++; i < n && s[i] != '"'; i++) {
            if (s[i] != '\\') continue;
            if (i + 5 < n && s[i + 1] == 'u' && s[i + 2] == '0' && s[i + 3] == '0' &&
                s[i + 4] == '0' && s[i + 5] == '0')
                nul = true;
            i++;
        }
        size_t j = i + 1;
        while (j < n && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\r')) j++;
        if (nul && j < n && s[j] == ':') return true;
    }
    return false;
}

/* ---- the gate: emptiness, UTF-8, strict JSON ---- */

/* An independent UTF-8 check (the well-formed byte sequences of Unicode's table 3-7):
 * true when s[0..n) is valid, else false with *bad_at the first byte of the first
 * ill-formed sequence. */
static bool ref_utf8(const uint8_t *s, size_t n, size_t *bad_at) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint8_t lo = 0x80, hi = 0xBF; /* the second byte's range */
        if (c <= 0x7F) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c == 0xE0) { len = 3; lo = 0xA0; }
        else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) len = 3;
        else if (c == 0xED) { len = 3; hi = 0x9F; }
        else if (c == 0xF0) { len = 4; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) len = 4;
        else if (c == 0xF4) { len = 4; hi = 0x8F; }
        else goto bad;
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) goto bad;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) goto bad;
        i += len;
        continue;
    bad:
        *bad_at = i;
        return false;
    }
    return true;
}

/* True when the document uses something json-c's strict mode accepts although RFC 8259
 * does not (so json-c's "yes" proves nothing there): outside strings, a single quote
 * ('key' strings), N or I (NaN, Infinity, -Infinity), a number whose integer part is
 * missing ("-.1") or a zero followed by digits ("-01", "00", "01.5"), or whose '.' has no
 * digit after it ("1.", "-0.e1"); inside a string, a raw control character. */
static bool json_c_lax_here(const uint8_t *s, size_t n) {
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (in_str) {
            if (c < 0x20) return true;
            if (c == '\\') i++;
            else if (c == '"') in_str = false;
            continue;
        }
        if (c == '"') {
            in_str = true;
        } else if (c == '\'' || c == 'N' || c == 'I') {
            return true;
        } else if (c == '-' || (c >= '0' && c <= '9')) { /* a number: its whole token */
            size_t j = i + (c == '-');
            if (j < n && s[j] == '.') return true;
            if (j + 1 < n && s[j] == '0' && s[j + 1] >= '0' && s[j + 1] <= '9') return true;
            for (; j < n && strchr("0123456789.eE+-", s[j]) && s[j]; j++)
                if (s[j] == '.' && (j + 1 >= n || s[j + 1] < '0' || s[j + 1] > '9')) return true;
            i = j - 1;
        }
    }
    return false;
}

/* The deepest nesting of arrays and objects in a syntactically valid document. */
static int nesting(const uint8_t *s, size_t n) {
    int depth = 0, max = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max) max = depth;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return max;
}

/* json-c's verdict (strict mode, REF_JSON_DEPTH): true when data is one whole JSON
 * document, with its tree in *root (NULL for the document `null`). json-c cannot finish a
 * bare number or literal at the end of the buffer ("continue"): it is asked again with a
 * space after the document, which changes nothing in its meaning. *err: json-c's error. */
static bool json_c_accepts(const uint8_t *data, size_t size, json_object **root,
                           enum json_tokener_error *err) {
    *root = NULL;
    /* A new tokener per message: json-c 0.16's json_tokener_reset keeps a high surrogate
     * left pending by the previous input, which then decodes the next "\ud800" as two
     * U+FFFD (found by this fuzzer once json-c saw every input). */
    json_tokener *tok = json_tokener_new_ex(REF_JSON_DEPTH);
    if (!tok) abort();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    json_object *o = json_tokener_parse_ex(tok, (const char *)data, (int)size);
    enum json_tokener_error e = json_tokener_get_error(tok);
    if (e == json_tokener_continue) {
        json_object_put(o);
        char *copy = malloc(size + 1);
        if (!copy) abort();
        memcpy(copy, data, size);
        copy[size] = ' ';
        json_tokener_reset(tok);
        o = json_tokener_parse_ex(tok, copy, (int)size + 1);
        e = json_tokener_get_error(tok);
        free(copy);
        size++;
    }
    *err = e;
    /* Success must span the whole buffer: json-c stops quietly at a NUL byte. */
    bool ok = e == json_tokener_success && json_tokener_get_parse_end(tok) == size;
    json_tokener_free(tok);
    if (!ok) {
        json_object_put(o);
        if (e == json_tokener_success) *err = json_tokener_error_parse_unexpected;
        return false;
    }
    *root = o;
    return true;
}

static bool starts(const char *s, const char *prefix) {
    return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

void ref_compare(const uint8_t *data, size_t size, const mw_source *src,
                 int max_items, const mw_batch *b) {
    (void)src;
    char want[600] = "";
    /* The gate, both ways: what it refuses is refused by the reference too, and what the
     * reference accepts gets past it. */
    size_t bad_at = 0;
    if (size == 0) {
        snprintf(want, sizeof want, BAD_REQUEST "message is empty");
    } else if (!ref_utf8(data, size, &bad_at)) {
        snprintf(want, sizeof want, BAD_REQUEST "message is not valid UTF-8 (byte %zu)", bad_at);
    } else if (b->bad_request && starts(b->bad_request, BAD_REQUEST "message is not valid UTF-8")) {
        fail("bad request %s, reference: valid UTF-8", b->bad_request);
    }
    if (want[0]) {
        if (!b->bad_request || strcmp(b->bad_request, want) != 0)
            fail("bad request %s, reference %s", b->bad_request ? b->bad_request : "(none)", want);
        return;
    }
    if (size > INT32_MAX) return;
    json_object *root = NULL;
    enum json_tokener_error e;
    bool jc_ok = json_c_accepts(data, size, &root, &e);
    bool gate_ok = !starts(b->bad_request, BAD_REQUEST "message is not valid JSON");
    if (!gate_ok) {
        /* Where json-c is strict, its "yes" must be the gate's "yes", except for nesting
         * deeper than the worker takes. */
        if (jc_ok && !json_c_lax_here(data, size)) {
            int depth = nesting(data, size);
            if (depth <= MW_JSON_MAX_DEPTH)
                fail("the gate refuses a document json-c accepts (strict mode, no lax construct, "
                     "nesting %d): %s", depth, b->bad_request);
            if (!starts(b->bad_request, BAD_REQUEST "message is not valid JSON: nesting too deep"))
                fail("nesting %d: bad request %s, reference: nesting too deep", depth,
                     b->bad_request);
        }
        json_object_put(root);
        return;
    }
    if (!jc_ok) fail("json-c refuses what the gate accepts (%s)", json_tokener_error_desc(e));
    /* json-c cuts a key holding U+0000 short ("items\u0000x" reads as "items"): it cannot be
     * the reference for what follows. */
    if (key_has_nul(data, size)) {
        json_object_put(root);
        return;
    }
    json_object *items = NULL;
    size_t n = 0;
    if (!root || !json_object_is_type(root, json_type_object))
        snprintf(want, sizeof want, BAD_REQUEST "message must be a JSON object with an items array");
    else if (!json_object_object_get_ex(root, "items", &items) || !items)
        snprintf(want, sizeof want, BAD_REQUEST "items is required");
    else if (!json_object_is_type(items, json_type_array))
        snprintf(want, sizeof want, BAD_REQUEST "items must be an array");
    else if ((n = json_object_array_length(items)) == 0)
        snprintf(want, sizeof want, BAD_REQUEST "items cannot be empty");
    else if (n > (size_t)max_items)
        snprintf(want, sizeof want, BAD_REQUEST "items exceeds maximum of %d items (got %zu)",
                 max_items, n);
    if (want[0]) {
        if (!b->bad_request || strcmp(b->bad_request, want) != 0)
            fail("bad request %s, reference %s", b->bad_request ? b->bad_request : "(none)", want);
    } else {
        if (b->bad_request) fail("bad request %s, reference: a batch", b->bad_request);
        if ((size_t)b->n_items != n) fail("%d items, reference %zu", b->n_items, n);
        for (size_t i = 0; i < n; i++)
            compare_item(json_object_array_get_idx(items, i), &b->items[i], (int)i);
    }
    json_object_put(root);
}
