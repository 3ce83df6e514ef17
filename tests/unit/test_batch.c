/*
 * Unit tests of worker/batch: message-level checks (docs/contract.md §2, bad requests) and
 * item validation (contract §3: every field's type, blank, U+0000 and length rules,
 * attributes, eventIds).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "../../common/utf8.h"
#include "batch.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define BIN(lit) (lit), sizeof(lit) - 1
#define BP "FAIL_BAD_PARAMS: ERROR: "
#define BR "FAIL_BAD_REQUEST: ERROR: "

static const mw_source SRC = {"customer-metadata.batches", 3, 1234};

/* ---- helpers ------------------------------------------------------------------------- */

/* A growable byte string (may hold NUL bytes). */
typedef struct sb {
    char *p;
    size_t n, cap;
} sb;

static void sb_addn(sb *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_add(sb *b, const char *s) { sb_addn(b, s, strlen(s)); }

static void sb_rep(sb *b, const char *unit, size_t k) {
    for (size_t i = 0; i < k; i++) sb_add(b, unit);
}

static void sb_free(sb *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

static int group_setup(void **state) {
    (void)state;
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    return 0;
}

/* An item's attributes patch as a json-c object (NULL when it has none): each entry added
 * in order, so a later duplicate name replaces an earlier one. */
static json_object *patch_of(const mw_item *it) {
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

static void decode_n(void **state, mw_batch *b, const char *msg, size_t len, int max_items) {
    (void)state;
    assert_int_equal(batch_decode(b, msg, len, &SRC, max_items), 0);
}

/* Decodes {"items":[<items>]} and requires it to be a batch (no bad request). */
static void decode_items(void **state, mw_batch *b, const char *items) {
    sb m = {0};
    sb_add(&m, "{\"items\":[");
    sb_add(&m, items);
    sb_add(&m, "]}");
    decode_n(state, b, m.p, m.n, MW_MAX_BATCH_ITEMS_DEFAULT);
    sb_free(&m);
    if (b->bad_request) {
        print_error("unexpected bad request: %s\n", b->bad_request);
        fail();
    }
}

static void expect_error(const char *ctx, const mw_item *it, const char *want) {
    if (want == NULL ? it->error != NULL : (it->error == NULL || strcmp(it->error, want) != 0)) {
        print_error("%s: error \"%s\", expected \"%s\"\n", ctx, it->error ? it->error : "(valid)",
                    want ? want : "(valid)");
        fail();
    }
}

static bool str_is(const mw_str *s, const char *want, size_t n) {
    return s->p != NULL && s->n == n && memcmp(s->p, want, n) == 0;
}

static bool is_uuid_v5(const char *s, size_t n) {
    if (n != 36) return false;
    for (size_t i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !strchr("0123456789abcdef", s[i])) return false;
    }
    return s[14] == '5' && strchr("89ab", s[19]) != NULL;
}

/* The table of contract §3, written out independently of batch.c. */
static const struct spec_field {
    const char *name;
    int f;
    size_t max;
    bool required;
    const char *column;
} spec[] = {
    {"externalConversationId", F_CONVERSATION, 256, true, "external_conversation_id"},
    {"externalCustomerId", F_CUSTOMER, 256, true, "external_customer_id"},
    {"eventId", F_EVENT, 256, false, "event_id"},
    {"status", F_STATUS, 256, false, "status"},
    {"phoneNumber", F_PHONE, 32, false, "phone_number"},
    {"emailAddress", F_EMAIL, 320, false, "email_address"},
    {"userId", F_USER, 256, false, "user_id"},
    {"addressCountry", F_COUNTRY, 128, false, "address_country"},
    {"addressState", F_STATE, 128, false, "address_state"},
    {"addressZipcode", F_ZIP, 16, false, "address_zipcode"},
};

/* Appends an item with valid ids in which field f is given as raw JSON (NULL: absent). */
static void item_with(sb *b, int f, const char *raw) {
    bool first = true;
    sb_add(b, "{");
    for (int k = 0; k < F_COUNT; k++) {
        const char *v = k == f ? raw
                        : k == F_CONVERSATION ? "\"conv-1\""
                        : k == F_CUSTOMER     ? "\"cust-1\""
                                              : NULL;
        if (!v) continue;
        if (!first) sb_add(b, ",");
        first = false;
        sb_add(b, "\"");
        sb_add(b, batch_fields[k].name);
        sb_add(b, "\":");
        sb_add(b, v);
    }
    sb_add(b, "}");
}

/* Decodes a batch of one item with field f set to raw; returns the item. */
static const mw_item *decode_field(void **state, mw_batch *b, int f, const char *raw) {
    sb it = {0};
    item_with(&it, f, raw);
    decode_items(state, b, it.p);
    sb_free(&it);
    assert_int_equal(b->n_items, 1);
    return &b->items[0];
}

/* ---- the field table ----------------------------------------------------------------- */

static void test_field_table(void **state) {
    (void)state;
    for (size_t i = 0; i < N(spec); i++) {
        const mw_field_def *d = &batch_fields[spec[i].f];
        assert_int_equal(spec[i].f, (int)i); /* enum order = table order */
        assert_string_equal(d->name, spec[i].name);
        assert_string_equal(d->column, spec[i].column);
        assert_int_equal(d->max_len, spec[i].max);
        assert_int_equal(d->required, spec[i].required);
    }
}

/* A complete valid item: every field stored as given. */
static void test_all_fields_stored(void **state) {
    static const char *const vals[F_COUNT] = {
        "conv \xc3\xa9", "cust", "ev-1", "new", "+1 555", "a@b.c", "u1", "FR", "IDF", "75001"};
    sb it = {0};
    sb_add(&it, "{");
    for (size_t i = 0; i < N(spec); i++) {
        sb_add(&it, i ? ",\"" : "\"");
        sb_add(&it, spec[i].name);
        sb_add(&it, "\":\"");
        sb_add(&it, vals[i]);
        sb_add(&it, "\"");
    }
    sb_add(&it, "}");
    mw_batch b;
    decode_items(state, &b, it.p);
    sb_free(&it);
    expect_error("all fields", &b.items[0], NULL);
    for (size_t i = 0; i < N(spec); i++)
        assert_true(str_is(&b.items[0].f[i], vals[i], strlen(vals[i])));
    assert_false(b.items[0].has_attrs);
    assert_int_equal(b.invalid_count, 0);
    batch_free(&b);
}

/* ---- lengths, in code points --------------------------------------------------------- */

static const struct {
    const char *name;
    const char *json;    /* one code point as written in the JSON string */
    const char *decoded; /* its UTF-8 */
} units[] = {
    {"ascii", "a", "a"},
    {"2-byte raw (e acute)", "\xc3\xa9", "\xc3\xa9"},
    {"3-byte raw (euro)", "\xe2\x82\xac", "\xe2\x82\xac"},
    {"4-byte raw (emoji)", "\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"},
    {"escaped \\u00e9", "\\u00e9", "\xc3\xa9"},
    {"escaped surrogate pair emoji", "\\ud83d\\ude00", "\xf0\x9f\x98\x80"},
    {"escaped quote", "\\\"", "\""},
};

static void test_field_max_length(void **state) {
    for (size_t i = 0; i < N(spec); i++) {
        for (size_t u = 0; u < N(units); u++) {
            for (size_t extra = 0; extra <= 1; extra++) {
                size_t count = spec[i].max + extra;
                sb raw = {0}, want = {0};
                sb_add(&raw, "\"");
                sb_rep(&raw, units[u].json, count);
                sb_add(&raw, "\"");
                sb_rep(&want, units[u].decoded, count);
                mw_batch b;
                const mw_item *it = decode_field(state, &b, spec[i].f, raw.p);
                char ctx[160], err[160];
                snprintf(ctx, sizeof ctx, "%s = %zu x %s", spec[i].name, count, units[u].name);
                if (extra == 0) {
                    expect_error(ctx, it, NULL);
                    if (!str_is(&it->f[spec[i].f], want.p, want.n)) {
                        print_error("%s: stored value differs\n", ctx);
                        fail();
                    }
                } else {
                    snprintf(err, sizeof err, BP "%s exceeds maximum length of %zu", spec[i].name,
                             spec[i].max);
                    expect_error(ctx, it, err);
                    assert_int_equal(b.invalid_count, 1);
                }
                batch_free(&b);
                sb_free(&raw);
                sb_free(&want);
            }
        }
    }
}

/* ---- blank, types, null, U+0000 ------------------------------------------------------ */

static const char *const blank_values[] = {
    NULL,                       /* absent */
    "null",
    "\"\"",
    "\" \"",
    "\" \\t\\n\\r \"",
    "\"\xe3\x80\x80\"",         /* U+3000 raw */
    "\"\\u3000\"",              /* U+3000 escaped */
    "\"\\u00a0\\u2003\\ufeff\"", /* NBSP, em space, BOM */
    "\" \xc2\xa0 \xe2\x80\xa8\"",
};

static void test_required_blank(void **state) {
    static const int required[] = {F_CONVERSATION, F_CUSTOMER};
    for (size_t r = 0; r < N(required); r++) {
        for (size_t v = 0; v < N(blank_values); v++) {
            mw_batch b;
            const mw_item *it = decode_field(state, &b, required[r], blank_values[v]);
            char ctx[160], err[160];
            snprintf(ctx, sizeof ctx, "%s = %s", batch_fields[required[r]].name,
                     blank_values[v] ? blank_values[v] : "(absent)");
            snprintf(err, sizeof err, BP "%s cannot be blank", batch_fields[required[r]].name);
            expect_error(ctx, it, err);
            assert_null(it->f[required[r]].p);
            batch_free(&b);
        }
    }
}

/* A given eventId must identify something: blank is an error (absent/null generate one). */
static void test_event_id_blank(void **state) {
    for (size_t v = 2; v < N(blank_values); v++) { /* skip absent and null */
        mw_batch b;
        const mw_item *it = decode_field(state, &b, F_EVENT, blank_values[v]);
        expect_error(blank_values[v], it, BP "eventId cannot be blank");
        /* The result still needs an eventId: the generated one. */
        assert_true(str_is(&it->f[F_EVENT], it->gen_event_id, MW_UUID_STR_LEN));
        batch_free(&b);
    }
}

/* Optional fields are not "blank": "" and white space are stored as given. */
static void test_optional_empty_stored(void **state) {
    static const char *const vals[] = {"\"\"", "\" \"", "\"\\u3000\""};
    static const char *const want[] = {"", " ", "\xe3\x80\x80"};
    for (size_t i = 3; i < N(spec); i++) {
        for (size_t v = 0; v < N(vals); v++) {
            mw_batch b;
            const mw_item *it = decode_field(state, &b, spec[i].f, vals[v]);
            expect_error(spec[i].name, it, NULL);
            assert_true(str_is(&it->f[spec[i].f], want[v], strlen(want[v])));
            batch_free(&b);
        }
    }
}

static const char *const wrong_types[] = {
    "0", "123", "-1.5", "1e3", "true", "false", "{}", "{\"a\":\"b\"}", "[]", "[\"x\"]",
};

static void test_wrong_type(void **state) {
    for (size_t i = 0; i < N(spec); i++) {
        for (size_t v = 0; v < N(wrong_types); v++) {
            mw_batch b;
            const mw_item *it = decode_field(state, &b, spec[i].f, wrong_types[v]);
            char ctx[160], err[160];
            snprintf(ctx, sizeof ctx, "%s = %s", spec[i].name, wrong_types[v]);
            snprintf(err, sizeof err, BP "%s must be a string", spec[i].name);
            expect_error(ctx, it, err);
            batch_free(&b);
        }
    }
}

/* null for an optional field is the same as absent. */
static void test_optional_null_is_absent(void **state) {
    for (size_t i = 2; i < N(spec); i++) {
        for (int form = 0; form < 2; form++) {
            mw_batch b;
            const mw_item *it = decode_field(state, &b, spec[i].f, form ? "null" : NULL);
            expect_error(spec[i].name, it, NULL);
            if (spec[i].f == F_EVENT) {
                char want[MW_UUID_STR_LEN + 1];
                batch_event_id(want, &SRC, 0);
                assert_true(str_is(&it->f[F_EVENT], want, MW_UUID_STR_LEN));
            } else {
                assert_null(it->f[spec[i].f].p);
            }
            batch_free(&b);
        }
    }
}

static const char *const nul_values[] = {
    "\"a\\u0000b\"", "\"\\u0000\"", "\"abc\\u0000\"", "\" \\u0000\"",
};

static void test_nul(void **state) {
    for (size_t i = 0; i < N(spec); i++) {
        for (size_t v = 0; v < N(nul_values); v++) {
            mw_batch b;
            const mw_item *it = decode_field(state, &b, spec[i].f, nul_values[v]);
            char ctx[160], err[160];
            snprintf(ctx, sizeof ctx, "%s = %s", spec[i].name, nul_values[v]);
            snprintf(err, sizeof err, BP "%s cannot contain U+0000", spec[i].name);
            expect_error(ctx, it, err);
            batch_free(&b);
        }
    }
}

/* ---- the first problem in table order wins ------------------------------------------- */

static const struct {
    const char *item;
    const char *error;
} first_rows[] = {
    {"{}", BP "externalConversationId cannot be blank"},
    {"{\"externalCustomerId\":1}", BP "externalConversationId cannot be blank"},
    {"{\"externalConversationId\":\"c\"}", BP "externalCustomerId cannot be blank"},
    {"{\"externalCustomerId\":\"\",\"externalConversationId\":1}",
     BP "externalConversationId must be a string"},
    {"{\"addressZipcode\":1,\"externalConversationId\":\"c\",\"externalCustomerId\":\" \"}",
     BP "externalCustomerId cannot be blank"},
    {"{\"externalConversationId\":\"c\",\"externalCustomerId\":\"k\",\"eventId\":\"\","
     "\"status\":1}",
     BP "eventId cannot be blank"},
    {"{\"externalConversationId\":\"c\",\"externalCustomerId\":\"k\",\"status\":false,"
     "\"phoneNumber\":\"012345678901234567890123456789012\"}",
     BP "status must be a string"},
    {"{\"externalConversationId\":\"c\",\"externalCustomerId\":\"k\","
     "\"addressZipcode\":\"01234567890123456\","
     "\"phoneNumber\":\"012345678901234567890123456789012\"}",
     BP "phoneNumber exceeds maximum length of 32"},
    {"{\"externalConversationId\":\"c\",\"externalCustomerId\":\"k\",\"addressZipcode\":[],"
     "\"attributes\":7}",
     BP "addressZipcode must be a string"},
    {"{\"externalConversationId\":\"c\",\"externalCustomerId\":\"k\",\"userId\":\"a\\u0000\","
     "\"addressCountry\":{}}",
     BP "userId cannot contain U+0000"},
    {"{\"attributes\":7,\"externalCustomerId\":\"k\",\"externalConversationId\":\"c\"}",
     BP "attributes must be an array or null"},
    {"{\"attributes\":[{\"name\":\"\"}],\"status\":2,\"externalCustomerId\":\"k\","
     "\"externalConversationId\":\"c\"}",
     BP "status must be a string"},
};

static void test_first_problem_wins(void **state) {
    for (size_t i = 0; i < N(first_rows); i++) {
        mw_batch b;
        decode_items(state, &b, first_rows[i].item);
        expect_error(first_rows[i].item, &b.items[0], first_rows[i].error);
        batch_free(&b);
    }
}

/* ---- items that are not objects ------------------------------------------------------ */

static void test_item_not_object(void **state) {
    static const char *const rows[] = {"1", "-2.5", "null", "true", "[]", "[{}]", "\"item\""};
    for (size_t i = 0; i < N(rows); i++) {
        mw_batch b;
        decode_items(state, &b, rows[i]);
        expect_error(rows[i], &b.items[0], BP "item must be an object");
        assert_true(is_uuid_v5(b.items[0].f[F_EVENT].p, b.items[0].f[F_EVENT].n));
        batch_free(&b);
    }
}

/* Partial success: good and bad items side by side keep their index and their result. */
static void test_mixed_batch(void **state) {
    mw_batch b;
    decode_items(state, &b,
                 "{\"externalConversationId\":\"c0\",\"externalCustomerId\":\"k0\"},"
                 "17,"
                 "{\"externalConversationId\":\"c2\",\"externalCustomerId\":\"\"},"
                 "{\"externalConversationId\":\"c3\",\"externalCustomerId\":\"k3\","
                 "\"eventId\":\"e3\"}");
    assert_int_equal(b.n_items, 4);
    assert_int_equal(b.invalid_count, 2);
    for (int i = 0; i < 4; i++) assert_int_equal(b.items[i].index, i);
    expect_error("item 0", &b.items[0], NULL);
    expect_error("item 1", &b.items[1], BP "item must be an object");
    expect_error("item 2", &b.items[2], BP "externalCustomerId cannot be blank");
    expect_error("item 3", &b.items[3], NULL);
    assert_true(str_is(&b.items[3].f[F_EVENT], "e3", 2));
    assert_true(str_is(&b.items[2].f[F_CONVERSATION], "c2", 2));
    batch_free(&b);
}

/* Unknown fields are ignored, whatever their type. */
static void test_unknown_fields(void **state) {
    mw_batch b;
    decode_items(state, &b,
                 "{\"externalConversationId\":\"c\",\"externalCustomerId\":\"k\",\"foo\":1,"
                 "\"bar\":{\"x\":[1,2,{\"y\":null}]},\"STATUS\":5,\"status \":[],\"\":\"\"}");
    expect_error("unknown fields", &b.items[0], NULL);
    assert_null(b.items[0].f[F_STATUS].p);
    batch_free(&b);
}

/* JSON escapes are decoded before validation and storage. */
static void test_escapes_decoded(void **state) {
    mw_batch b;
    decode_items(state, &b,
                 "{\"externalConversationId\":\"a\\\"b\\\\c\\/d\\n\","
                 "\"externalCustomerId\":\"\\u00e9\\ud83d\\ude00\"}");
    expect_error("escapes", &b.items[0], NULL);
    assert_true(str_is(&b.items[0].f[F_CONVERSATION], "a\"b\\c/d\n", 8));
    assert_true(str_is(&b.items[0].f[F_CUSTOMER], "\xc3\xa9\xf0\x9f\x98\x80", 6));
    batch_free(&b);
}

/* A lone surrogate escape cannot reach PostgreSQL as invalid UTF-8: whatever is accepted is
 * valid UTF-8 (json-c substitutes U+FFFD). */
static void test_lone_surrogate_escape(void **state) {
    static const char *const rows[] = {"\"\\ud800\"", "\"x\\udc00\"", "\"\\ud83dz\""};
    for (size_t i = 0; i < N(rows); i++) {
        mw_batch b;
        const mw_item *it = decode_field(state, &b, F_STATUS, rows[i]);
        if (!it->error) assert_true(utf8_valid(it->f[F_STATUS].p, it->f[F_STATUS].n, NULL));
        batch_free(&b);
    }
}

/* The decoder walks the text itself: member names are compared after unescaping, and the
 * last of duplicate names wins (as json-c and most parsers do). */
static void test_escaped_and_duplicate_names(void **state) {
    mw_batch b;
    decode_n(state, &b, BIN("{\"item\\u0073\":[{\"externalCustomerI\\u0064\":\"c\","
                            "\"externalConversationId\":\"k\",\"status\":\"s\","
                            "\"st\\u0061tus\":\"t\"}]}"), 10);
    assert_null(b.bad_request);
    assert_int_equal(b.n_items, 1);
    expect_error("escaped names", &b.items[0], NULL);
    assert_true(str_is(&b.items[0].f[F_CUSTOMER], "c", 1));
    assert_true(str_is(&b.items[0].f[F_STATUS], "t", 1));
    batch_free(&b);
    decode_n(state, &b, BIN("{\"items\":5,\"items\":[{\"externalCustomerId\":\"c\","
                            "\"externalConversationId\":\"k\"}]}"), 10);
    assert_null(b.bad_request);
    assert_int_equal(b.n_items, 1);
    batch_free(&b);
    decode_n(state, &b, BIN("{\"items\":[{\"externalCustomerId\":\"c\","
                            "\"externalConversationId\":\"k\"}],\"items\":null}"), 10);
    assert_non_null(b.bad_request);
    assert_string_equal(b.bad_request, BR "items is required");
    batch_free(&b);
}

/* Escapes of lone surrogates become U+FFFD; what follows them is kept. */
static void test_surrogate_escapes_exact(void **state) {
    static const struct { const char *raw, *want; } rows[] = {
        {"\"\\ud800\"", "\xef\xbf\xbd"},
        {"\"\\ud800\\u0041\"", "\xef\xbf\xbd" "A"},
        {"\"\\udc00x\"", "\xef\xbf\xbd" "x"},
        {"\"\\ud800\\ud83d\\ude00\"", "\xef\xbf\xbd\xf0\x9f\x98\x80"},
        {"\"a\\/b\\\\c\\\"d\\b\\f\\n\\r\\t\"", "a/b\\c\"d\b\f\n\r\t"},
    };
    for (size_t i = 0; i < N(rows); i++) {
        mw_batch b;
        const mw_item *it = decode_field(state, &b, F_STATUS, rows[i].raw);
        expect_error(rows[i].raw, it, NULL);
        if (!str_is(&it->f[F_STATUS], rows[i].want, strlen(rows[i].want))) {
            print_error("%s: decoded to %.*s\n", rows[i].raw, (int)it->f[F_STATUS].n,
                        it->f[F_STATUS].p);
            fail();
        }
        batch_free(&b);
    }
}

/* An item whose attributes fail after some good entries has no patch at all, and the next
 * item's patch is intact (the entries share one pool per message). */
static void test_invalid_attributes_leave_no_patch(void **state) {
    mw_batch b;
    decode_items(state, &b,
                 "{\"externalConversationId\":\"c\",\"externalCustomerId\":\"k\",\"attributes\":"
                 "[{\"name\":\"a\",\"value\":\"1\"},5]},"
                 "{\"externalConversationId\":\"d\",\"externalCustomerId\":\"k\",\"attributes\":"
                 "[{\"name\":\"b\",\"value\":\"2\"}]}");
    expect_error("first", &b.items[0], BP "attributes[1] must be an object");
    assert_false(b.items[0].has_attrs);
    assert_int_equal(b.items[0].n_attrs, 0);
    expect_error("second", &b.items[1], NULL);
    assert_int_equal(b.items[1].n_attrs, 1);
    assert_true(str_is(&b.items[1].attrs[0].name, "b", 1));
    assert_true(str_is(&b.items[1].attrs[0].value, "2", 1));
    batch_free(&b);
}

/* ---- attributes ---------------------------------------------------------------------- */

#define NO_PATCH "<none>"

static const struct {
    const char *attrs; /* raw JSON; NULL: absent */
    const char *error; /* NULL: valid */
    const char *patch; /* expected patch as JSON, NO_PATCH for none (valid items only) */
} attr_rows[] = {
    {NULL, NULL, NO_PATCH},
    {"null", NULL, NO_PATCH},
    {"[]", NULL, "{}"},
    {"[{\"name\":\"a\",\"value\":\"1\"},{\"name\":\"b\",\"value\":\"2\"}]", NULL,
     "{\"a\":\"1\",\"b\":\"2\"}"},
    {"[{\"name\":\"a\",\"value\":null}]", NULL, "{\"a\":null}"},
    {"[{\"name\":\"a\",\"value\":\"\"}]", NULL, "{\"a\":\"\"}"},
    {"[{\"name\":\"a\",\"value\":\"1\"},{\"name\":\"a\",\"value\":\"2\"}]", NULL,
     "{\"a\":\"2\"}"},
    {"[{\"name\":\"a\",\"value\":\"1\"},{\"name\":\"a\",\"value\":null}]", NULL,
     "{\"a\":null}"},
    {"[{\"name\":\"a\",\"value\":null},{\"name\":\"b\",\"value\":\"x\"},"
     "{\"name\":\"a\",\"value\":\"3\"}]",
     NULL, "{\"a\":\"3\",\"b\":\"x\"}"},
    {"[{\"value\":\"v\",\"name\":\"n\",\"extra\":[1]}]", NULL, "{\"n\":\"v\"}"},
    {"[{\"name\":\"\\u00e9 \\\"q\\\"\",\"value\":\"\\ud83d\\ude00\"}]", NULL,
     "{\"\\u00e9 \\\"q\\\"\":\"\\ud83d\\ude00\"}"},
    /* not an array */
    {"\"a=b\"", BP "attributes must be an array or null", NULL},
    {"1", BP "attributes must be an array or null", NULL},
    {"true", BP "attributes must be an array or null", NULL},
    {"{\"name\":\"a\",\"value\":\"b\"}", BP "attributes must be an array or null", NULL},
    /* elements not objects */
    {"[1]", BP "attributes[0] must be an object", NULL},
    {"[null]", BP "attributes[0] must be an object", NULL},
    {"[\"a\"]", BP "attributes[0] must be an object", NULL},
    {"[[]]", BP "attributes[0] must be an object", NULL},
    {"[{\"name\":\"a\",\"value\":\"b\"},false]", BP "attributes[1] must be an object", NULL},
    /* names */
    {"[{\"value\":\"b\"}]", BP "attributes[0].name cannot be empty", NULL},
    {"[{\"name\":null,\"value\":\"b\"}]", BP "attributes[0].name cannot be empty", NULL},
    {"[{\"name\":\"\",\"value\":\"b\"}]", BP "attributes[0].name cannot be empty", NULL},
    {"[{\"name\":\"a\",\"value\":\"b\"},{\"name\":\"\",\"value\":\"c\"}]",
     BP "attributes[1].name cannot be empty", NULL},
    {"[{\"name\":1,\"value\":\"b\"}]", BP "attributes[0].name must be a string", NULL},
    {"[{\"name\":[\"a\"],\"value\":\"b\"}]", BP "attributes[0].name must be a string", NULL},
    {"[{\"name\":\"a\\u0000\",\"value\":\"b\"}]", BP "attributes[0].name cannot contain U+0000",
     NULL},
    /* values */
    {"[{\"name\":\"a\",\"value\":1}]", BP "attributes[0].value must be a string or null", NULL},
    {"[{\"name\":\"a\",\"value\":true}]", BP "attributes[0].value must be a string or null",
     NULL},
    {"[{\"name\":\"a\",\"value\":{}}]", BP "attributes[0].value must be a string or null", NULL},
    {"[{\"name\":\"a\",\"value\":[\"x\"]}]", BP "attributes[0].value must be a string or null",
     NULL},
    {"[{\"name\":\"a\",\"value\":\"\\u0000\"}]", BP "attributes[0].value cannot contain U+0000",
     NULL},
};

static void test_attributes(void **state) {
    for (size_t i = 0; i < N(attr_rows); i++) {
        sb it = {0};
        sb_add(&it, "{\"externalConversationId\":\"c\",\"externalCustomerId\":\"k\"");
        if (attr_rows[i].attrs) {
            sb_add(&it, ",\"attributes\":");
            sb_add(&it, attr_rows[i].attrs);
        }
        sb_add(&it, "}");
        mw_batch b;
        decode_items(state, &b, it.p);
        sb_free(&it);
        const char *ctx = attr_rows[i].attrs ? attr_rows[i].attrs : "(absent)";
        expect_error(ctx, &b.items[0], attr_rows[i].error);
        if (!attr_rows[i].error) {
            if (strcmp(attr_rows[i].patch, NO_PATCH) == 0) {
                assert_false(b.items[0].has_attrs);
            } else {
                json_object *want = json_tokener_parse(attr_rows[i].patch);
                json_object *got = patch_of(&b.items[0]);
                assert_non_null(want);
                if (!got || !json_object_equal(got, want)) {
                    print_error("%s: patch %s, expected %s\n", ctx,
                                got ? json_object_to_json_string(got) : "(none)", attr_rows[i].patch);
                    fail();
                }
                json_object_put(want);
                json_object_put(got);
            }
        }
        batch_free(&b);
    }
}

/* A null value is kept in the patch (it removes the name when applied), not dropped. */
static void test_attribute_null_kept(void **state) {
    mw_batch b;
    decode_items(state, &b,
                 "{\"externalConversationId\":\"c\",\"externalCustomerId\":\"k\",\"attributes\":"
                 "[{\"name\":\"gone\",\"value\":null},{\"name\":\"kept\",\"value\":\"v\"}]}");
    json_object *v = (json_object *)1, *got = patch_of(&b.items[0]);
    assert_non_null(got);
    assert_int_equal(json_object_object_length(got), 2);
    assert_true(json_object_object_get_ex(got, "gone", &v));
    assert_null(v);
    json_object_put(got);
    batch_free(&b);
}

/* name 1..256 and value up to 4096 code points, multibyte included. */
static void test_attribute_lengths(void **state) {
    static const char *const lunits[] = {"a", "\xc3\xa9", "\xf0\x9f\x98\x80", "\\ud83d\\ude00"};
    for (size_t u = 0; u < N(lunits); u++) {
        for (int which = 0; which < 2; which++) { /* 0: name, 1: value */
            size_t max = which ? 4096 : 256;
            for (size_t extra = 0; extra <= 1; extra++) {
                sb it = {0};
                sb_add(&it, "{\"externalConversationId\":\"c\",\"externalCustomerId\":\"k\","
                            "\"attributes\":[{\"name\":\"");
                if (which) sb_add(&it, "n");
                else sb_rep(&it, lunits[u], max + extra);
                sb_add(&it, "\",\"value\":\"");
                if (which) sb_rep(&it, lunits[u], max + extra);
                else sb_add(&it, "v");
                sb_add(&it, "\"}]}");
                mw_batch b;
                decode_items(state, &b, it.p);
                sb_free(&it);
                char ctx[120], err[120];
                snprintf(ctx, sizeof ctx, "attribute %s of %zu x unit %zu",
                         which ? "value" : "name", max + extra, u);
                snprintf(err, sizeof err, BP "attributes[0].%s exceeds maximum length of %zu",
                         which ? "value" : "name", max);
                expect_error(ctx, &b.items[0], extra ? err : NULL);
                if (!extra) assert_int_equal(b.items[0].n_attrs, 1);
                batch_free(&b);
            }
        }
    }
}

/* ---- eventId ------------------------------------------------------------------------- */

static void test_event_id_given(void **state) {
    mw_batch b;
    decode_items(state, &b,
                 "{\"externalConversationId\":\"c\",\"externalCustomerId\":\"k\","
                 "\"eventId\":\"my-event\"},"
                 /* kept although another field (before or after it) fails */
                 "{\"externalConversationId\":\"\",\"externalCustomerId\":\"k\","
                 "\"eventId\":\"ev-2\"},"
                 "{\"externalConversationId\":\"c\",\"externalCustomerId\":\"k\","
                 "\"eventId\":\"ev-3\",\"addressZipcode\":12},"
                 "{\"externalConversationId\":\"c\",\"externalCustomerId\":\"k\","
                 "\"eventId\":\"ev-4\",\"attributes\":[{}]},"
                 "{\"eventId\":\"ev-5\"}");
    assert_true(str_is(&b.items[0].f[F_EVENT], "my-event", 8));
    expect_error("ev-2", &b.items[1], BP "externalConversationId cannot be blank");
    assert_true(str_is(&b.items[1].f[F_EVENT], "ev-2", 4));
    expect_error("ev-3", &b.items[2], BP "addressZipcode must be a string");
    assert_true(str_is(&b.items[2].f[F_EVENT], "ev-3", 4));
    expect_error("ev-4", &b.items[3], BP "attributes[0].name cannot be empty");
    assert_true(str_is(&b.items[3].f[F_EVENT], "ev-4", 4));
    expect_error("ev-5", &b.items[4], BP "externalConversationId cannot be blank");
    assert_true(str_is(&b.items[4].f[F_EVENT], "ev-5", 4));
    assert_int_equal(b.invalid_count, 4);
    batch_free(&b);
}

/* An invalid eventId (too long, wrong type, U+0000) is replaced by the generated one. */
static void test_event_id_invalid_replaced(void **state) {
    sb raw = {0};
    sb_add(&raw, "\"");
    sb_rep(&raw, "e", 257);
    sb_add(&raw, "\"");
    const char *rows[] = {raw.p, "17", "\"a\\u0000\"", "\" \""};
    for (size_t i = 0; i < N(rows); i++) {
        mw_batch b;
        const mw_item *it = decode_field(state, &b, F_EVENT, rows[i]);
        assert_non_null(it->error);
        char want[MW_UUID_STR_LEN + 1];
        batch_event_id(want, &SRC, 0);
        assert_true(str_is(&it->f[F_EVENT], want, MW_UUID_STR_LEN));
        batch_free(&b);
    }
    sb_free(&raw);
}

/* Generated ids are name-based UUIDs of (topic, partition, offset, index): a replay of the
 * same message gives the same ids; any other coordinate gives another id. */
static void test_event_id_generated(void **state) {
    static const char items[] =
        "{\"items\":[{\"externalConversationId\":\"c\",\"externalCustomerId\":\"k\"},"
        "{\"externalConversationId\":\"c\",\"externalCustomerId\":\"k\",\"eventId\":null},"
        "5]}";
    mw_batch a, b;
    decode_n(state, &a, items, sizeof items - 1, 10);
    decode_n(state, &b, items, sizeof items - 1, 10);
    for (int i = 0; i < 3; i++) {
        const mw_str *e = &a.items[i].f[F_EVENT];
        assert_true(is_uuid_v5(e->p, e->n));
        assert_true(str_is(&b.items[i].f[F_EVENT], e->p, e->n)); /* replay: identical */
        char want[MW_UUID_STR_LEN + 1];
        batch_event_id(want, &SRC, i);
        assert_true(str_is(e, want, MW_UUID_STR_LEN));
    }
    assert_false(str_is(&a.items[0].f[F_EVENT], a.items[1].f[F_EVENT].p, 36));
    assert_false(str_is(&a.items[1].f[F_EVENT], a.items[2].f[F_EVENT].p, 36));
    batch_free(&a);
    batch_free(&b);

    /* Known values: uuid5(6b3c2e0a-9d41-4f7e-8a55-1c93d207e46f, "topic/partition/offset/i");
     * changing them would change the eventIds of every replayed message. */
    char id[MW_UUID_STR_LEN + 1];
    batch_event_id(id, &SRC, 0);
    assert_string_equal(id, "f259a5de-1f69-54db-94cd-e48ea609b37a");
    batch_event_id(id, &SRC, 1);
    assert_string_equal(id, "c61ef615-adf1-5598-ba5e-cd4247339b2c");
    mw_source t = {"t", 0, 0};
    batch_event_id(id, &t, 0);
    assert_string_equal(id, "5f8370fe-0de5-5aff-b72f-dcae79bc540a");

    /* Every coordinate matters. */
    const mw_source others[] = {
        {"customer-metadata.batches", 3, 1235},
        {"customer-metadata.batches", 4, 1234},
        {"other-topic", 3, 1234},
    };
    char base[MW_UUID_STR_LEN + 1];
    batch_event_id(base, &SRC, 0);
    for (size_t i = 0; i < N(others); i++) {
        batch_event_id(id, &others[i], 0);
        assert_true(is_uuid_v5(id, strlen(id)));
        assert_string_not_equal(id, base);
    }
}

/* ---- message level: bad requests ----------------------------------------------------- */

#define VALID "{\"items\":[{\"externalConversationId\":\"c\",\"externalCustomerId\":\"k\"}]}"
#define PFX "{\"items\":[{\"externalConversationId\":\""
#define SFX "\",\"externalCustomerId\":\"k\"}]}"

static const struct {
    const char *name;
    const char *msg;
    size_t len;
    int max_items;
    const char *want;  /* NULL: a valid batch */
    bool exact;        /* else want is a prefix */
} msg_rows[] = {
    {"empty", BIN(""), 10, BR "message is empty", true},
    {"overlong /", BIN(PFX "\xc0\xaf" SFX), 10, BR "message is not valid UTF-8 (byte 37)", true},
    {"overlong 3-byte", BIN(PFX "\xe0\x80\xaf" SFX), 10,
     BR "message is not valid UTF-8 (byte 37)", true},
    {"lone continuation byte", BIN(PFX "ab\x80" SFX), 10,
     BR "message is not valid UTF-8 (byte 39)", true},
    {"UTF-8 encoded surrogate", BIN(PFX "\xed\xa0\x80" SFX), 10,
     BR "message is not valid UTF-8 (byte 37)", true},
    {"truncated sequence", BIN(PFX "\xe2\x82" SFX), 10,
     BR "message is not valid UTF-8 (byte 37)", true},
    {"truncated sequence at the end", BIN(VALID "\xf0\x9f\x98"), 10,
     BR "message is not valid UTF-8 (byte 67)", true},
    {"above U+10FFFF", BIN(PFX "\xf4\x90\x80\x80" SFX), 10,
     BR "message is not valid UTF-8 (byte 37)", true},
    {"0xFF byte", BIN("\xff" VALID), 10, BR "message is not valid UTF-8 (byte 0)", true},
    {"not JSON", BIN("hello"), 10, BR "message is not valid JSON", false},
    {"unterminated", BIN("{\"items\":["), 10, BR "message is not valid JSON", false},
    {"single-quoted value", BIN("{\"items\":['x']}"), 10, BR "message is not valid JSON", false},
    {"trailing comma", BIN("{\"items\":[{},]}"), 10, BR "message is not valid JSON", false},
    {"comment", BIN("/* c */" VALID), 10, BR "message is not valid JSON", false},
    {"raw NUL in a string", BIN(PFX "a\0b" SFX), 10, BR "message is not valid JSON", false},
    {"trailing garbage", BIN(VALID " x"), 10, BR "message is not valid JSON", false},
    {"trailing second object", BIN(VALID "{}"), 10, BR "message is not valid JSON", false},
    {"trailing bracket", BIN(VALID "]"), 10, BR "message is not valid JSON", false},
    {"trailing NUL byte", BIN(VALID "\0"), 10, BR "message is not valid JSON", false},
    {"trailing NUL after white space", BIN(VALID "\n\0"), 10, BR "message is not valid JSON",
     false},
    {"white space around", BIN(" \r\n\t" VALID "\n \t\r\n"), 10, NULL, false},
    {"array", BIN("[" VALID "]"), 10, BR "message must be a JSON object with an items array",
     true},
    {"empty array", BIN("[]"), 10, BR "message must be a JSON object with an items array", true},
    {"string", BIN("\"items\""), 10, BR "message must be a JSON object with an items array",
     true},
    /* Valid JSON that is not an object, a bare literal or number at the very end included. */
    {"null", BIN("null"), 10, BR "message must be a JSON object with an items array", true},
    {"true", BIN("true"), 10, BR "message must be a JSON object with an items array", true},
    {"number", BIN("42"), 10, BR "message must be a JSON object with an items array", true},
    {"number and newline", BIN("42\n"), 10, BR "message must be a JSON object with an items array",
     true},
    {"no items", BIN("{}"), 10, BR "items is required", true},
    {"items misspelt", BIN("{\"Items\":[{}],\"item\":[{}]}"), 10, BR "items is required", true},
    {"items null", BIN("{\"items\":null}"), 10, BR "items is required", true},
    {"items object", BIN("{\"items\":{}}"), 10, BR "items must be an array", true},
    {"items string", BIN("{\"items\":\"[]\"}"), 10, BR "items must be an array", true},
    {"items number", BIN("{\"items\":3}"), 10, BR "items must be an array", true},
    {"items bool", BIN("{\"items\":true}"), 10, BR "items must be an array", true},
    {"empty items", BIN("{\"items\":[]}"), 10, BR "items cannot be empty", true},
    {"max items exactly", BIN("{\"items\":[1,2,3]}"), 3, NULL, false},
    {"one over max items", BIN("{\"items\":[1,2,3,4]}"), 3,
     BR "items exceeds maximum of 3 items (got 4)", true},
    {"max 1", BIN("{\"items\":[{}]}"), 1, NULL, false},
    {"max 1, two items", BIN("{\"items\":[{},{}]}"), 1,
     BR "items exceeds maximum of 1 items (got 2)", true},
    {"other members ignored", BIN("{\"v\":2,\"items\":[{}],\"meta\":{\"a\":[]}}"), 10, NULL,
     false},
    /* Not RFC 8259 JSON although json-c's strict mode accepts it: the last N_NOT_JSON rows
     * (test_message_not_rfc8259). */
    {"single-quoted key", BIN("{'items':[{}]}"), 10, BR "message is not valid JSON", false},
    {"single-quoted item keys",
     BIN("{\"items\":[{'externalConversationId':\"c\",'externalCustomerId':\"k\"}]}"), 10,
     BR "message is not valid JSON", false},
    {"NaN", BIN("{\"items\":[NaN]}"), 10, BR "message is not valid JSON", false},
    {"Infinity", BIN("{\"items\":[Infinity]}"), 10, BR "message is not valid JSON", false},
    {"-Infinity", BIN("{\"items\":[-Infinity]}"), 10, BR "message is not valid JSON", false},
    {"number 1.", BIN("{\"items\":[1.]}"), 10, BR "message is not valid JSON", false},
    {"number 1.e5", BIN("{\"items\":[1.e5]}"), 10, BR "message is not valid JSON", false},
    {"number -01", BIN("{\"items\":[-01]}"), 10, BR "message is not valid JSON", false},
    {"number 00", BIN("{\"items\":[00]}"), 10, BR "message is not valid JSON", false},
    {"number -.1", BIN("{\"items\":[-.1]}"), 10, BR "message is not valid JSON", false},
    {"raw tab in a string", BIN(PFX "a\tb" SFX), 10, BR "message is not valid JSON", false},
    {"raw newline in a string", BIN(PFX "a\nb" SFX), 10, BR "message is not valid JSON", false},
};
#define N_NOT_JSON 12

static void check_bad_request(const char *name, const mw_batch *b, const char *want, bool exact) {
    if (!b->bad_request ||
        (exact ? strcmp(b->bad_request, want) != 0 : strncmp(b->bad_request, want, strlen(want)))) {
        print_error("%s: bad_request \"%s\", expected %s\"%s\"\n", name,
                    b->bad_request ? b->bad_request : "(none)", exact ? "" : "prefix ", want);
        fail();
    }
    assert_int_equal(b->n_items, 0);
    assert_null(b->items);
    assert_int_equal(b->invalid_count, 0);
    assert_true(is_uuid_v5(b->bad_event_id, strlen(b->bad_event_id)));
}

/* Runs message rows; reports every row that fails, then fails once. */
static void run_message_rows(void **state, size_t first, size_t count) {
    int failed = 0;
    for (size_t i = first; i < first + count; i++) {
        mw_batch b;
        decode_n(state, &b, msg_rows[i].msg, msg_rows[i].len, msg_rows[i].max_items);
        const char *want = msg_rows[i].want;
        if (want) {
            bool match = b.bad_request &&
                         (msg_rows[i].exact ? strcmp(b.bad_request, want) == 0
                                            : strncmp(b.bad_request, want, strlen(want)) == 0);
            if (!match) {
                print_error("%s: bad_request \"%s\", expected %s\"%s\"\n", msg_rows[i].name,
                            b.bad_request ? b.bad_request : "(none)",
                            msg_rows[i].exact ? "" : "prefix ", want);
                failed++;
            } else {
                check_bad_request(msg_rows[i].name, &b, want, msg_rows[i].exact);
            }
        } else if (b.bad_request || b.n_items < 1) {
            print_error("%s: expected a batch, got \"%s\"\n", msg_rows[i].name,
                        b.bad_request ? b.bad_request : "no items");
            failed++;
        }
        batch_free(&b);
    }
    assert_int_equal(failed, 0);
}

static void test_message_level(void **state) {
    run_message_rows(state, 0, N(msg_rows) - N_NOT_JSON);
}

/*
 * What json-c 0.16's JSON_TOKENER_STRICT still accepts is refused (contract §2: not JSON, a bad
 * request): single-quoted object keys, NaN / Infinity / -Infinity, "1." and "1.e5", the
 * leading zeros of "-01" and "00", "-.1", and raw control characters inside strings. The
 * gate is common/jsoncheck, not json-c.
 */
static void test_message_not_rfc8259(void **state) {
    run_message_rows(state, N(msg_rows) - N_NOT_JSON, N_NOT_JSON);
}

/* The document `null` is valid JSON that is not an object: that is the reason given (json-c
 * once parsed it to a NULL object, taken for a parse failure: "not valid JSON: success"). */
static void test_message_null_document(void **state) {
    mw_batch b;
    decode_n(state, &b, BIN("null\n"), 10);
    char got[200];
    snprintf(got, sizeof got, "%s", b.bad_request ? b.bad_request : "(none)");
    batch_free(&b); /* before asserting: a failure must not also report a leak */
    assert_string_equal(got, BR "message must be a JSON object with an items array");
}

static void test_message_null_buffer(void **state) {
    mw_batch b;
    decode_n(state, &b, NULL, 0, 10);
    check_bad_request("NULL buffer", &b, BR "message is empty", true);
    batch_free(&b);
}

/* Regressions found by the fuzzer (tests/fuzz): 64 levels with a scalar innermost are
 * accepted (jsoncheck and json-c count depth alike), 65 are refused. */
static void test_fuzz_regressions(void **state) {
    char doc[512];
    int n = snprintf(doc, sizeof doc, "{\"items\":[{\"externalCustomerId\":\"c\","
                     "\"externalConversationId\":\"k\",\"x\":");
    for (int i = 0; i < 61; i++) doc[n++] = '[';
    doc[n++] = '1';
    for (int i = 0; i < 61; i++) doc[n++] = ']';
    n += snprintf(doc + n, sizeof doc - (size_t)n, "}]}");
    mw_batch b;
    decode_n(state, &b, doc, (size_t)n, 10);
    bool ok = b.bad_request == NULL && b.n_items == 1 && b.items[0].error == NULL;
    batch_free(&b);
    assert_true(ok);

    char deeper[600];
    int m = snprintf(deeper, sizeof deeper, "{\"items\":[{\"x\":");
    for (int i = 0; i < 62; i++) deeper[m++] = '[';
    deeper[m++] = '1';
    for (int i = 0; i < 62; i++) deeper[m++] = ']';
    m += snprintf(deeper + m, sizeof deeper - (size_t)m, "}]}");
    decode_n(state, &b, deeper, (size_t)m, 10);
    ok = b.bad_request && strstr(b.bad_request, "nesting too deep");
    batch_free(&b);
    assert_true(ok);

}

/* A key holding U+0000 is a key like any other (issue 9): "items\u0000x" is not "items", and
 * an unknown member named with U+0000 is ignored (contract §3) — the item is still ingested. */
static void test_nul_in_keys(void **state) {
    mw_batch b;
    decode_n(state, &b, BIN("{\"items\\u0000x\":[{\"externalCustomerId\":\"c\",\"externalConversationId\":\"k\"}]}"), 10);
    check_bad_request("items with U+0000", &b, BR "items is required", true);
    batch_free(&b);

    decode_n(state, &b, BIN("{\"items\":[{\"externalCustomerId\":\"c\",\"externalConversationId\":\"k\","
                            "\"x\\u0000y\":1,\"status\\u0000\":\"no\",\"\\u0000\":{\"\\u0000\":[]}},"
                            "{\"externalCustomerId\":\"d\",\"externalConversationId\":\"k\","
                            "\"attributes\":[{\"name\":\"a\",\"value\":\"b\",\"n\\u0000\":0}]}],"
                            "\"meta\\u0000\":true}"), 10);
    bool ok = b.bad_request == NULL && b.n_items == 2 && b.invalid_count == 0 &&
              b.items[0].f[F_STATUS].p == NULL && b.items[1].n_attrs == 1;
    batch_free(&b);
    assert_true(ok);
}

/* A bad request's eventId is deterministic too (a replay yields the same result). */
static void test_bad_request_event_id_stable(void **state) {
    mw_batch a, b;
    decode_n(state, &a, BIN("nope"), 10);
    decode_n(state, &b, BIN("nope"), 10);
    assert_string_equal(a.bad_event_id, b.bad_event_id);
    batch_free(&a);
    batch_free(&b);
}

/* Deep nesting must neither crash nor recurse without bound. */
static void test_deep_nesting(void **state) {
    enum { DEPTH = 10000 };
    sb m = {0};
    sb_rep(&m, "[", DEPTH);
    mw_batch b;
    decode_n(state, &b, m.p, m.n, 10);
    check_bad_request("10000 x [", &b, BR "message is not valid JSON", false);
    batch_free(&b);

    sb_free(&m);
    sb_add(&m, "{\"items\":");
    sb_rep(&m, "[", DEPTH);
    sb_rep(&m, "]", DEPTH);
    sb_add(&m, "}");
    decode_n(state, &b, m.p, m.n, 10);
    check_bad_request("items nested 10000 deep", &b, BR "message is not valid JSON", false);
    batch_free(&b);

    sb_free(&m);
    sb_rep(&m, "{\"a\":", DEPTH);
    decode_n(state, &b, m.p, m.n, 10);
    check_bad_request("10000 x {\"a\":", &b, BR "message is not valid JSON", false);
    batch_free(&b);
    sb_free(&m);
}

/* Decoding keeps no state between messages: a truncated one changes nothing after it. */
static void test_tokener_reuse(void **state) {
    mw_batch b;
    decode_n(state, &b, BIN("{\"items\":[{\"externalConversationId\":\"c"), 10);
    assert_non_null(b.bad_request);
    batch_free(&b);
    decode_n(state, &b, BIN(VALID), 10);
    assert_null(b.bad_request);
    assert_int_equal(b.n_items, 1);
    expect_error("after reuse", &b.items[0], NULL);
    batch_free(&b);
}

/* The default maximum: exactly 10000 items is a batch. */
static void test_default_max_items(void **state) {
    sb m = {0};
    sb_add(&m, "{\"items\":[");
    for (int i = 0; i < MW_MAX_BATCH_ITEMS_DEFAULT; i++) {
        char it[96];
        snprintf(it, sizeof it,
                 "%s{\"externalConversationId\":\"c%d\",\"externalCustomerId\":\"k\"}",
                 i ? "," : "", i);
        sb_add(&m, it);
    }
    sb_add(&m, "]}");
    mw_batch b;
    decode_n(state, &b, m.p, m.n, MW_MAX_BATCH_ITEMS_DEFAULT);
    assert_null(b.bad_request);
    assert_int_equal(b.n_items, MW_MAX_BATCH_ITEMS_DEFAULT);
    assert_int_equal(b.invalid_count, 0);
    assert_true(str_is(&b.items[9999].f[F_CONVERSATION], "c9999", 5));
    batch_free(&b);
    decode_n(state, &b, m.p, m.n, MW_MAX_BATCH_ITEMS_DEFAULT - 1);
    check_bad_request("10000 items, max 9999", &b,
                      BR "items exceeds maximum of 9999 items (got 10000)", true);
    batch_free(&b);
    sb_free(&m);
}

/* ---- the API's example request ------------------------------------------------------- */

static void test_example_request(void **state) {
    FILE *f = fopen("schemas/example-request.json", "rb");
    if (!f) {
        print_error("schemas/example-request.json: run the tests from the repository root\n");
        fail();
    }
    sb m = {0};
    char chunk[4096];
    size_t r;
    while ((r = fread(chunk, 1, sizeof chunk, f)) > 0) sb_addn(&m, chunk, r);
    fclose(f);

    mw_batch b;
    decode_n(state, &b, m.p, m.n, MW_MAX_BATCH_ITEMS_DEFAULT);
    sb_free(&m);
    assert_null(b.bad_request);
    assert_int_equal(b.n_items, 5);
    assert_int_equal(b.invalid_count, 0);
    for (int i = 0; i < 5; i++) expect_error("example item", &b.items[i], NULL);

    const mw_item *it = &b.items[0];
    assert_true(str_is(&it->f[F_EVENT], "eventId-1938", 12));
    assert_true(str_is(&b.items[1].f[F_EVENT], "eventId-1331", 12));
    assert_true(str_is(&it->f[F_CONVERSATION], "id-509", 6));
    assert_true(str_is(&it->f[F_CUSTOMER], "555.555.0100-jdoe@example.com", 29));
    assert_true(str_is(&it->f[F_STATUS], "new", 3));
    assert_true(str_is(&it->f[F_PHONE], "(555)555-0100", 13));
    assert_true(str_is(&it->f[F_EMAIL], "jdoe@example.com", 16));
    assert_true(str_is(&it->f[F_USER], "user908038", 10));
    assert_true(str_is(&it->f[F_COUNTRY], "United-States", 13));
    assert_true(str_is(&it->f[F_STATE], "New-York", 8));
    assert_true(str_is(&it->f[F_ZIP], "10001", 5));
    json_object *want = json_tokener_parse("{\"attr1_name\":\"attr1_value\","
                                           "\"attr2_name\":\"attr2_value\"}");
    json_object *got = patch_of(it);
    assert_true(json_object_equal(got, want));
    json_object_put(want);
    json_object_put(got);

    for (int i = 2; i < 5; i++) {
        char gen[MW_UUID_STR_LEN + 1];
        batch_event_id(gen, &SRC, i);
        assert_true(str_is(&b.items[i].f[F_EVENT], gen, MW_UUID_STR_LEN));
        assert_false(b.items[i].has_attrs);
        assert_null(b.items[i].f[F_STATUS].p);
    }
    assert_true(str_is(&b.items[2].f[F_CUSTOMER], "555.555.0191", 12));
    assert_true(str_is(&b.items[4].f[F_CUSTOMER], "zdoe@example.com", 16));
    assert_null(b.items[4].f[F_PHONE].p);
    assert_null(b.items[4].f[F_USER].p);
    assert_null(b.items[4].f[F_COUNTRY].p);
    batch_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_field_table),
        cmocka_unit_test(test_all_fields_stored),
        cmocka_unit_test(test_field_max_length),
        cmocka_unit_test(test_required_blank),
        cmocka_unit_test(test_event_id_blank),
        cmocka_unit_test(test_optional_empty_stored),
        cmocka_unit_test(test_wrong_type),
        cmocka_unit_test(test_optional_null_is_absent),
        cmocka_unit_test(test_nul),
        cmocka_unit_test(test_first_problem_wins),
        cmocka_unit_test(test_item_not_object),
        cmocka_unit_test(test_mixed_batch),
        cmocka_unit_test(test_unknown_fields),
        cmocka_unit_test(test_escapes_decoded),
        cmocka_unit_test(test_lone_surrogate_escape),
        cmocka_unit_test(test_escaped_and_duplicate_names),
        cmocka_unit_test(test_surrogate_escapes_exact),
        cmocka_unit_test(test_invalid_attributes_leave_no_patch),
        cmocka_unit_test(test_attributes),
        cmocka_unit_test(test_attribute_null_kept),
        cmocka_unit_test(test_attribute_lengths),
        cmocka_unit_test(test_event_id_given),
        cmocka_unit_test(test_event_id_invalid_replaced),
        cmocka_unit_test(test_event_id_generated),
        cmocka_unit_test(test_message_level),
        cmocka_unit_test(test_message_not_rfc8259),
        cmocka_unit_test(test_message_null_document),
        cmocka_unit_test(test_fuzz_regressions),
        cmocka_unit_test(test_nul_in_keys),
        cmocka_unit_test(test_message_null_buffer),
        cmocka_unit_test(test_bad_request_event_id_stable),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_tokener_reuse),
        cmocka_unit_test(test_default_max_items),
        cmocka_unit_test(test_example_request),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
