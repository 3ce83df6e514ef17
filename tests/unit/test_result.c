/*
 * Unit tests of worker/result (the per-item result message of docs/contract.md §5 and the API
 * response) and of common/jsonw, the JSON writer they use (escaping, embedded NUL, commas,
 * numbers).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "result.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define BIN(lit) (lit), sizeof(lit) - 1

static const mw_source SRC = {"customer-metadata.batches", 3, 1234};

/* ---- helpers ------------------------------------------------------------------------- */

/* Parses text[0..len) strictly; fails unless it is exactly one JSON document. */
static json_object *parse_n(const char *text, size_t len) {
    json_tokener *t = json_tokener_new();
    json_tokener_set_flags(t, JSON_TOKENER_STRICT);
    json_object *o = json_tokener_parse_ex(t, text, (int)len);
    enum json_tokener_error e = json_tokener_get_error(t);
    if (e != json_tokener_success || json_tokener_get_parse_end(t) != len) {
        print_error("not valid JSON (%s): %.*s\n", json_tokener_error_desc(e), (int)len, text);
        fail();
    }
    json_tokener_free(t);
    return o;
}

static json_object *parse_w(const jsonw *w) {
    assert_false(w->oom);
    return parse_n(w->buf, w->len);
}

static json_object *member(json_object *o, const char *key) {
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v)) {
        print_error("no member \"%s\" in %s\n", key, json_object_to_json_string(o));
        fail();
    }
    return v;
}

static void expect_str(json_object *o, const char *key, const char *want) {
    json_object *v = member(o, key);
    if (want == NULL) {
        assert_null(v);
        return;
    }
    assert_true(json_object_is_type(v, json_type_string));
    assert_string_equal(json_object_get_string(v), want);
}

static void expect_int(json_object *o, const char *key, int64_t want) {
    json_object *v = member(o, key);
    assert_true(json_object_is_type(v, json_type_int));
    assert_int_equal(json_object_get_int64(v), want);
}

static void decode(void **state, mw_batch *b, const char *msg, size_t len) {
    (void)state;
    assert_int_equal(batch_decode(b, msg, len, &SRC, 100), 0);
}

static int group_setup(void **state) {
    (void)state;
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    return 0;
}

/* ---- jsonw --------------------------------------------------------------------------- */

static const struct {
    const char *name;
    const char *in;
    size_t n;
    const char *out;
} escape_rows[] = {
    {"empty", BIN(""), "\"\""},
    {"plain", BIN("abc"), "\"abc\""},
    {"quote", BIN("a\"b"), "\"a\\\"b\""},
    {"backslash", BIN("a\\b"), "\"a\\\\b\""},
    {"slash is not escaped", BIN("a/b"), "\"a/b\""},
    {"newline, return, tab", BIN("\n\r\t"), "\"\\n\\r\\t\""},
    {"backspace, form feed", BIN("\b\f"), "\"\\u0008\\u000c\""},
    {"control characters", BIN("\x01\x1f"), "\"\\u0001\\u001f\""},
    {"DEL", BIN("\x7f"), "\"\\u007f\""},
    {"embedded NUL", BIN("a\0b"), "\"a\\u0000b\""},
    {"only NULs", BIN("\0\0"), "\"\\u0000\\u0000\""},
    {"UTF-8 passes through", BIN("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"),
     "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""},
    {"mixed", BIN("\"\\\n\0x"), "\"\\\"\\\\\\n\\u0000x\""},
};

static void test_jsonw_escaping(void **state) {
    (void)state;
    for (size_t i = 0; i < N(escape_rows); i++) {
        jsonw w;
        jsonw_init(&w);
        jsonw_strn(&w, escape_rows[i].in, escape_rows[i].n);
        if (strcmp(w.buf, escape_rows[i].out) != 0 || w.len != strlen(escape_rows[i].out)) {
            print_error("%s: got %s, expected %s\n", escape_rows[i].name, w.buf,
                        escape_rows[i].out);
            fail();
        }
        /* And it reads back as the same bytes. */
        json_object *o = parse_w(&w);
        assert_int_equal(json_object_get_string_len(o), (int)escape_rows[i].n);
        assert_memory_equal(json_object_get_string(o), escape_rows[i].in, escape_rows[i].n);
        json_object_put(o);
        jsonw_free(&w);
    }
}

/* Every byte value (as a one-byte string, valid UTF-8 or not as a whole) escapes safely. */
static void test_jsonw_all_ascii(void **state) {
    (void)state;
    for (int c = 0; c < 0x80; c++) {
        char in = (char)c;
        jsonw w;
        jsonw_init(&w);
        jsonw_strn(&w, &in, 1);
        json_object *o = parse_w(&w);
        assert_int_equal(json_object_get_string_len(o), 1);
        assert_int_equal((unsigned char)json_object_get_string(o)[0], c);
        json_object_put(o);
        jsonw_free(&w);
    }
}

static void test_jsonw_str_stops_at_nul(void **state) {
    (void)state;
    jsonw w;
    jsonw_init(&w);
    jsonw_str(&w, "ab\0cd");
    assert_string_equal(w.buf, "\"ab\"");
    jsonw_free(&w);
}

static void test_jsonw_structure(void **state) {
    (void)state;
    jsonw w;
    jsonw_init(&w);
    jsonw_raw(&w, "{");
    jsonw_key(&w, "a");
    jsonw_int(&w, 1);
    jsonw_key(&w, "k\"ey");
    jsonw_raw(&w, "[");
    for (int i = 0; i < 3; i++) {
        jsonw_elem(&w);
        jsonw_int(&w, i);
    }
    jsonw_elem(&w);
    jsonw_raw(&w, "{");
    jsonw_key(&w, "x");
    jsonw_raw(&w, "null");
    jsonw_raw(&w, "}");
    jsonw_raw(&w, "]");
    jsonw_key(&w, "min");
    jsonw_int(&w, LLONG_MIN);
    jsonw_key(&w, "max");
    jsonw_int(&w, LLONG_MAX);
    jsonw_key(&w, "d");
    jsonw_double(&w, 0.25);
    jsonw_key(&w, "empty");
    jsonw_raw(&w, "{}");
    jsonw_raw(&w, "}");
    assert_string_equal(w.buf, "{\"a\":1,\"k\\\"ey\":[0,1,2,{\"x\":null}],"
                               "\"min\":-9223372036854775808,\"max\":9223372036854775807,"
                               "\"d\":0.25,\"empty\":{}}");
    json_object_put(parse_w(&w));
    jsonw_free(&w);
}

/* A first key or element of an empty buffer gets no comma. */
static void test_jsonw_first_no_comma(void **state) {
    (void)state;
    jsonw w;
    jsonw_init(&w);
    jsonw_elem(&w);
    jsonw_int(&w, 7);
    assert_string_equal(w.buf, "7");
    jsonw_reset(&w);
    jsonw_key(&w, "k");
    assert_string_equal(w.buf, "\"k\":");
    jsonw_free(&w);
}

static void test_jsonw_reset_take_grow(void **state) {
    (void)state;
    jsonw w;
    jsonw_init(&w);
    /* Grows well past the first allocation, escapes included. */
    for (int i = 0; i < 5000; i++) jsonw_strn(&w, "\0\"", 2);
    assert_int_equal(w.len, 5000u * 10u);
    assert_int_equal(strlen(w.buf), w.len);
    jsonw_reset(&w);
    assert_int_equal(w.len, 0);
    assert_string_equal(w.buf, "");
    jsonw_raw(&w, "[1]");
    char *s = jsonw_take(&w);
    assert_string_equal(s, "[1]");
    free(s);
    assert_null(w.buf);
    assert_int_equal(w.len, 0);
    jsonw_raw(&w, "x"); /* usable after take */
    assert_string_equal(w.buf, "x");
    jsonw_free(&w);
    assert_null(w.buf);
}

/* ---- result_item_error --------------------------------------------------------------- */

static void test_item_error(void **state) {
    (void)state;
    mw_item it;
    memset(&it, 0, sizeof it);
    assert_string_equal(result_item_error(&it, NULL), "");
    assert_string_equal(result_item_error(&it, "DB: rejected"), "DB: rejected");
    char e[] = "FAIL_BAD_PARAMS: ERROR: status must be a string";
    it.error = e;
    assert_string_equal(result_item_error(&it, NULL), e);
    assert_string_equal(result_item_error(&it, "DB: rejected"), e); /* validation first */
}

/* ---- result_message ------------------------------------------------------------------ */

static const char three_items[] =
    "{\"items\":["
    "{\"externalConversationId\":\"conv-\\\"1\",\"externalCustomerId\":\"cust-1\","
    "\"eventId\":\"ev-1\"},"
    "{\"externalConversationId\":\"conv-2\",\"externalCustomerId\":\" \",\"eventId\":\"ev-2\"},"
    "42]}";

static json_object *message(const mw_batch *b, const mw_item *it, const char *error, int ec) {
    jsonw w;
    jsonw_init(&w);
    result_message(&w, b, it, error, ec);
    json_object *o = parse_w(&w);
    jsonw_free(&w);
    return o;
}

static void expect_source(json_object *o, const char *topic, int64_t part, int64_t off,
                          int64_t idx, int64_t item_count, int64_t error_count) {
    json_object *s = member(o, "source");
    expect_str(s, "topic", topic);
    expect_int(s, "partition", part);
    expect_int(s, "offset", off);
    expect_int(s, "index", idx);
    json_object *b = member(o, "batch");
    expect_int(b, "itemCount", item_count);
    expect_int(b, "errorCount", error_count);
}

static void test_message_valid_item(void **state) {
    mw_batch b;
    decode(state, &b, BIN(three_items));
    json_object *o = message(&b, &b.items[0], result_item_error(&b.items[0], NULL), 2);
    expect_str(o, "eventId", "ev-1");
    expect_str(o, "error", "");
    expect_str(o, "externalCustomerId", "cust-1");
    expect_str(o, "externalConversationId", "conv-\"1");
    expect_source(o, "customer-metadata.batches", 3, 1234, 0, 3, 2);
    json_object_put(o);

    /* The same item rejected by the database. */
    o = message(&b, &b.items[0], result_item_error(&b.items[0], "FAIL_DB: value too long"), 3);
    expect_str(o, "error", "FAIL_DB: value too long");
    expect_str(o, "eventId", "ev-1");
    expect_source(o, "customer-metadata.batches", 3, 1234, 0, 3, 3);
    json_object_put(o);
    batch_free(&b);
}

static void test_message_invalid_item(void **state) {
    mw_batch b;
    decode(state, &b, BIN(three_items));
    json_object *o = message(&b, &b.items[1], result_item_error(&b.items[1], NULL), 2);
    expect_str(o, "eventId", "ev-2");
    expect_str(o, "error", "FAIL_BAD_PARAMS: ERROR: externalCustomerId cannot be blank");
    expect_str(o, "externalCustomerId", NULL);
    expect_str(o, "externalConversationId", "conv-2");
    expect_source(o, "customer-metadata.batches", 3, 1234, 1, 3, 2);
    json_object_put(o);

    /* Not an object: both ids null, the generated eventId. */
    char gen[MW_UUID_STR_LEN + 1];
    batch_event_id(gen, &SRC, 2);
    o = message(&b, &b.items[2], result_item_error(&b.items[2], NULL), 2);
    expect_str(o, "eventId", gen);
    expect_str(o, "error", "FAIL_BAD_PARAMS: ERROR: item must be an object");
    expect_str(o, "externalCustomerId", NULL);
    expect_str(o, "externalConversationId", NULL);
    expect_source(o, "customer-metadata.batches", 3, 1234, 2, 3, 2);
    json_object_put(o);
    batch_free(&b);
}

static void test_message_bad_request(void **state) {
    mw_batch b;
    decode(state, &b, BIN("{\"items\":[]}"));
    assert_non_null(b.bad_request);
    json_object *o = message(&b, NULL, b.bad_request, 1);
    expect_str(o, "eventId", b.bad_event_id);
    expect_str(o, "error", "FAIL_BAD_REQUEST: ERROR: items cannot be empty");
    expect_str(o, "externalCustomerId", NULL);
    expect_str(o, "externalConversationId", NULL);
    expect_source(o, "customer-metadata.batches", 3, 1234, 0, 0, 1);
    json_object_put(o);
    batch_free(&b);
}

/* The source topic is escaped; large coordinates are exact. */
static void test_message_source_values(void **state) {
    (void)state;
    mw_source s = {"we\"ird\\topic", 2147483647, INT64_MAX};
    mw_batch b;
    assert_int_equal(batch_decode(&b, BIN("{\"items\":[1]}"), &s, 10), 0);
    json_object *o = message(&b, &b.items[0], "x", 1);
    expect_source(o, "we\"ird\\topic", 2147483647, INT64_MAX, 0, 1, 1);
    json_object_put(o);
    batch_free(&b);
}

/* ---- result_response ----------------------------------------------------------------- */

static char *response(const mw_batch *b) {
    jsonw w;
    jsonw_init(&w);
    result_response(&w, b);
    json_object_put(parse_w(&w));
    return jsonw_take(&w);
}

static void test_response_exact(void **state) {
    mw_batch b;
    decode(state, &b,
           BIN("{\"items\":[{\"externalConversationId\":\"c\",\"externalCustomerId\":\"k\","
               "\"eventId\":\"e1\"},{\"eventId\":\"e\\\"2\",\"externalConversationId\":\"c\"}]}"));
    char *r = response(&b);
    assert_string_equal(r, "{\"errorCount\":1,\"results\":["
                           "{\"eventId\":\"e1\",\"error\":\"\"},"
                           "{\"eventId\":\"e\\\"2\",\"error\":\"FAIL_BAD_PARAMS: ERROR: "
                           "externalCustomerId cannot be blank\"}]}");
    free(r);
    batch_free(&b);
}

static void test_response_bad_request(void **state) {
    mw_batch b;
    decode(state, &b, BIN("not json"));
    char *r = response(&b);
    json_object *o = parse_n(r, strlen(r));
    expect_int(o, "errorCount", 1);
    json_object *results = member(o, "results");
    assert_int_equal(json_object_array_length(results), 1);
    json_object *r0 = json_object_array_get_idx(results, 0);
    expect_str(r0, "eventId", b.bad_event_id);
    expect_str(r0, "error", b.bad_request);
    assert_int_equal(json_object_object_length(r0), 2);
    json_object_put(o);
    free(r);
    batch_free(&b);
}

/* The API's example request: five successes, in order, with their eventIds. */
static void test_response_example(void **state) {
    FILE *f = fopen("schemas/example-request.json", "rb");
    assert_non_null(f);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_true(n > 0 && n < sizeof buf);
    mw_batch b;
    decode(state, &b, buf, n);
    char *r = response(&b);
    json_object *o = parse_n(r, strlen(r));
    expect_int(o, "errorCount", 0);
    json_object *results = member(o, "results");
    assert_int_equal(json_object_array_length(results), 5);
    for (int i = 0; i < 5; i++) {
        json_object *ri = json_object_array_get_idx(results, (size_t)i);
        assert_int_equal(json_object_object_length(ri), 2);
        expect_str(ri, "error", "");
        if (i >= 2) {
            char gen[MW_UUID_STR_LEN + 1];
            batch_event_id(gen, &SRC, i);
            expect_str(ri, "eventId", gen);
        }
    }
    expect_str(json_object_array_get_idx(results, 0), "eventId", "eventId-1938");
    expect_str(json_object_array_get_idx(results, 1), "eventId", "eventId-1331");
    json_object_put(o);
    free(r);
    batch_free(&b);
}

/* A mixed batch: errorCount counts the invalid items; results follow the item order. */
static void test_response_mixed(void **state) {
    mw_batch b;
    decode(state, &b, BIN(three_items));
    char *r = response(&b);
    json_object *o = parse_n(r, strlen(r));
    expect_int(o, "errorCount", 2);
    json_object *results = member(o, "results");
    assert_int_equal(json_object_array_length(results), 3);
    static const char *const errors[] = {
        "", "FAIL_BAD_PARAMS: ERROR: externalCustomerId cannot be blank",
        "FAIL_BAD_PARAMS: ERROR: item must be an object"};
    for (int i = 0; i < 3; i++) {
        json_object *ri = json_object_array_get_idx(results, (size_t)i);
        expect_str(ri, "error", errors[i]);
        const mw_str *e = &b.items[i].f[F_EVENT];
        json_object *ev = member(ri, "eventId");
        assert_int_equal(json_object_get_string_len(ev), (int)e->n);
        assert_memory_equal(json_object_get_string(ev), e->p, e->n);
    }
    json_object_put(o);
    free(r);
    batch_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jsonw_escaping),
        cmocka_unit_test(test_jsonw_all_ascii),
        cmocka_unit_test(test_jsonw_str_stops_at_nul),
        cmocka_unit_test(test_jsonw_structure),
        cmocka_unit_test(test_jsonw_first_no_comma),
        cmocka_unit_test(test_jsonw_reset_take_grow),
        cmocka_unit_test(test_item_error),
        cmocka_unit_test(test_message_valid_item),
        cmocka_unit_test(test_message_invalid_item),
        cmocka_unit_test(test_message_bad_request),
        cmocka_unit_test(test_message_source_values),
        cmocka_unit_test(test_response_exact),
        cmocka_unit_test(test_response_bad_request),
        cmocka_unit_test(test_response_example),
        cmocka_unit_test(test_response_mixed),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
