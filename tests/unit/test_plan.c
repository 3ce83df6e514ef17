/*
 * Unit tests of worker/plan: grouping a transaction's items by key and writing them as
 * generations (generation g = the g-th item of every key with more than g items, each item
 * its own record, records in key order), the items document of the slow path, and plan
 * reuse (docs/contract.md §4: the state of applying the items one after the other).
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

/* The generations document (plan_rows_json). */
static json_object *gens_json(mw_plan *p) {
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

static json_object *doc_json(mw_plan *p, void (*write)(mw_plan *, jsonw *)) {
    jsonw w;
    jsonw_init(&w);
    write(p, &w);
    json_object *o = parse(&w);
    jsonw_free(&w);
    return o;
}

/* plan_isolated_json is plan_rows_json's generations, one after the other, flat. */
static void check_isolated(mw_plan *p, json_object *gens) {
    json_object *flat = json_object_new_array(), *iso = doc_json(p, plan_isolated_json);
    for (size_t g = 0; g < json_object_array_length(gens); g++) {
        json_object *gen = json_object_array_get_idx(gens, g);
        for (size_t r = 0; r < json_object_array_length(gen); r++)
            json_object_array_add(flat, json_object_get(json_object_array_get_idx(gen, r)));
    }
    expect_json("plan_isolated_json", iso, json_object_to_json_string(flat));
    json_object_put(flat);
    json_object_put(iso);
}

static const char *member_str(json_object *rec, const char *name, size_t *n) {
    json_object *v;
    assert_true(json_object_object_get_ex(rec, name, &v));
    assert_true(json_object_is_type(v, json_type_string));
    *n = (size_t)json_object_get_string_len(v);
    return json_object_get_string(v);
}

/* Bytewise order of (cid, conv), the order PostgreSQL must lock rows in. */
static int key_cmp(json_object *a, json_object *b) {
    static const char *const names[2] = {"cid", "conv"};
    for (int i = 0; i < 2; i++) {
        size_t na, nb;
        const char *pa = member_str(a, names[i], &na), *pb = member_str(b, names[i], &nb);
        int c = memcmp(pa, pb, na < nb ? na : nb);
        if (c) return c;
        if (na != nb) return na < nb ? -1 : 1;
    }
    return 0;
}

/* A map key for a record's (cid, conv): length-prefixed, so "ab"+"c" differs from "a"+"bc". */
static char *key_of(json_object *rec) {
    size_t na, nb;
    const char *a = member_str(rec, "cid", &na), *b = member_str(rec, "conv", &nb);
    char *k = malloc(na + nb + 32);
    assert_non_null(k);
    snprintf(k, na + nb + 32, "%zu:%s|%s", na, a, b);
    return k;
}

/* The invariants of the generations document, against the items document (each item as
 * its own record, in order): p->n_gens generations, none empty; within one, records in
 * strictly increasing key order (so no key twice); the records of each key, generation
 * after generation, are exactly that key's items in order, the j-th in generation j. */
static void check_generations(mw_plan *p, json_object *gens, json_object *items) {
    assert_true(json_object_is_type(gens, json_type_array));
    size_t n_gens = json_object_array_length(gens), total = 0;
    assert_int_equal(n_gens, (size_t)p->n_gens);
    json_object *by_key = json_object_new_object(); /* key -> records of the key, in order */
    for (size_t i = 0; i < json_object_array_length(items); i++) {
        json_object *rec = json_object_array_get_idx(items, i), *list;
        char *k = key_of(rec);
        if (!json_object_object_get_ex(by_key, k, &list)) {
            list = json_object_new_array();
            json_object_object_add(by_key, k, list);
        }
        json_object_array_add(list, json_object_get(rec));
        free(k);
    }
    assert_int_equal(json_object_object_length(by_key), p->n_rows);
    for (size_t g = 0; g < n_gens; g++) {
        json_object *gen = json_object_array_get_idx(gens, g), *list;
        assert_true(json_object_is_type(gen, json_type_array));
        size_t n = json_object_array_length(gen);
        assert_true(n > 0);
        total += n;
        for (size_t r = 0; r < n; r++) {
            json_object *rec = json_object_array_get_idx(gen, r);
            if (r > 0 && key_cmp(json_object_array_get_idx(gen, r - 1), rec) >= 0) {
                print_error("generation %zu: record %zu not in key order\n", g, r);
                fail();
            }
            char *k = key_of(rec);
            assert_true(json_object_object_get_ex(by_key, k, &list));
            free(k);
            if (g >= json_object_array_length(list) ||
                !json_object_equal(rec, json_object_array_get_idx(list, g))) {
                print_error("generation %zu holds %s, not its key's item %zu\n", g,
                            json_object_to_json_string(rec), g);
                fail();
            }
        }
    }
    assert_int_equal(total, json_object_array_length(items));
    json_object_put(by_key);
}

/* ---- generations, table-driven --------------------------------------------------------- */

/* Shorthand for items: c/k are the conversation and customer ids. A record ("R") of the
 * documents at SRC, item idx. */
#define IT(c, k, rest) \
    "{\"externalConversationId\":\"" c "\",\"externalCustomerId\":\"" k "\"" rest "}"
#define R(c, k, rest, idx) \
    "{\"conv\":\"" c "\",\"cid\":\"" k "\"" rest ",\"part\":3,\"off\":1234,\"idx\":" #idx "}"

static const struct {
    const char *name;
    const char *items; /* one message at SRC */
    const char *gens;  /* the expected plan_rows_json */
    int n_rows;        /* keys */
} gen_cases[] = {
    {"one item", IT("c", "k", ",\"eventId\":\"e0\",\"status\":\"s\""),
     "[[" R("c", "k", ",\"eid\":\"e0\",\"status\":\"s\"", 0) "]]", 1},
    {"every field", IT("c", "k", ",\"eventId\":\"e\",\"status\":\"s\",\"phoneNumber\":\"p\","
                                 "\"emailAddress\":\"m\",\"userId\":\"u\",\"addressCountry\":\"C\","
                                 "\"addressState\":\"S\",\"addressZipcode\":\"Z\""),
     "[[" R("c", "k", ",\"eid\":\"e\",\"status\":\"s\",\"phone\":\"p\",\"email\":\"m\","
                      "\"uid\":\"u\",\"country\":\"C\",\"state\":\"S\",\"zip\":\"Z\"", 0) "]]", 1},
    {"issue 9: a refusable item is not hidden behind the next one",
     IT("c", "k", ",\"eventId\":\"e0\",\"status\":\"closed\",\"phoneNumber\":\"+1555\"") ","
     IT("c", "k", ",\"eventId\":\"e1\",\"status\":\"open\""),
     "[[" R("c", "k", ",\"eid\":\"e0\",\"status\":\"closed\",\"phone\":\"+1555\"", 0) "],"
      "[" R("c", "k", ",\"eid\":\"e1\",\"status\":\"open\"", 1) "]]", 1},
    {"each item carries only its own fields (absent and null are not filled in)",
     IT("c", "k", ",\"eventId\":\"e0\",\"status\":\"a\",\"userId\":\"u\"") ","
     IT("c", "k", ",\"eventId\":\"e1\",\"status\":null,\"userId\":\"v\"") ","
     IT("c", "k", ",\"eventId\":\"e2\",\"userId\":null,\"addressZipcode\":null"),
     "[[" R("c", "k", ",\"eid\":\"e0\",\"status\":\"a\",\"uid\":\"u\"", 0) "],"
      "[" R("c", "k", ",\"eid\":\"e1\",\"uid\":\"v\"", 1) "],"
      "[" R("c", "k", ",\"eid\":\"e2\"", 2) "]]", 1},
    {"empty string is a value",
     IT("c", "k", ",\"eventId\":\"e0\",\"status\":\"a\"") ","
     IT("c", "k", ",\"eventId\":\"e1\",\"status\":\"\""),
     "[[" R("c", "k", ",\"eid\":\"e0\",\"status\":\"a\"", 0) "],"
      "[" R("c", "k", ",\"eid\":\"e1\",\"status\":\"\"", 1) "]]", 1},
    {"each item carries its own attributes patch, none composed across items",
     IT("c", "k", ",\"eventId\":\"e0\",\"attributes\":[{\"name\":\"a\",\"value\":\"1\"},"
                  "{\"name\":\"b\",\"value\":\"2\"},{\"name\":\"d\",\"value\":\"4\"}]") ","
     IT("c", "k", ",\"eventId\":\"e1\",\"attributes\":[{\"name\":\"b\",\"value\":null},"
                  "{\"name\":\"c\",\"value\":\"3\"}]") ","
     IT("c", "k", ",\"eventId\":\"e2\"") ","
     IT("c", "k", ",\"eventId\":\"e3\",\"attributes\":null") ","
     IT("c", "k", ",\"eventId\":\"e4\",\"attributes\":[{\"name\":\"a\",\"value\":\"9\"},"
                  "{\"name\":\"d\",\"value\":null},{\"name\":\"d\",\"value\":\"5\"}]"),
     "[[" R("c", "k", ",\"eid\":\"e0\",\"aset\":{\"a\":\"1\",\"b\":\"2\",\"d\":\"4\"}", 0) "],"
      "[" R("c", "k", ",\"eid\":\"e1\",\"aset\":{\"c\":\"3\"},\"adel\":[\"b\"]", 1) "],"
      "[" R("c", "k", ",\"eid\":\"e2\"", 2) "],"
      "[" R("c", "k", ",\"eid\":\"e3\"", 3) "],"
      "[" R("c", "k", ",\"eid\":\"e4\",\"aset\":{\"a\":\"9\",\"d\":\"5\"}", 4) "]]", 1},
    {"duplicate names within one item: the last wins (set, then remove)",
     IT("c", "k", ",\"eventId\":\"e0\",\"attributes\":[{\"name\":\"a\",\"value\":\"1\"},"
                  "{\"name\":\"b\",\"value\":\"2\"},{\"name\":\"a\",\"value\":null}]"),
     "[[" R("c", "k", ",\"eid\":\"e0\",\"aset\":{\"b\":\"2\"},\"adel\":[\"a\"]", 0) "]]", 1},
    {"duplicate names within one item: the last wins (remove, then set)",
     IT("c", "k", ",\"eventId\":\"e0\",\"attributes\":[{\"name\":\"a\",\"value\":null},"
                  "{\"name\":\"a\",\"value\":\"x\"},{\"name\":\"a\",\"value\":\"y\"}]"),
     "[[" R("c", "k", ",\"eid\":\"e0\",\"aset\":{\"a\":\"y\"}", 0) "]]", 1},
    {"null and absent attributes: no aset member; an attribute without value removes",
     IT("c", "k", ",\"eventId\":\"e0\",\"attributes\":null") ","
     IT("d", "k", ",\"eventId\":\"e1\"") ","
     IT("e", "k", ",\"eventId\":\"e2\",\"attributes\":[{\"name\":\"a\"}]"),
     "[[" R("c", "k", ",\"eid\":\"e0\"", 0) "," R("d", "k", ",\"eid\":\"e1\"", 1) ","
          R("e", "k", ",\"eid\":\"e2\",\"aset\":{},\"adel\":[\"a\"]", 2) "]]", 3},
    {"empty attributes: an empty patch",
     IT("c", "k", ",\"eventId\":\"e0\",\"attributes\":[]"),
     "[[" R("c", "k", ",\"eid\":\"e0\",\"aset\":{}", 0) "]]", 1},
    {"distinct keys: one generation, in key order (customer, then conversation)",
     IT("c1", "k1", ",\"eventId\":\"e0\",\"status\":\"a\"") ","
     IT("c1", "k2", ",\"eventId\":\"e1\",\"status\":\"b\"") ","
     IT("c2", "k1", ",\"eventId\":\"e2\",\"status\":\"c\"") ","
     IT("c0", "k3", ",\"eventId\":\"e3\"") ","
     IT("c9", "k0", ",\"eventId\":\"e4\""),
     "[[" R("c9", "k0", ",\"eid\":\"e4\"", 4) ","
          R("c1", "k1", ",\"eid\":\"e0\",\"status\":\"a\"", 0) ","
          R("c2", "k1", ",\"eid\":\"e2\",\"status\":\"c\"", 2) ","
          R("c1", "k2", ",\"eid\":\"e1\",\"status\":\"b\"", 1) ","
          R("c0", "k3", ",\"eid\":\"e3\"", 3) "]]", 5},
    {"a key repeated: its second item in the second generation, with the keys' order kept",
     IT("c1", "k1", ",\"eventId\":\"e0\",\"status\":\"a\"") ","
     IT("c1", "k2", ",\"eventId\":\"e1\",\"status\":\"b\"") ","
     IT("c2", "k1", ",\"eventId\":\"e2\",\"status\":\"c\"") ","
     IT("c1", "k1", ",\"eventId\":\"e3\",\"phoneNumber\":\"p\""),
     "[[" R("c1", "k1", ",\"eid\":\"e0\",\"status\":\"a\"", 0) ","
          R("c2", "k1", ",\"eid\":\"e2\",\"status\":\"c\"", 2) ","
          R("c1", "k2", ",\"eid\":\"e1\",\"status\":\"b\"", 1) "],"
      "[" R("c1", "k1", ",\"eid\":\"e3\",\"phone\":\"p\"", 3) "]]", 3},
    {"interleaved keys of different depths",
     IT("a", "k", ",\"eventId\":\"e0\"") "," IT("b", "k", ",\"eventId\":\"e1\"") ","
     IT("a", "k", ",\"eventId\":\"e2\"") "," IT("c", "k", ",\"eventId\":\"e3\"") ","
     IT("a", "k", ",\"eventId\":\"e4\"") "," IT("b", "k", ",\"eventId\":\"e5\""),
     "[[" R("a", "k", ",\"eid\":\"e0\"", 0) "," R("b", "k", ",\"eid\":\"e1\"", 1) ","
          R("c", "k", ",\"eid\":\"e3\"", 3) "],"
      "[" R("a", "k", ",\"eid\":\"e2\"", 2) "," R("b", "k", ",\"eid\":\"e5\"", 5) "],"
      "[" R("a", "k", ",\"eid\":\"e4\"", 4) "]]", 3},
    {"the g-th item of each key, wherever it stands in the stream",
     IT("x", "k", ",\"eventId\":\"e0\"") "," IT("y", "k", ",\"eventId\":\"e1\"") ","
     IT("y", "k", ",\"eventId\":\"e2\"") "," IT("y", "k", ",\"eventId\":\"e3\"") ","
     IT("x", "k", ",\"eventId\":\"e4\""),
     "[[" R("x", "k", ",\"eid\":\"e0\"", 0) "," R("y", "k", ",\"eid\":\"e1\"", 1) "],"
      "[" R("x", "k", ",\"eid\":\"e4\"", 4) "," R("y", "k", ",\"eid\":\"e2\"", 2) "],"
      "[" R("y", "k", ",\"eid\":\"e3\"", 3) "]]", 2},
    {"the boundary between the ids matters (ab+c vs a+bc)",
     IT("c", "ab", ",\"eventId\":\"e0\"") "," IT("bc", "a", ",\"eventId\":\"e1\""),
     "[[" R("bc", "a", ",\"eid\":\"e1\"", 1) "," R("c", "ab", ",\"eid\":\"e0\"", 0) "]]", 2},
    {"the two ids are not interchangeable",
     IT("x", "y", ",\"eventId\":\"e0\"") "," IT("y", "x", ",\"eventId\":\"e1\""),
     "[[" R("y", "x", ",\"eid\":\"e1\"", 1) "," R("x", "y", ",\"eid\":\"e0\"", 0) "]]", 2},
    {"exact strings: case",
     IT("c", "k", ",\"eventId\":\"e0\"") "," IT("c", "K", ",\"eventId\":\"e1\""),
     "[[" R("c", "K", ",\"eid\":\"e1\"", 1) "," R("c", "k", ",\"eid\":\"e0\"", 0) "]]", 2},
    {"exact strings: trailing space",
     IT("c", "k", ",\"eventId\":\"e0\"") "," IT("c ", "k", ",\"eventId\":\"e1\""),
     "[[" R("c", "k", ",\"eid\":\"e0\"", 0) "," R("c ", "k", ",\"eid\":\"e1\"", 1) "]]", 2},
    {"exact strings: NFC vs NFD",
     IT("c", "\xc3\xa9", ",\"eventId\":\"e0\"") "," IT("c", "e\xcc\x81", ",\"eventId\":\"e1\""),
     "[[" R("c", "e\xcc\x81", ",\"eid\":\"e1\"", 1) ","
          R("c", "\xc3\xa9", ",\"eid\":\"e0\"", 0) "]]", 2},
    {"the same key written with escapes is the same key",
     IT("c", "k\\u00e9", ",\"eventId\":\"e0\",\"status\":\"a\"") ","
     IT("\\u0063", "k\xc3\xa9", ",\"eventId\":\"e1\""),
     "[[" R("c", "k\xc3\xa9", ",\"eid\":\"e0\",\"status\":\"a\"", 0) "],"
      "[" R("c", "k\xc3\xa9", ",\"eid\":\"e1\"", 1) "]]", 1},
};

static void test_generations_table(void **state) {
    for (size_t i = 0; i < N(gen_cases); i++) {
        mw_batch b;
        decode_at(state, &b, gen_cases[i].items, &SRC);
        mw_plan p;
        plan_init(&p);
        add_batch(&p, &b);
        for (int round = 0; round < 2; round++) { /* merging and writing again: the same */
            assert_int_equal(plan_merge(&p), 0);
            assert_int_equal(p.n_rows, gen_cases[i].n_rows);
            json_object *got = gens_json(&p), *items = items_json(&p);
            if (gen_cases[i].gens[0]) expect_json(gen_cases[i].name, got, gen_cases[i].gens);
            check_generations(&p, got, items);
            check_isolated(&p, got);
            json_object_put(items);
            json_object *again = gens_json(&p);
            assert_true(json_object_equal(got, again));
            json_object_put(again);
            json_object_put(got);
        }
        plan_free(&p);
        batch_free(&b);
    }
}

/* The bytewise key order, spelled out (the table's invariants check it too). */
static void test_bytewise_key_order(void **state) {
    mw_batch b;
    decode_at(state, &b,
              IT("c", "\xc3\xa9", ",\"eventId\":\"e0\"") "," IT("c", "ab", ",\"eventId\":\"e1\"") ","
              IT("c", "a", ",\"eventId\":\"e2\"") "," IT("c", "B", ",\"eventId\":\"e3\"") ","
              IT("c", "z", ",\"eventId\":\"e4\"") "," IT("b", "a", ",\"eventId\":\"e5\""),
              &SRC);
    mw_plan p;
    plan_init(&p);
    add_batch(&p, &b);
    assert_int_equal(plan_merge(&p), 0);
    json_object *got = gens_json(&p);
    expect_json("bytewise", got,
                "[[" R("c", "B", ",\"eid\":\"e3\"", 3) "," R("b", "a", ",\"eid\":\"e5\"", 5) ","
                     R("c", "a", ",\"eid\":\"e2\"", 2) "," R("c", "ab", ",\"eid\":\"e1\"", 1) ","
                     R("c", "z", ",\"eid\":\"e4\"", 4) ","
                     R("c", "\xc3\xa9", ",\"eid\":\"e0\"", 0) "]]");
    json_object_put(got);
    plan_free(&p);
    batch_free(&b);
}

/* Each record keeps its own item's eventId (generated ones too) and source, across
 * messages and partitions of one transaction. */
static void test_records_keep_their_source(void **state) {
    mw_batch b1, b2;
    mw_source s1 = {"t", 0, 10}, s2 = {"t", 5, 11};
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
    assert_int_equal(p.n_gens, 2);
    assert_int_equal(p.rows[0].n, 2);
    assert_int_equal(p.rows[0].first, 0);
    assert_int_equal(p.rows[0].last_i, 3);
    assert_int_equal(p.items[0].next_in_row, 3);
    assert_int_equal(p.items[3].next_in_row, -1);
    char g1[MW_UUID_STR_LEN + 1], g2[MW_UUID_STR_LEN + 1], g3[MW_UUID_STR_LEN + 1];
    batch_event_id(g1, &s1, 1);
    batch_event_id(g2, &s2, 0);
    batch_event_id(g3, &s2, 1);
    char want[2048];
    snprintf(want, sizeof want,
             "[[{\"conv\":\"c\",\"cid\":\"k\",\"eid\":\"given\",\"status\":\"a\",\"part\":0,"
             "\"off\":10,\"idx\":0},"
             "{\"conv\":\"other\",\"cid\":\"k\",\"eid\":\"%s\",\"status\":\"x\",\"part\":0,"
             "\"off\":10,\"idx\":1},"
             "{\"conv\":\"z\",\"cid\":\"k\",\"eid\":\"%s\",\"part\":5,\"off\":11,\"idx\":0}],"
             "[{\"conv\":\"c\",\"cid\":\"k\",\"eid\":\"%s\",\"phone\":\"p\",\"part\":5,"
             "\"off\":11,\"idx\":1}]]",
             g1, g2, g3);
    json_object *got = gens_json(&p);
    expect_json("sources", got, want);
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

/* n_items items over n_keys keys (item i has key i % n_keys), plus n_deep more items of
 * one more key at the end: checks the generations' shape and every record. */
static void many(void **state, int n_items, int n_keys, int n_deep) {
    sb m = {0};
    for (int i = 0; i < n_items + n_deep; i++) {
        char it[200];
        int key = i < n_items ? i % n_keys : -1;
        /* Key lengths vary; the ids of different keys share digits. */
        if (key >= 0)
            snprintf(it, sizeof it,
                     "%s{\"externalConversationId\":\"c%d\",\"externalCustomerId\":\"%d\","
                     "\"eventId\":\"e%d\",\"status\":\"s%d\"}",
                     i ? "," : "", key % 10, key / 10, i, i);
        else
            snprintf(it, sizeof it,
                     "%s{\"externalConversationId\":\"deep\",\"externalCustomerId\":\"5\","
                     "\"eventId\":\"e%d\",\"status\":\"s%d\"}", i ? "," : "", i, i);
        sb_add(&m, it);
    }
    mw_batch b;
    decode_at(state, &b, m.p, &SRC);
    sb_free(&m);
    assert_int_equal(b.n_items, n_items + n_deep);
    mw_plan p;
    plan_init(&p);
    add_batch(&p, &b);
    assert_int_equal(plan_merge(&p), 0);
    int depth = n_items ? (n_items + n_keys - 1) / n_keys : 0;
    assert_int_equal(p.n_rows, (n_items < n_keys ? n_items : n_keys) + (n_deep > 0));
    assert_int_equal(p.n_gens, depth > n_deep ? depth : n_deep);
    json_object *gens = gens_json(&p), *items = items_json(&p);
    assert_int_equal(json_object_array_length(items), (size_t)(n_items + n_deep));
    check_generations(&p, gens, items);
    check_isolated(&p, gens);
    /* plan_merged_json: one record per key, in key order, with the key's last item. */
    json_object *merged = doc_json(&p, plan_merged_json);
    assert_int_equal(json_object_array_length(merged), (size_t)p.n_rows);
    for (size_t r = 0; r < json_object_array_length(merged); r++) {
        json_object *rec = json_object_array_get_idx(merged, r), *v;
        if (r > 0) assert_true(key_cmp(json_object_array_get_idx(merged, r - 1), rec) < 0);
        size_t n;
        const char *cid = member_str(rec, "cid", &n), *conv = member_str(rec, "conv", &n);
        int last;
        if (strcmp(conv, "deep") == 0) {
            last = n_items + n_deep - 1;
        } else {
            int k = atoi(cid) * 10 + atoi(conv + 1);
            last = k + (n_items - 1 - k) / n_keys * n_keys;
        }
        assert_true(json_object_object_get_ex(rec, "idx", &v));
        assert_int_equal(json_object_get_int(v), last);
    }
    json_object_put(merged);
    /* Generation g: the g-th item of every key with more than g items, so the keys
     * 0..n_keys-1 have item k + g * n_keys, and the deep key its g-th item. */
    for (int g = 0; g < p.n_gens; g++) {
        json_object *gen = json_object_array_get_idx(gens, (size_t)g);
        int want = 0;
        for (int k = 0; k < n_keys; k++) want += k + g * n_keys < n_items;
        want += g < n_deep;
        assert_int_equal(json_object_array_length(gen), (size_t)want);
        for (size_t r = 0; r < json_object_array_length(gen); r++) {
            json_object *rec = json_object_array_get_idx(gen, r), *v;
            size_t ncid, nconv;
            const char *cid = member_str(rec, "cid", &ncid), *conv = member_str(rec, "conv", &nconv);
            (void)ncid;
            (void)nconv;
            int item = strcmp(conv, "deep") == 0 ? n_items + g
                                                 : atoi(cid) * 10 + atoi(conv + 1) + g * n_keys;
            char s[32];
            snprintf(s, sizeof s, "s%d", item);
            assert_true(json_object_object_get_ex(rec, "status", &v));
            assert_string_equal(json_object_get_string(v), s);
            assert_true(json_object_object_get_ex(rec, "idx", &v));
            assert_int_equal(json_object_get_int(v), item);
        }
    }
    json_object_put(gens);
    json_object_put(items);
    plan_free(&p);
    batch_free(&b);
}

static void test_many_with_collisions(void **state) { many(state, 10000, 97, 0); }
/* Many distinct keys: one generation, one statement. */
static void test_many_distinct(void **state) { many(state, 10000, 10000, 0); }
/* One key 10,000 times: 10,000 generations of one record. */
static void test_many_one_key(void **state) { many(state, 10000, 1, 0); }
/* One deep key among many: the generations after the first hold it alone, and writing
 * them does not scan the finished keys again (O(items), not O(keys x generations)). */
static void test_one_deep_key_among_many(void **state) { many(state, 10000, 10000, 10000); }

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
        "[" R("c", "k", ",\"eid\":\"e0\",\"status\":\"a\",\"aset\":{\"x\":\"1\"},\"adel\":[\"y\"]", 0)
        "," R("c", "k", ",\"eid\":\"e1\",\"phone\":\"p\"", 1)
        "," R("d", "k", ",\"eid\":\"e2\",\"aset\":{}", 2) "]";
    expect_json("items before merge", got, want);
    json_object_put(got);
    assert_int_equal(plan_merge(&p), 0);
    got = items_json(&p);
    expect_json("items after merge", got, want);
    json_object_put(got);
    /* Writing the documents did not change the items' own patches. */
    got = gens_json(&p);
    json_object_put(got);
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
    json_object *gens = gens_json(&p), *items = items_json(&p);
    json_object *recs[2] = {json_object_array_get_idx(json_object_array_get_idx(gens, 0), 0),
                            json_object_array_get_idx(items, 0)};
    for (int d = 0; d < 2; d++) {
        json_object *r = recs[d], *v;
        assert_non_null(r);
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
    json_object_put(gens);
    json_object_put(items);
    plan_free(&p);
    batch_free(&b);
}

/* ---- plan_merged_json ----------------------------------------------------------------- */

/* One record per key composing its items in order (schema 4, for a plain table). */
static const struct {
    const char *name;
    const char *items; /* one message at SRC */
    const char *merged;
} merged_cases[] = {
    {"one item is its own record", IT("c", "k", ",\"eventId\":\"e0\",\"status\":\"s\""),
     "[" R("c", "k", ",\"eid\":\"e0\",\"status\":\"s\"", 0) "]"},
    {"each field from the last item that gives it; eventId and source of the last item",
     IT("c", "k", ",\"eventId\":\"e0\",\"status\":\"a\",\"userId\":\"u\"") ","
     IT("c", "k", ",\"eventId\":\"e1\",\"status\":null,\"userId\":\"v\"") ","
     IT("c", "k", ",\"eventId\":\"e2\",\"userId\":null,\"addressZipcode\":null"),
     "[" R("c", "k", ",\"eid\":\"e2\",\"status\":\"a\",\"uid\":\"v\"", 2) "]"},
    {"attribute patches compose: a later setting or removal of a name wins",
     IT("c", "k", ",\"eventId\":\"e0\",\"attributes\":[{\"name\":\"a\",\"value\":\"1\"},"
                  "{\"name\":\"b\",\"value\":\"2\"},{\"name\":\"d\",\"value\":\"4\"}]") ","
     IT("c", "k", ",\"eventId\":\"e1\",\"attributes\":[{\"name\":\"b\",\"value\":null},"
                  "{\"name\":\"c\",\"value\":\"3\"}]") ","
     IT("c", "k", ",\"eventId\":\"e2\"") ","
     IT("c", "k", ",\"eventId\":\"e3\",\"attributes\":null") ","
     IT("c", "k", ",\"eventId\":\"e4\",\"attributes\":[{\"name\":\"a\",\"value\":\"9\"},"
                  "{\"name\":\"d\",\"value\":null},{\"name\":\"d\",\"value\":\"5\"}]"),
     "[" R("c", "k", ",\"eid\":\"e4\",\"aset\":{\"a\":\"9\",\"c\":\"3\",\"d\":\"5\"},"
                     "\"adel\":[\"b\"]", 4) "]"},
    {"set then removed: only the removal",
     IT("c", "k", ",\"eventId\":\"e0\",\"attributes\":[{\"name\":\"a\",\"value\":\"x\"}]") ","
     IT("c", "k", ",\"eventId\":\"e1\",\"attributes\":[{\"name\":\"a\",\"value\":null}]"),
     "[" R("c", "k", ",\"eid\":\"e1\",\"aset\":{},\"adel\":[\"a\"]", 1) "]"},
    {"removed then set: only the setting",
     IT("c", "k", ",\"eventId\":\"e0\",\"attributes\":[{\"name\":\"a\",\"value\":null}]") ","
     IT("c", "k", ",\"eventId\":\"e1\",\"attributes\":[{\"name\":\"a\",\"value\":\"x\"}]"),
     "[" R("c", "k", ",\"eid\":\"e1\",\"aset\":{\"a\":\"x\"}", 1) "]"},
    {"no item with attributes: no aset (the stored map is kept, a new row has none)",
     IT("c", "k", ",\"eventId\":\"e0\"") "," IT("c", "k", ",\"eventId\":\"e1\",\"attributes\":null"),
     "[" R("c", "k", ",\"eid\":\"e1\"", 1) "]"},
    {"an empty attributes array is a patch: aset {} (a new row gets an empty map)",
     IT("c", "k", ",\"eventId\":\"e0\"") "," IT("c", "k", ",\"eventId\":\"e1\",\"attributes\":[]"),
     "[" R("c", "k", ",\"eid\":\"e1\",\"aset\":{}", 1) "]"},
    {"keys in bytewise order, each with its own last item",
     IT("c", "kb", ",\"eventId\":\"e0\",\"status\":\"x\"") ","
     IT("c", "ka", ",\"eventId\":\"e1\"") ","
     IT("c", "kb", ",\"eventId\":\"e2\",\"phoneNumber\":\"p\""),
     "[" R("c", "ka", ",\"eid\":\"e1\"", 1) ","
         R("c", "kb", ",\"eid\":\"e2\",\"status\":\"x\",\"phone\":\"p\"", 2) "]"},
};

static void test_merged_table(void **state) {
    for (size_t i = 0; i < N(merged_cases); i++) {
        mw_batch b;
        decode_at(state, &b, merged_cases[i].items, &SRC);
        mw_plan p;
        plan_init(&p);
        add_batch(&p, &b);
        assert_int_equal(plan_merge(&p), 0);
        json_object *got = doc_json(&p, plan_merged_json);
        expect_json(merged_cases[i].name, got, merged_cases[i].merged);
        json_object_put(got);
        plan_free(&p);
        batch_free(&b);
    }
}

/* ---- lifecycle ----------------------------------------------------------------------- */

static void test_empty_plan(void **state) {
    (void)state;
    mw_plan p;
    plan_init(&p);
    jsonw w;
    jsonw_init(&w);
    plan_rows_json(&p, &w); /* before any merge: no generation */
    assert_string_equal(w.buf, "[]");
    assert_int_equal(plan_merge(&p), 0);
    assert_int_equal(p.n_rows, 0);
    assert_int_equal(p.n_gens, 0);
    jsonw_reset(&w);
    plan_rows_json(&p, &w);
    assert_string_equal(w.buf, "[]");
    jsonw_reset(&w);
    plan_items_json(&p, &w);
    assert_string_equal(w.buf, "[]");
    jsonw_free(&w);
    plan_free(&p);
    plan_free(&p); /* freeing twice is harmless: plan_free leaves an empty plan */
}

/* plan_reset empties the plan (rows and generations too) and it can be filled again. */
static void test_reset_reuse(void **state) {
    mw_batch b1, b2;
    decode_at(state, &b1,
              IT("c", "k", ",\"eventId\":\"e0\",\"status\":\"old\",\"attributes\":"
                           "[{\"name\":\"a\",\"value\":\"1\"}]") ","
              IT("c2", "k", ",\"eventId\":\"e1\"") ","
              IT("c", "k", ",\"eventId\":\"e2\""),
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
        assert_int_equal(p.n_gens, 2);
        plan_reset(&p);
        assert_int_equal(p.n_items, 0);
        assert_int_equal(p.n_rows, 0);
        assert_int_equal(p.n_gens, 0);

        add_batch(&p, &b2);
        assert_int_equal(plan_merge(&p), 0);
        json_object *got = gens_json(&p);
        /* Nothing of the first batch is left: no status, no attribute "a", one generation. */
        expect_json("after reset", got,
                    "[[" R("c", "k", ",\"eid\":\"n0\",\"phone\":\"p\","
                                     "\"aset\":{\"b\":\"2\"}", 0) "]]");
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
    jsonw w;
    jsonw_init(&w);
    plan_rows_json(&p, &w);
    assert_string_equal(w.buf, "[]");
    jsonw_free(&w);
    plan_free(&p);
    batch_free(&b1);
    batch_free(&b2);
}

/* Writing the patches leaves the items' patches as they were, and writing again (or after
 * a second merge) gives the same documents. */
static void test_patch_ownership(void **state) {
    mw_batch b;
    decode_at(state, &b,
              IT("c", "k", ",\"eventId\":\"e0\","
                           "\"attributes\":[{\"name\":\"a\",\"value\":\"1\"},"
                           "{\"name\":\"a\",\"value\":\"2\"}]") ","
              IT("c", "k", ",\"eventId\":\"e1\","
                           "\"attributes\":[{\"name\":\"b\",\"value\":\"2\"}]"),
              &SRC);
    mw_plan p;
    plan_init(&p);
    add_batch(&p, &b);
    for (int round = 0; round < 2; round++) {
        assert_int_equal(plan_merge(&p), 0);
        assert_int_equal(p.n_rows, 1);
        json_object *got = gens_json(&p);
        expect_json("patches", got,
                    "[[" R("c", "k", ",\"eid\":\"e0\",\"aset\":{\"a\":\"2\"}", 0) "],"
                     "[" R("c", "k", ",\"eid\":\"e1\",\"aset\":{\"b\":\"2\"}", 1) "]]");
        json_object_put(got);
        /* Composing did not modify the items' patches. */
        assert_int_equal(b.items[0].n_attrs, 2);
        assert_int_equal(b.items[1].n_attrs, 1);
        assert_memory_equal(b.items[0].attrs[0].value.p, "1", 1);
    }
    plan_free(&p);
    batch_free(&b);
}

/* Many names in one item (past the small-patch path): composed by sorting, the last setting
 * of each name within the item wins; the next item of the key is its own record. */
static void test_many_attribute_names(void **state) {
    sb items = {0}, want = {0};
    sb_add(&items, "{\"externalCustomerId\":\"c\",\"externalConversationId\":\"k\",\"attributes\":[");
    for (int i = 0; i < 20; i++) {
        char a[64];
        snprintf(a, sizeof a, "%s{\"name\":\"n%02d\",\"value\":\"a\"}", i ? "," : "", i);
        sb_add(&items, a);
    }
    sb_add(&items, ",{\"name\":\"n03\",\"value\":\"dup\"},{\"name\":\"n05\",\"value\":null},"
                   "{\"name\":\"n19\",\"value\":\"b\"},{\"name\":\"n07\",\"value\":null},"
                   "{\"name\":\"n07\",\"value\":\"back\"}]},"
                   "{\"externalCustomerId\":\"c\",\"externalConversationId\":\"k\",\"attributes\":["
                   "{\"name\":\"n05\",\"value\":\"c\"},{\"name\":\"n25\",\"value\":\"d\"}]}");
    sb_add(&want, "{");
    for (int i = 0; i < 20; i++) {
        if (i == 5) continue;
        char a[64];
        snprintf(a, sizeof a, "%s\"n%02d\":%s", i ? "," : "", i,
                 i == 3 ? "\"dup\"" : i == 19 ? "\"b\"" : i == 7 ? "\"back\"" : "\"a\"");
        sb_add(&want, a);
    }
    sb_add(&want, "}");
    mw_batch b;
    decode_at(state, &b, items.p, &SRC);
    mw_plan p;
    plan_init(&p);
    add_batch(&p, &b);
    assert_int_equal(plan_merge(&p), 0);
    assert_int_equal(p.n_rows, 1);
    assert_int_equal(p.n_gens, 2);
    json_object *got = gens_json(&p);
    json_object *rec = json_object_array_get_idx(json_object_array_get_idx(got, 0), 0);
    json_object *aset, *adel;
    assert_true(json_object_object_get_ex(rec, "aset", &aset));
    expect_json("first item's aset", aset, want.p);
    assert_true(json_object_object_get_ex(rec, "adel", &adel));
    expect_json("first item's adel", adel, "[\"n05\"]");
    rec = json_object_array_get_idx(json_object_array_get_idx(got, 1), 0);
    assert_true(json_object_object_get_ex(rec, "aset", &aset));
    expect_json("second item's aset", aset, "{\"n05\":\"c\",\"n25\":\"d\"}");
    assert_false(json_object_object_get_ex(rec, "adel", &adel));
    json_object_put(got);
    plan_free(&p);
    batch_free(&b);
    sb_free(&items);
    sb_free(&want);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generations_table),
        cmocka_unit_test(test_bytewise_key_order),
        cmocka_unit_test(test_many_attribute_names),
        cmocka_unit_test(test_records_keep_their_source),
        cmocka_unit_test(test_large_offsets),
        cmocka_unit_test(test_many_with_collisions),
        cmocka_unit_test(test_many_distinct),
        cmocka_unit_test(test_many_one_key),
        cmocka_unit_test(test_one_deep_key_among_many),
        cmocka_unit_test(test_items_json),
        cmocka_unit_test(test_merged_table),
        cmocka_unit_test(test_json_escaping),
        cmocka_unit_test(test_empty_plan),
        cmocka_unit_test(test_reset_reuse),
        cmocka_unit_test(test_patch_ownership),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
