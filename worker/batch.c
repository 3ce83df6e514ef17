/*
 * batch: message decoding and item validation (SPEC §2, §3). Pure logic; see batch.h.
 * json-c's rule here: json_object_get/put count references; a tree is owned by its root,
 * and values shared into another object (the attributes patch) take a reference each.
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
#define JSON_MAX_DEPTH 64

/* Namespace of generated eventIds (a fixed, random UUID; changing it changes every
 * generated id, so it never changes). */
static const uuid_t event_ns = {0x6b, 0x3c, 0x2e, 0x0a, 0x9d, 0x41, 0x4f, 0x7e,
                                0x8a, 0x55, 0x1c, 0x93, 0xd2, 0x07, 0xe4, 0x6f};

json_tokener *batch_tokener_new(void) {
    /* json-c counts a scalar inside the deepest container as one more level than
     * jsoncheck does: one more keeps the two limits the same. */
    json_tokener *tok = json_tokener_new_ex(JSON_MAX_DEPTH + 1);
    /* RFC 8259 only: no single quotes, trailing commas, NaN or comments. */
    if (tok) json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    return tok;
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

enum check { CHECK_OK = 0, CHECK_TYPE, CHECK_BLANK, CHECK_EMPTY, CHECK_NUL, CHECK_LONG };

/* Checks one string value: type, then blank (required fields), then U+0000, then length.
 * json-c has already turned the document into valid UTF-8 (a lone surrogate escape becomes
 * U+FFFD), so code points can be counted directly. */
static enum check check_string(json_object *v, bool required, bool nonempty, size_t max,
                               mw_str *out) {
    out->p = NULL;
    out->n = 0;
    if (!v || json_object_is_type(v, json_type_null)) return required ? CHECK_BLANK : CHECK_OK;
    if (!json_object_is_type(v, json_type_string)) return CHECK_TYPE;
    const char *s = json_object_get_string(v);
    size_t n = (size_t)json_object_get_string_len(v);
    if (required && utf8_blank(s, n)) return CHECK_BLANK;
    if (nonempty && n == 0) return CHECK_EMPTY;
    if (memchr(s, '\0', n)) return CHECK_NUL;
    if (n > max && utf8_count(s, n) > max) return CHECK_LONG;
    out->p = s;
    out->n = n;
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

/* Validates attributes into a name → value patch. Returns NULL on success (the patch in
 * *patch, NULL when attributes is absent or null) or an error string. *oom on failure. */
static char *check_attributes(json_object *v, json_object **patch, bool *oom) {
    *patch = NULL;
    if (!v || json_object_is_type(v, json_type_null)) return NULL;
    if (!json_object_is_type(v, json_type_array))
        return fmt_error(BAD_PARAMS, "attributes must be an array or null");
    size_t n = json_object_array_length(v);
    json_object *p = json_object_new_object();
    if (!p) { *oom = true; return NULL; }
    for (size_t i = 0; i < n; i++) {
        json_object *a = json_object_array_get_idx(v, i);
        char field[64];
        if (!a || !json_object_is_type(a, json_type_object)) {
            json_object_put(p);
            return fmt_error(BAD_PARAMS, "attributes[%zu] must be an object", i);
        }
        json_object *jn = NULL, *jv = NULL;
        json_object_object_get_ex(a, "name", &jn);
        json_object_object_get_ex(a, "value", &jv);
        mw_str name, value;
        enum check c = check_string(jn, false, true, ATTR_NAME_MAX, &name);
        if (c == CHECK_OK && !name.p) c = CHECK_EMPTY; /* a name is required */
        if (c != CHECK_OK) {
            json_object_put(p);
            snprintf(field, sizeof field, "attributes[%zu].name", i);
            return check_message(field, c, ATTR_NAME_MAX, false);
        }
        c = check_string(jv, false, false, ATTR_VALUE_MAX, &value);
        if (c != CHECK_OK) {
            json_object_put(p);
            snprintf(field, sizeof field, "attributes[%zu].value", i);
            return check_message(field, c, ATTR_VALUE_MAX, true);
        }
        /* The last duplicate name wins: object_add replaces. The value is shared with the
         * message tree, so it takes a reference of its own. */
        json_object *val = value.p ? json_object_get(jv) : NULL;
        if (json_object_object_add_ex(p, name.p, val, 0) != 0) {
            json_object_put(val);
            json_object_put(p);
            *oom = true;
            return NULL;
        }
    }
    *patch = p;
    return NULL;
}

/* Validates one item: the error reported is the first in the table's order, but every
 * field is looked at so that a valid eventId is kept even when an earlier field fails
 * (the producer can then correlate the error). Returns 0, or -1 when memory ran out. */
static int validate_item(mw_item *it, json_object *v, const mw_source *src) {
    if (!json_object_is_type(v, json_type_object)) {
        it->error = fmt_error(BAD_PARAMS, "item must be an object");
        if (!it->error) return -1;
    } else {
        for (int f = 0; f < F_COUNT; f++) {
            const mw_field_def *d = &batch_fields[f];
            json_object *fv = NULL;
            json_object_object_get_ex(v, d->name, &fv);
            enum check c = check_string(fv, d->required, false, d->max_len, &it->f[f]);
            /* eventId is optional, but a blank one could not identify anything. */
            if (c == CHECK_OK && f == F_EVENT && it->f[f].p && utf8_blank(it->f[f].p, it->f[f].n))
                c = CHECK_BLANK;
            if (c != CHECK_OK) {
                it->f[f].p = NULL;
                it->f[f].n = 0;
                if (!it->error) {
                    it->error = check_message(d->name, c, d->max_len, false);
                    if (!it->error) return -1;
                }
            }
        }
        if (!it->error) {
            json_object *av = NULL;
            bool oom = false;
            json_object_object_get_ex(v, "attributes", &av);
            it->error = check_attributes(av, &it->attrs, &oom);
            if (oom) return -1;
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

int batch_decode(mw_batch *b, json_tokener *tok, const void *buf, size_t len,
                 const mw_source *src, int max_items) {
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
    if (!jsoncheck_valid(s, len, JSON_MAX_DEPTH, &why, &at)) {
        rc = bad_request(b, "message is not valid JSON: %s at byte %zu", why, at);
        goto done;
    }
    /* The syntax is known good: json-c only builds the tree. */
    json_tokener_reset(tok);
    b->root = json_tokener_parse_ex(tok, s, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    if (jerr != json_tokener_success && jerr != json_tokener_continue) {
        rc = bad_request(b, "message is not valid JSON: %s", json_tokener_error_desc(jerr));
        goto done;
    }
    if (!b->root && jerr == json_tokener_continue) {
        /* A bare scalar at the very end of the buffer: valid JSON, but not an object. */
        rc = bad_request(b, "message must be a JSON object with an items array");
        goto done;
    }
    if (!b->root || !json_object_is_type(b->root, json_type_object)) {
        rc = bad_request(b, "message must be a JSON object with an items array");
        goto done;
    }
    json_object *items = NULL;
    if (!json_object_object_get_ex(b->root, "items", &items) || !items) {
        rc = bad_request(b, "items is required");
        goto done;
    }
    if (!json_object_is_type(items, json_type_array)) {
        rc = bad_request(b, "items must be an array");
        goto done;
    }
    size_t n = json_object_array_length(items);
    if (n == 0) {
        rc = bad_request(b, "items cannot be empty");
        goto done;
    }
    if (n > (size_t)max_items) {
        rc = bad_request(b, "items exceeds maximum of %d items (got %zu)", max_items, n);
        goto done;
    }
    b->items = calloc(n, sizeof *b->items);
    if (!b->items) { rc = -1; goto done; }
    b->n_items = (int)n;
    for (size_t i = 0; i < n; i++) {
        mw_item *it = &b->items[i];
        it->index = (int)i;
        if (validate_item(it, json_object_array_get_idx(items, i), src) != 0) {
            rc = -1;
            goto done;
        }
        if (it->error) b->invalid_count++;
    }
done:
    if (rc != 0) batch_free(b);
    return rc;
}

void batch_free(mw_batch *b) {
    for (int i = 0; i < b->n_items; i++) {
        free(b->items[i].error);
        json_object_put(b->items[i].attrs);
    }
    free(b->items);
    free(b->bad_request);
    json_object_put(b->root);
    memset(b, 0, sizeof *b);
}
