/*
 * Unit tests of worker/plan: merging a transaction's items by key exactly as applying them one
 * after the other would (SPEC §4), the rows/items JSON documents, and plan reuse.
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

#include "plan.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const mw_source SRC = {"customer-metadata.batches", 3, 1234};

/* ---- helpers ------------------------------------------------------------------------- */

typedef struct sb {
    char *p;
    size_t n, cap;
} sb;

static void sb_add(sb *b, const char *s) {
    size_t n = strlen(s);
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, s, n + 1);
    b->n += n;
}

static void sb_free(sb *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* Decodes {"items":[<items>]} at src; every item must be valid. */
static void decode_at(void **state, mw_batch *b, const char *items, const mw_source *src) {
    (void)state;
    sb m = {0};
    sb_add(&m, "{\"items\":[");
    sb_add(&m, items);
    sb_add(&m, "]}");
    assert_int_equal(batch_decode(b, m.p, m.n, src, 100000), 0);
    sb_free(&m);
    if (b->bad_request) {
        print_error("bad request: %s\n", b->bad_request);
        fail();
    }
    for (int i = 0; i < b->n_items; i++) {
        if (b->items[i].error) {
            print_error("item %d: %s\n", i, b->items[i].error);
            fail();
        }
    }
}

static void add_batch(mw_plan *p, const mw_batch *b) {
    for (int i = 0; i < b->n_items; i++)
        assert_int_equal(plan_add(p, &b->items[i], b->src.partition, b->src.offset), 0);
}

/* Parses a jsonw's text; fails unless it is valid JSON. The caller puts the result. */
static json_object *parse(const jsonw *w) {
    assert_false(w->oom);
    assert_non_null(w->buf);
    json_tokener *t = json_tokener_new();
    json_tokener_set_flags(t, JSON_TOKENER_STRICT);
    json_object *o = json_tokener_parse_ex(t, w->buf, (int)w->len);
    enum json_tokener_error e = json_tokener_get_error(t);
    if (e != json_tokener_success || json_tokener_get_parse_end(t) != w->len) {
        print_error("not valid JSON (%s): %s\n", json_tokener_error_desc(e), w->buf);
        fail();
    }
    json_tokener_free(t);
    return o;
}

static void expect_json(const char *ctx, json_object *got, const char *want_text) {
    json_object *want = json_tokener_parse(want_text);
    assert_non_null(want);
    if (!json_object_equal(got, want)) {
        print_error("%s:\n  got      %s\n  expected %s\n", ctx,
                    json_object_to_json_string_ext(got, JSON_C_TO_STRING_PLAIN),
                    json_object_to_json_string_ext(want, JSON_C_TO_STRING_PLAIN));
        fail();
    }
    json_object_put(want);
}

static json_object *rows_json(mw_plan *p) {
    jsonw w;
    jsonw_init(&w);
    plan_rows_json(p, &w);
    json_object *o = parse(&w);
    jsonw_free(&w);
    return o;
}

static json_object *items_json(mw_plan *p) {
    jsonw w;
    jsonw_init(&w);
    plan_items_json(p, &w);
    json_object *o = parse(&w);
    jsonw_free(&w);
    return o;
}

static int group_setup(void **state) {
    (void)state;
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    return 0;
}

/* ---- merging, table-driven ----------------------------------------------------------- */

/* Shorthand for items: c/k are the ids. */
#define IT(c, k, rest) \
    "{\"externalConversationId\":\"" c "\",\"externalCustomerId\":\"" k "\"" rest "}"
#define ROW(c, k, rest, idx) \
    "{\"conv\":\"" c "\",\"cid\":\"" k "\"" rest ",\"part\":3,\"off\":1234,\"idx\":" #idx "}"

static const struct {
    const char *name;
    const char *items; /* one message at SRC */
    const char *rows;  /* the expected plan_rows_json */
} merge_rows[] = {
    {"one item", IT("c", "k", ",\"eventId\":\"e0\",\"status\":\"s\""),
     "[" ROW("c", "k", ",\"eid\":\"e0\",\"status\":\"s\"", 0) "]"},
    {"every field", IT("c", "k", ",\"eventId\":\"e\",\"status\":\"s\",\"phoneNumber\":\"p\","
                                 "\"emailAddress\":\"m\",\"userId\":\"u\",\"addressCountry\":\"C\","
                                 "\"addressState\":\"S\",\"addressZipcode\":\"Z\""),
     "[" ROW("c", "k", ",\"eid\":\"e\",\"status\":\"s\",\"phone\":\"p\",\"email\":\"m\","
                       "\"uid\":\"u\",\"country\":\"C\",\"state\":\"S\",\"zip\":\"Z\"", 0) "]"},
    {"a later field replaces",
     IT("c", "k", ",\"eventId\":\"e0\",\"status\":\"a\"") ","
     IT("c", "k", ",\"eventId\":\"e1\",\"status\":\"b\""),
     "[" ROW("c", "k", ",\"eid\":\"e1\",\"status\":\"b\"", 1) "]"},
    {"absent keeps the earlier value",
     IT("c", "k", ",\"eventId\":\"e0\",\"status\":\"a\",\"phoneNumber\":\"p\"") ","
     IT("c", "k", ",\"eventId\":\"e1\",\"emailAddress\":\"m\""),
     "[" ROW("c", "k", ",\"eid\":\"e1\",\"status\":\"a\",\"phone\":\"p\",\"email\":\"m\"", 1) "]"},
    {"null keeps the earlier value",
     IT("c", "k", ",\"eventId\":\"e0\",\"status\":\"a\",\"userId\":\"u\"") ","
     IT("c", "k", ",\"eventId\":\"e1\",\"status\":null,\"userId\":\"v\"") ","
     IT("c", "k", ",\"eventId\":\"e2\",\"userId\":null,\"addressZipcode\":null"),
     "[" ROW("c", "k", ",\"eid\":\"e2\",\"status\":\"a\",\"uid\":\"v\"", 2) "]"},
    {"empty string replaces (it is a value)",
     IT("c", "k", ",\"eventId\":\"e0\",\"status\":\"a\"") ","
     IT("c", "k", ",\"eventId\":\"e1\",\"status\":\"\""),
     "[" ROW("c", "k", ",\"eid\":\"e1\",\"status\":\"\"", 1) "]"},
    {"attributes compose",
     IT("c", "k", ",\"eventId\":\"e0\",\"attributes\":[{\"name\":\"a\",\"value\":\"1\"},"
                  "{\"name\":\"b\",\"value\":\"2\"},{\"name\":\"d\",\"value\":\"4\"}]") ","
     IT("c", "k", ",\"eventId\":\"e1\",\"attributes\":[{\"name\":\"b\",\"value\":null},"
                  "{\"name\":\"c\",\"value\":\"3\"}]") ","
     IT("c", "k", ",\"eventId\":\"e2\"") ","
     IT("c", "k", ",\"eventId\":\"e3\",\"attributes\":null") ","
     IT("c", "k", ",\"eventId\":\"e4\",\"attributes\":[{\"name\":\"a\",\"value\":\"9\"},"
                  "{\"name\":\"d\",\"value\":null},{\"name\":\"d\",\"value\":\"5\"}]"),
     "[" ROW("c", "k", ",\"eid\":\"e4\",\"aset\":{\"a\":\"9\",\"c\":\"3\",\"d\":\"5\"},\"adel\":[\"b\"]",
             4) "]"},
    {"a later null removes an earlier value",
     IT("c", "k", ",\"eventId\":\"e0\",\"attributes\":[{\"name\":\"a\",\"value\":\"1\"}]") ","
     IT("c", "k", ",\"eventId\":\"e1\",\"attributes\":[{\"name\":\"a\",\"value\":null}]"),
     "[" ROW("c", "k", ",\"eid\":\"e1\",\"aset\":{},\"adel\":[\"a\"]", 1) "]"},
    {"attributes only on the first item",
     IT("c", "k", ",\"eventId\":\"e0\",\"attributes\":[{\"name\":\"a\",\"value\":\"1\"}]") ","
     IT("c", "k", ",\"eventId\":\"e1\",\"status\":\"s\""),
     "[" ROW("c", "k", ",\"eid\":\"e1\",\"status\":\"s\",\"aset\":{\"a\":\"1\"}", 1) "]"},
    {"attributes only on the last item",
     IT("c", "k", ",\"eventId\":\"e0\",\"attributes\":null") ","
     IT("c", "k", ",\"eventId\":\"e1\",\"attributes\":[{\"name\":\"a\",\"value\":\"1\"}]"),
     "[" ROW("c", "k", ",\"eid\":\"e1\",\"aset\":{\"a\":\"1\"}", 1) "]"},
    {"no attributes: no attrs member",
     IT("c", "k", ",\"eventId\":\"e0\"") ","
     IT("c", "k", ",\"eventId\":\"e1\",\"attributes\":null"),
     "[" ROW("c", "k", ",\"eid\":\"e1\"", 1) "]"},
    {"empty attributes: an empty patch",
     IT("c", "k", ",\"eventId\":\"e0\",\"attributes\":[]"),
     "[" ROW("c", "k", ",\"eid\":\"e0\",\"aset\":{}", 0) "]"},
    {"different keys stay separate, in order of first appearance",
     IT("c1", "k1", ",\"eventId\":\"e0\",\"status\":\"a\"") ","
     IT("c1", "k2", ",\"eventId\":\"e1\",\"status\":\"b\"") ","
     IT("c2", "k1", ",\"eventId\":\"e2\",\"status\":\"c\"") ","
     IT("c1", "k1", ",\"eventId\":\"e3\",\"phoneNumber\":\"p\""),
     "[" ROW("c1", "k1", ",\"eid\":\"e3\",\"status\":\"a\",\"phone\":\"p\"", 3) ","
         ROW("c1", "k2", ",\"eid\":\"e1\",\"status\":\"b\"", 1) ","
         ROW("c2", "k1", ",\"eid\":\"e2\",\"status\":\"c\"", 2) "]"},
    {"the boundary between the ids matters (ab+c vs a+bc)",
     IT("c", "ab", ",\"eventId\":\"e0\"") "," IT("bc", "a", ",\"eventId\":\"e1\""),
     "[" ROW("c", "ab", ",\"eid\":\"e0\"", 0) "," ROW("bc", "a", ",\"eid\":\"e1\"", 1) "]"},
    {"the two ids are not interchangeable",
     IT("x", "y", ",\"eventId\":\"e0\"") "," IT("y", "x", ",\"eventId\":\"e1\""),
     "[" ROW("x", "y", ",\"eid\":\"e0\"", 0) "," ROW("y", "x", ",\"eid\":\"e1\"", 1) "]"},
    {"exact strings: case",
     IT("c", "k", ",\"eventId\":\"e0\"") "," IT("c", "K", ",\"eventId\":\"e1\""),
     "[" ROW("c", "k", ",\"eid\":\"e0\"", 0) "," ROW("c", "K", ",\"eid\":\"e1\"", 1) "]"},
    {"exact strings: trailing space",
     IT("c", "k", ",\"eventId\":\"e0\"") "," IT("c ", "k", ",\"eventId\":\"e1\""),
     "[" ROW("c", "k", ",\"eid\":\"e0\"", 0) "," ROW("c ", "k", ",\"eid\":\"e1\"", 1) "]"},
    {"exact strings: NFC vs NFD",
     IT("c", "\xc3\xa9", ",\"eventId\":\"e0\"") "," IT("c", "e\xcc\x81", ",\"eventId\":\"e1\""),
     "[" ROW("c", "\xc3\xa9", ",\"eid\":\"e0\"", 0) ","
         ROW("c", "e\xcc\x81", ",\"eid\":\"e1\"", 1) "]"},
    {"the same key written with escapes is the same key",
     IT("c", "k\\u00e9", ",\"eventId\":\"e0\",\"status\":\"a\"") ","
     IT("\\u0063", "k\xc3\xa9", ",\"eventId\":\"e1\""),
     "[" ROW("c", "k\xc3\xa9", ",\"eid\":\"e1\",\"status\":\"a\"", 1) "]"},
    {"interleaved keys",
     IT("a", "k", ",\"eventId\":\"e0\",\"status\":\"1\"") ","
     IT("b", "k", ",\"eventId\":\"e1\",\"status\":\"2\"") ","
     IT("a", "k", ",\"eventId\":\"e2\",\"status\":\"3\"") ","
     IT("b", "k", ",\"eventId\":\"e3\",\"userId\":\"u\""),
     "[" ROW("a", "k", ",\"eid\":\"e2\",\"status\":\"3\"", 2) ","
         ROW("b", "k", ",\"eid\":\"e3\",\"status\":\"2\",\"uid\":\"u\"", 3) "]"},
};

/* The rows document lists rows in key order (customer, then conversation, bytewise): the
 * order PostgreSQL locks them in. Returns want_text's rows in that order. */
static int row_order(const void *x, const void *y) {
    json_object *a = *(json_object *const *)x, *b = *(json_object *const *)y, *v;
    const char *ka[2], *kb[2];
    const char *names[2] = {"cid", "conv"};
    for (int i = 0; i < 2; i++) {
        ka[i] = json_object_object_get_ex(a, names[i], &v) ? json_object_get_string(v) : "";
        kb[i] = json_object_object_get_ex(b, names[i], &v) ? json_object_get_string(v) : "";
    }
    int c = strcmp(ka[0], kb[0]);
    return c ? c : strcmp(ka[1], kb[1]);
}

static char *in_key_order(const char *want_text) {
    json_object *want = json_tokener_parse(want_text);
    assert_non_null(want);
    json_object_array_sort(want, row_order);
    char *out = strdup(json_object_to_json_string_ext(want, JSON_C_TO_STRING_PLAIN));
    json_object_put(want);
    return out;
}

static void test_merge_table(void **state) {
    for (size_t i = 0; i < N(merge_rows); i++) {
        mw_batch b;
        decode_at(state, &b, merge_rows[i].items, &SRC);
        mw_plan p;
        plan_init(&p);
        add_batch(&p, &b);
        assert_int_equal(plan_merge(&p), 0);
        char *want = in_key_order(merge_rows[i].rows);
        json_object *got = rows_json(&p);
        expect_json(merge_rows[i].name, got, want);
        assert_int_equal(p.n_rows, (int)json_object_array_length(got));
        json_object_put(got);
        /* Merging again gives the same rows. */
        assert_int_equal(plan_merge(&p), 0);
        got = rows_json(&p);
        expect_json(merge_rows[i].name, got, want);
        json_object_put(got);
        free(want);
        plan_free(&p);
        batch_free(&b);
    }
}

/* The row's eventId and source are the last item's, generated eventId included. */
static void test_last_item_source(void **state) {
    mw_batch b1, b2;
    mw_source s1 = {"t", 0, 10}, s2 = {"t", 0, 11};
    decode_at(state, &b1,
              IT("c", "k", ",\"eventId\":\"given\",\"status\":\"a\"") ","
              IT("other", "k", ",\"status\":\"x\""), &s1);
    decode_at(state, &b2, IT("z", "k", "") "," IT("c", "k", ",\"phoneNumber\":\"p\""), &s2);
    mw_plan p;
    plan_init(&p);
    add_batch(&p, &b1);
    add_batch(&p, &b2);
    assert_int_equal(plan_merge(&p), 0);
    assert_int_equal(p.n_rows, 3);
    const mw_row *r = &p.rows[0];
    assert_ptr_equal(r->last, &p.items[3]);
    assert_ptr_equal(r->last->item, &b2.items[1]);
    assert_int_equal(r->last->offset, 11);
    char gen[MW_UUID_STR_LEN + 1];
    batch_event_id(gen, &s2, 1);
    assert_int_equal(r->f[F_EVENT].n, MW_UUID_STR_LEN);
    assert_memory_equal(r->f[F_EVENT].p, gen, MW_UUID_STR_LEN);
    assert_memory_equal(r->f[F_STATUS].p, "a", 1);
    assert_memory_equal(r->f[F_PHONE].p, "p", 1);

    json_object *got = rows_json(&p);
    json_object *row0 = json_object_array_get_idx(got, 0), *v;
    assert_true(json_object_object_get_ex(row0, "eid", &v));
    assert_string_equal(json_object_get_string(v), gen);
    assert_true(json_object_object_get_ex(row0, "off", &v));
    assert_int_equal(json_object_get_int64(v), 11);
    assert_true(json_object_object_get_ex(row0, "idx", &v));
    assert_int_equal(json_object_get_int(v), 1);
    assert_true(json_object_object_get_ex(row0, "part", &v));
    assert_int_equal(json_object_get_int(v), 0);
    json_object_put(got);
    plan_free(&p);
    batch_free(&b1);
    batch_free(&b2);
}

/* Large offsets and partitions are written as exact integers. */
static void test_large_offsets(void **state) {
    mw_batch b;
    mw_source s = {"t", 2147483647, 9007199254740993LL};
    decode_at(state, &b, IT("c", "k", ",\"eventId\":\"e\""), &s);
    mw_plan p;
    plan_init(&p);
    add_batch(&p, &b);
    assert_int_equal(plan_merge(&p), 0);
    jsonw w;
    jsonw_init(&w);
    plan_rows_json(&p, &w);
    assert_non_null(strstr(w.buf, "\"part\":2147483647"));
    assert_non_null(strstr(w.buf, "\"off\":9007199254740993"));
    json_object_put(parse(&w));
    jsonw_free(&w);
    plan_free(&p);
    batch_free(&b);
}

/* ---- many items ---------------------------------------------------------------------- */

static void many(void **state, int n_items, int n_keys) {
    sb m = {0};
    for (int i = 0; i < n_items; i++) {
        char it[200];
        int key = i % n_keys;
        /* Key lengths vary; the ids of different keys share digits. */
        snprintf(it, sizeof it,
                 "%s{\"externalConversationId\":\"c%d\",\"externalCustomerId\":\"%d\","
                 "\"eventId\":\"e%d\",\"status\":\"s%d\"%s}",
                 i ? "," : "", key % 10, key / 10, i, i,
                 i < n_keys ? ",\"phoneNumber\":\"first\"" : "");
        sb_add(&m, it);
    }
    mw_batch b;
    decode_at(state, &b, m.p, &SRC);
    sb_free(&m);
    assert_int_equal(b.n_items, n_items);
    mw_plan p;
    plan_init(&p);
    add_batch(&p, &b);
    assert_int_equal(plan_merge(&p), 0);
    assert_int_equal(p.n_rows, n_keys);
    bool *seen = calloc((size_t)n_keys, sizeof *seen);
    for (int ri = 0; ri < n_keys; ri++) {
        const mw_row *r = &p.rows[ri];
        if (ri > 0) { /* key order: customer, then conversation, bytewise */
            const mw_row *q = &p.rows[ri - 1];
            char a[64], b2[64];
            snprintf(a, sizeof a, "%.*s\x01%.*s", (int)q->f[F_CUSTOMER].n, q->f[F_CUSTOMER].p,
                     (int)q->f[F_CONVERSATION].n, q->f[F_CONVERSATION].p);
            snprintf(b2, sizeof b2, "%.*s\x01%.*s", (int)r->f[F_CUSTOMER].n, r->f[F_CUSTOMER].p,
                     (int)r->f[F_CONVERSATION].n, r->f[F_CONVERSATION].p);
            assert_true(strcmp(a, b2) < 0);
        }
        char cid[32], conv[32];
        snprintf(cid, sizeof cid, "%.*s", (int)r->f[F_CUSTOMER].n, r->f[F_CUSTOMER].p);
        snprintf(conv, sizeof conv, "%.*s", (int)r->f[F_CONVERSATION].n, r->f[F_CONVERSATION].p);
        int k = atoi(cid) * 10 + atoi(conv + 1);
        assert_true(k >= 0 && k < n_keys && !seen[k]);
        seen[k] = true;
        int last = k + ((n_items - 1 - k) / n_keys) * n_keys; /* the key's last item */
        char want[32];
        snprintf(want, sizeof want, "c%d", k % 10);
        assert_int_equal(r->f[F_CONVERSATION].n, strlen(want));
        assert_memory_equal(r->f[F_CONVERSATION].p, want, strlen(want));
        snprintf(want, sizeof want, "%d", k / 10);
        assert_int_equal(r->f[F_CUSTOMER].n, strlen(want));
        assert_memory_equal(r->f[F_CUSTOMER].p, want, strlen(want));
        snprintf(want, sizeof want, "s%d", last);
        assert_int_equal(r->f[F_STATUS].n, strlen(want));
        assert_memory_equal(r->f[F_STATUS].p, want, strlen(want));
        assert_int_equal(r->last->item->index, last);
        assert_memory_equal(r->f[F_PHONE].p, "first", 5);
    }
    free(seen);
    json_object *rows = rows_json(&p), *items = items_json(&p);
    assert_int_equal(json_object_array_length(rows), (size_t)n_keys);
    assert_int_equal(json_object_array_length(items), (size_t)n_items);
    json_object_put(rows);
    json_object_put(items);
    plan_free(&p);
    batch_free(&b);
}

static void test_many_with_collisions(void **state) { many(state, 10000, 97); }
static void test_many_distinct(void **state) { many(state, 10000, 10000); }
static void test_many_one_key(void **state) { many(state, 10000, 1); }

/* ---- plan_items_json ----------------------------------------------------------------- */

static void test_items_json(void **state) {
    mw_batch b;
    decode_at(state, &b,
              IT("c", "k", ",\"eventId\":\"e0\",\"status\":\"a\",\"attributes\":"
                           "[{\"name\":\"x\",\"value\":\"1\"},{\"name\":\"y\",\"value\":null}]") ","
              IT("c", "k", ",\"eventId\":\"e1\",\"phoneNumber\":\"p\",\"status\":null") ","
              IT("d", "k", ",\"eventId\":\"e2\",\"attributes\":[]"),
              &SRC);
    mw_plan p;
    plan_init(&p);
    add_batch(&p, &b);
    /* The slow path works with or without a merge. */
    json_object *got = items_json(&p);
    static const char want[] =
        "[" ROW("c", "k", ",\"eid\":\"e0\",\"status\":\"a\",\"aset\":{\"x\":\"1\"},\"adel\":[\"y\"]", 0)
        "," ROW("c", "k", ",\"eid\":\"e1\",\"phone\":\"p\"", 1)
        "," ROW("d", "k", ",\"eid\":\"e2\",\"aset\":{}", 2) "]";
    expect_json("items before merge", got, want);
    json_object_put(got);
    assert_int_equal(plan_merge(&p), 0);
    got = items_json(&p);
    expect_json("items after merge", got, want);
    json_object_put(got);
    /* The merge did not change the items' own patches. */
    assert_false(b.items[1].has_attrs);
    assert_int_equal(b.items[0].n_attrs, 2);
    plan_free(&p);
    batch_free(&b);
}

/* Strings that need escaping come out as valid JSON holding the same text. */
static void test_json_escaping(void **state) {
    mw_batch b;
    decode_at(state, &b,
              IT("q\\\"uote", "back\\\\slash",
                 ",\"eventId\":\"ctl\\u0001\\u001f\\u007f\\b\\f\\n\\r\\t\","
                 "\"status\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 \\u2028 </script>\","
                 "\"attributes\":[{\"name\":\"n\\\"\\\\\\n\",\"value\":\"v\\\"\\u0002\"}]"),
              &SRC);
    mw_plan p;
    plan_init(&p);
    add_batch(&p, &b);
    assert_int_equal(plan_merge(&p), 0);
    json_object *docs[2] = {rows_json(&p), items_json(&p)};
    for (int d = 0; d < 2; d++) {
        json_object *r = json_object_array_get_idx(docs[d], 0), *v;
        static const struct {
            const char *key;
            const char *want;
        } fields[] = {
            {"conv", "q\"uote"},
            {"cid", "back\\slash"},
            {"eid", "ctl\x01\x1f\x7f\b\f\n\r\t"},
            {"status", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 \xe2\x80\xa8 </script>"},
        };
        for (size_t f = 0; f < N(fields); f++) {
            assert_true(json_object_object_get_ex(r, fields[f].key, &v));
            assert_string_equal(json_object_get_string(v), fields[f].want);
        }
        assert_true(json_object_object_get_ex(r, "aset", &v));
        json_object *av;
        assert_true(json_object_object_get_ex(v, "n\"\\\n", &av));
        assert_string_equal(json_object_get_string(av), "v\"\x02");
    }
    json_object_put(docs[0]);
    json_object_put(docs[1]);
    plan_free(&p);
    batch_free(&b);
}

/* ---- lifecycle ----------------------------------------------------------------------- */

static void test_empty_plan(void **state) {
    (void)state;
    mw_plan p;
    plan_init(&p);
    assert_int_equal(plan_merge(&p), 0);
    assert_int_equal(p.n_rows, 0);
    jsonw w;
    jsonw_init(&w);
    plan_rows_json(&p, &w);
    assert_string_equal(w.buf, "[]");
    jsonw_reset(&w);
    plan_items_json(&p, &w);
    assert_string_equal(w.buf, "[]");
    jsonw_free(&w);
    plan_free(&p);
    plan_free(&p); /* freeing twice is harmless: plan_free leaves an empty plan */
}

/* plan_reset empties the plan (rows and their patches too) and it can be filled again. */
static void test_reset_reuse(void **state) {
    mw_batch b1, b2;
    decode_at(state, &b1,
              IT("c", "k", ",\"eventId\":\"e0\",\"status\":\"old\",\"attributes\":"
                           "[{\"name\":\"a\",\"value\":\"1\"}]") ","
              IT("c2", "k", ",\"eventId\":\"e1\""),
              &SRC);
    decode_at(state, &b2,
              IT("c", "k", ",\"eventId\":\"n0\",\"phoneNumber\":\"p\",\"attributes\":"
                           "[{\"name\":\"b\",\"value\":\"2\"}]"),
              &SRC);
    mw_plan p;
    plan_init(&p);
    for (int round = 0; round < 3; round++) {
        add_batch(&p, &b1);
        assert_int_equal(plan_merge(&p), 0);
        assert_int_equal(p.n_rows, 2);
        plan_reset(&p);
        assert_int_equal(p.n_items, 0);
        assert_int_equal(p.n_rows, 0);

        add_batch(&p, &b2);
        assert_int_equal(plan_merge(&p), 0);
        json_object *got = rows_json(&p);
        /* Nothing of the first batch is left: no status, no attribute "a". */
        expect_json("after reset", got,
                    "[" ROW("c", "k", ",\"eid\":\"n0\",\"phone\":\"p\","
                                      "\"aset\":{\"b\":\"2\"}", 0) "]");
        json_object_put(got);
        got = items_json(&p);
        assert_int_equal(json_object_array_length(got), 1);
        json_object_put(got);
        plan_reset(&p);
    }
    /* Reset without a merge, and a reset of a reset plan. */
    add_batch(&p, &b1);
    plan_reset(&p);
    plan_reset(&p);
    assert_int_equal(plan_merge(&p), 0);
    assert_int_equal(p.n_rows, 0);
    plan_free(&p);
    batch_free(&b1);
    batch_free(&b2);
}

/* Composing a row's patch leaves the items' patches as they were, and gives the same result
 * after a second merge. */
static void test_patch_ownership(void **state) {
    mw_batch b;
    decode_at(state, &b,
              IT("c", "k", ",\"eventId\":\"e0\","
                           "\"attributes\":[{\"name\":\"a\",\"value\":\"1\"}]") ","
              IT("c", "k", ",\"eventId\":\"e1\","
                           "\"attributes\":[{\"name\":\"b\",\"value\":\"2\"}]"),
              &SRC);
    mw_plan p;
    plan_init(&p);
    add_batch(&p, &b);
    for (int round = 0; round < 2; round++) {
        assert_int_equal(plan_merge(&p), 0);
        assert_int_equal(p.n_rows, 1);
        assert_true(p.rows[0].has_attrs);
        jsonw w;
        jsonw_init(&w);
        plan_row_patch_json(&p, 0, &w);
        json_object *got = parse(&w);
        expect_json("row patch", got, "{\"a\":\"1\",\"b\":\"2\"}");
        json_object_put(got);
        jsonw_free(&w);
        /* Composing did not modify the items' patches. */
        assert_int_equal(b.items[0].n_attrs, 1);
        assert_int_equal(b.items[1].n_attrs, 1);
    }
    plan_free(&p);
    batch_free(&b);
}

/* Many names (past the small-patch path): composed by sorting, the last setting of each
 * name wins, across the items of a row and within one item. */
static void test_many_attribute_names(void **state) {
    sb items = {0}, want = {0};
    sb_add(&items, "{\"externalCustomerId\":\"c\",\"externalConversationId\":\"k\",\"attributes\":[");
    for (int i = 0; i < 20; i++) {
        char a[64];
        snprintf(a, sizeof a, "%s{\"name\":\"n%02d\",\"value\":\"a\"}", i ? "," : "", i);
        sb_add(&items, a);
    }
    sb_add(&items, ",{\"name\":\"n03\",\"value\":\"dup\"}]},"
                   "{\"externalCustomerId\":\"c\",\"externalConversationId\":\"k\",\"attributes\":["
                   "{\"name\":\"n05\",\"value\":null},{\"name\":\"n19\",\"value\":\"b\"},"
                   "{\"name\":\"n25\",\"value\":\"c\"}]}");
    sb_add(&want, "{");
    for (int i = 0; i < 20; i++) {
        char a[64];
        snprintf(a, sizeof a, "%s\"n%02d\":%s", i ? "," : "", i,
                 i == 3 ? "\"dup\"" : i == 5 ? "null" : i == 19 ? "\"b\"" : "\"a\"");
        sb_add(&want, a);
    }
    sb_add(&want, ",\"n25\":\"c\"}");
    mw_batch b;
    decode_at(state, &b, items.p, &SRC);
    mw_plan p;
    plan_init(&p);
    add_batch(&p, &b);
    assert_int_equal(plan_merge(&p), 0);
    assert_int_equal(p.n_rows, 1);
    jsonw w;
    jsonw_init(&w);
    plan_row_patch_json(&p, 0, &w);
    json_object *got = parse(&w);
    expect_json("row patch", got, want.p);
    json_object_put(got);
    jsonw_free(&w);
    /* The rows document: aset without the removed name, adel with it. */
    got = rows_json(&p);
    json_object *row = json_object_array_get_idx(got, 0), *aset, *adel;
    assert_true(json_object_object_get_ex(row, "aset", &aset));
    assert_true(json_object_object_get_ex(row, "adel", &adel));
    assert_int_equal(json_object_object_length(aset), 20);
    assert_int_equal(json_object_array_length(adel), 1);
    assert_string_equal(json_object_get_string(json_object_array_get_idx(adel, 0)), "n05");
    json_object_put(got);
    plan_free(&p);
    batch_free(&b);
    sb_free(&items);
    sb_free(&want);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_table),
        cmocka_unit_test(test_many_attribute_names),
        cmocka_unit_test(test_last_item_source),
        cmocka_unit_test(test_large_offsets),
        cmocka_unit_test(test_many_with_collisions),
        cmocka_unit_test(test_many_distinct),
        cmocka_unit_test(test_many_one_key),
        cmocka_unit_test(test_items_json),
        cmocka_unit_test(test_json_escaping),
        cmocka_unit_test(test_empty_plan),
        cmocka_unit_test(test_reset_reuse),
        cmocka_unit_test(test_patch_ownership),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
