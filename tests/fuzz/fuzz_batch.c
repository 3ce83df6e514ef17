/*
 * fuzz_batch: a libFuzzer target on the decode-and-validate entry point (batch_decode) and
 * on everything that consumes its output (plan_*, result_*). Built and run by build.sh and
 * run.sh beside this file, under AddressSanitizer + UndefinedBehaviorSanitizer.
 *
 * Each input is one Kafka message value. Besides memory errors and undefined behaviour,
 * the target aborts when one of these invariants breaks:
 *   - batch_decode returns 0 and fills the batch; decoding twice gives the same response
 *     (pure, deterministic); the batch keeps no pointer into the input (the input is a
 *     copy freed before the batch is looked at);
 *   - batch_decode agrees with a reference decoder built on json-c's tree (ref_decode.c,
 *     the worker's decoder before it walked the text itself): the same bad request, the
 *     same items, errors, field strings and attributes patches;
 *   - the gate (empty, UTF-8, strict JSON) agrees with the reference both ways: what it
 *     refuses, the reference refuses for the same reason (UTF-8 by an independent check,
 *     with the same byte offset); what json-c's strict mode accepts where it is really
 *     strict (no single quotes, NaN/Infinity, leading zeros, "-.1", "1." or raw control
 *     characters) passes the gate unless it nests deeper than 64; what passes the gate
 *     json-c accepts.
 *     (Found here: json-c counted nesting one level deeper than jsoncheck;
 *     corpus/depth-64-scalar is the regression seed.)
 *   - a bad request starts with "FAIL_BAD_REQUEST: ERROR: " and has no items; an item
 *     error starts with "FAIL_BAD_PARAMS: ERROR: "; invalid_count counts the items with an
 *     error; every item has its eventId (given, or the generated one of its index);
 *   - valid items: required fields present and not blank, every string valid UTF-8, free
 *     of NUL and within its maximum length in code points; attributes names 1-256 and
 *     values up to 4096 code points;
 *   - plan_items_json is a strict JSON array of every valid item's own record, in order;
 *     plan_rows_json a strict JSON array of plan.n_gens generations, generation g holding
 *     the g-th record of every key with more than g items, in key order (also when the
 *     batch is added twice: two offsets); plan_merged_json one record per key,
 *     plan_isolated_json one per valid item;
 *   - result_message (every item, or the bad request's one result) and result_response are
 *     strict JSON objects, valid UTF-8, whose strings round-trip the batch's bytes.
 */
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "jsoncheck.h"
#include "jsonw.h"
#include "plan.h"
#include "ref_decode.h"
#include "result.h"
#include "utf8.h"

#define MAX_ITEMS 1000
#define JSON_MAX_DEPTH 64 /* worker/batch.c's */
#define ATTR_NAME_MAX 256
#define ATTR_VALUE_MAX 4096
#define BAD_REQUEST "FAIL_BAD_REQUEST: ERROR: "
#define BAD_PARAMS "FAIL_BAD_PARAMS: ERROR: "

/* The record keys of the upsert documents (worker/plan.c, customer_metadata_merge). */
static const char *const doc_keys[F_COUNT] = {
    [F_CONVERSATION] = "conv", [F_CUSTOMER] = "cid", [F_EVENT] = "eid",
    [F_STATUS] = "status", [F_PHONE] = "phone", [F_EMAIL] = "email", [F_USER] = "uid",
    [F_COUNTRY] = "country", [F_STATE] = "state", [F_ZIP] = "zip",
};

static const mw_source SRC = {"customer-metadata.batches", 3, 4242};

static json_tokener *check_tok;  /* parses the documents written back */
static mw_plan plan;             /* reused across inputs, like the worker's */
static jsonw w;

#define FUZZ_NAME "fuzz_batch"
#include "fuzz_check.h"

static bool starts_with(const char *s, const char *prefix) {
    return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    check_tok = json_tokener_new_ex(JSON_MAX_DEPTH);
    if (!check_tok) abort();
    json_tokener_set_flags(check_tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    plan_init(&plan);
    jsonw_init(&w);
    return 0;
}

/* ---- the documents written back -------------------------------------------------------- */

/* Parses a written document: strict JSON (by jsoncheck and by json-c), valid UTF-8, of the
 * expected type. Returns the tree (the caller puts it). */
static json_object *parse_back(const jsonw *doc, json_type type, const char *what) {
    CHECK(!doc->oom, "%s: writer ran out of memory", what);
    CHECK(doc->buf && doc->len > 0, "%s: empty document", what);
    size_t bad = 0;
    CHECK(utf8_valid(doc->buf, doc->len, &bad), "%s: invalid UTF-8 at byte %zu: %s", what, bad,
          doc->buf);
    const char *why = NULL;
    size_t at = 0;
    CHECK(jsoncheck_valid(doc->buf, doc->len, JSON_MAX_DEPTH, &why, &at),
          "%s: not strict JSON (%s at byte %zu): %s", what, why, at, doc->buf);
    CHECK(doc->len < INT32_MAX, "%s: too long", what);
    json_tokener_reset(check_tok);
    json_object *o = json_tokener_parse_ex(check_tok, doc->buf, (int)doc->len);
    enum json_tokener_error e = json_tokener_get_error(check_tok);
    CHECK(o && e == json_tokener_success, "%s: json-c refuses it (%s): %s", what,
          json_tokener_error_desc(e), doc->buf);
    CHECK(json_tokener_get_parse_end(check_tok) == doc->len, "%s: data after the document: %s",
          what, doc->buf);
    CHECK(json_object_is_type(o, type), "%s: not a JSON %s: %s", what, json_type_to_name(type),
          doc->buf);
    return o;
}

static json_object *member(json_object *o, const char *key) {
    json_object *v = NULL;
    return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

/* True when v is the JSON string p[0..n) (p == NULL: v is null). */
static bool str_is(json_object *v, const char *p, size_t n) {
    if (!p) return v == NULL;
    return json_object_is_type(v, json_type_string) &&
           (size_t)json_object_get_string_len(v) == n &&
           memcmp(json_object_get_string(v), p, n) == 0;
}

static bool int_is(json_object *v, int64_t x) {
    return json_object_is_type(v, json_type_int) && json_object_get_int64(v) == x;
}

/* ---- the batch itself ------------------------------------------------------------------ */

static void check_string(const char *what, int i, const char *p, size_t n, size_t max) {
    CHECK(p != NULL, "item %d: %s not set", i, what);
    CHECK(memchr(p, '\0', n) == NULL, "item %d: %s contains NUL", i, what);
    size_t bad = 0;
    CHECK(utf8_valid(p, n, &bad), "item %d: %s is not valid UTF-8 (byte %zu)", i, what, bad);
    CHECK(utf8_count(p, n) <= max, "item %d: %s has %zu code points, max %zu", i, what,
          utf8_count(p, n), max);
}

static void check_batch(const mw_batch *b) {
    char id[MW_UUID_STR_LEN + 1];
    batch_event_id(id, &SRC, 0);
    /* Generated only for a bad request (its one result needs it). */
    if (b->bad_request)
        CHECK(strcmp(b->bad_event_id, id) == 0, "bad_event_id %s, expected %s", b->bad_event_id, id);
    CHECK(b->src.topic == SRC.topic && b->src.partition == SRC.partition &&
              b->src.offset == SRC.offset, "source not kept");
    if (b->bad_request) {
        CHECK(starts_with(b->bad_request, BAD_REQUEST), "bad_request: %s", b->bad_request);
        CHECK(strlen(b->bad_request) > strlen(BAD_REQUEST), "bad_request without a reason");
        CHECK(b->n_items == 0 && b->items == NULL && b->invalid_count == 0,
              "bad request with %d items, %d invalid", b->n_items, b->invalid_count);
        return;
    }
    CHECK(b->n_items >= 1 && b->n_items <= MAX_ITEMS, "n_items %d", b->n_items);
    CHECK(b->items != NULL, "items NULL");
    int invalid = 0;
    for (int i = 0; i < b->n_items; i++) {
        const mw_item *it = &b->items[i];
        CHECK(it->index == i, "item %d has index %d", i, it->index);
        batch_event_id(id, &SRC, i);
        /* Generated only for items without a usable eventId of their own. */
        if (it->f[F_EVENT].p == it->gen_event_id)
            CHECK(strcmp(it->gen_event_id, id) == 0, "item %d: generated eventId %s, expected %s",
                  i, it->gen_event_id, id);
        CHECK(it->f[F_EVENT].p != NULL && it->f[F_EVENT].n > 0, "item %d: no eventId", i);
        if (it->f[F_EVENT].p == it->gen_event_id)
            CHECK(it->f[F_EVENT].n == MW_UUID_STR_LEN, "item %d: generated eventId length %zu",
                  i, it->f[F_EVENT].n);
        else
            check_string("eventId", i, it->f[F_EVENT].p, it->f[F_EVENT].n,
                         batch_fields[F_EVENT].max_len);
        CHECK(!utf8_blank(it->f[F_EVENT].p, it->f[F_EVENT].n), "item %d: blank eventId", i);
        if (it->error) {
            invalid++;
            CHECK(starts_with(it->error, BAD_PARAMS), "item %d: error %s", i, it->error);
            CHECK(strlen(it->error) > strlen(BAD_PARAMS), "item %d: error without a reason", i);
            CHECK(!it->has_attrs && it->n_attrs == 0, "item %d: invalid, with an attributes patch", i);
            continue;
        }
        for (int f = 0; f < F_COUNT; f++) {
            const mw_field_def *d = &batch_fields[f];
            if (!it->f[f].p) {
                CHECK(!d->required, "item %d: valid without %s", i, d->name);
                continue;
            }
            if (f == F_EVENT && it->f[f].p == it->gen_event_id) continue;
            check_string(d->name, i, it->f[f].p, it->f[f].n, d->max_len);
            if (d->required)
                CHECK(!utf8_blank(it->f[f].p, it->f[f].n), "item %d: blank %s", i, d->name);
        }
        CHECK(it->has_attrs || it->n_attrs == 0, "item %d: attributes without a patch", i);
        for (int a = 0; a < it->n_attrs; a++) {
            const mw_attr *at = &it->attrs[a];
            CHECK(at->name.n > 0, "item %d: empty attribute name", i);
            check_string("attribute name", i, at->name.p, at->name.n, ATTR_NAME_MAX);
            if (at->value.p)
                check_string("attribute value", i, at->value.p, at->value.n, ATTR_VALUE_MAX);
        }
    }
    CHECK(invalid == b->invalid_count, "invalid_count %d, items with an error %d",
          b->invalid_count, invalid);
}

/* ---- plan: the documents against a model of the merge ------------------------------------ */

/* The expected record of one item on its own. */
static json_object *item_record(const mw_item *it, int32_t partition, int64_t offset) {
    json_object *r = json_object_new_object();
    for (int f = 0; f < F_COUNT; f++)
        if (it->f[f].p)
            json_object_object_add(r, doc_keys[f],
                                   json_object_new_string_len(it->f[f].p, (int)it->f[f].n));
    if (it->has_attrs) json_object_object_add(r, "attrs", ref_patch_of(it));
    json_object_object_add(r, "part", json_object_new_int64(partition));
    json_object_object_add(r, "off", json_object_new_int64(offset));
    json_object_object_add(r, "idx", json_object_new_int64(it->index));
    return r;
}

/* The row key: customer, a 0xff byte (never in UTF-8), conversation. */
static char *row_key(const char *cid, size_t cn, const char *conv, size_t vn) {
    char *k = malloc(cn + vn + 2);
    if (!k) abort();
    memcpy(k, cid, cn);
    k[cn] = '\xff';
    memcpy(k + cn + 1, conv, vn);
    k[cn + vn + 1] = '\0';
    return k;
}

/* Applies record `rec` (an item's own record) to the model row of its key. */
static void model_apply(json_object *model, const mw_item *it, json_object *rec) {
    char *k = row_key(it->f[F_CUSTOMER].p, it->f[F_CUSTOMER].n, it->f[F_CONVERSATION].p,
                      it->f[F_CONVERSATION].n);
    json_object *row = member(model, k);
    if (!row) {
        row = json_object_new_object();
        json_object_object_add(model, k, row);
    }
    free(k);
    json_object_object_foreach(rec, rk, rv) {
        if (strcmp(rk, "attrs") == 0) {
            json_object *a = member(row, "attrs");
            if (!a) {
                a = json_object_new_object();
                json_object_object_add(row, "attrs", a);
            }
            json_object_object_foreach(rv, ak, av)
                json_object_object_add(a, ak, json_object_get(av));
        } else {
            json_object_object_add(row, rk, json_object_get(rv));
        }
    }
}

/* The documents carry a patch as "aset" (names set) and "adel" (names removed); the model
 * keeps it as one "attrs" object with nulls. Rewrites each record to the model's form,
 * checking that no name is both set and removed and that "adel" is never empty. */
static void normalize_patches(json_object *records) {
    for (size_t r = 0; r < json_object_array_length(records); r++) {
        json_object *rec = json_object_array_get_idx(records, r);
        json_object *set = member(rec, "aset"), *del = member(rec, "adel");
        CHECK(set || !del, "record %zu: adel without aset", r);
        if (!set) continue;
        CHECK(json_object_is_type(set, json_type_object), "record %zu: aset type", r);
        json_object *a = json_object_new_object();
        json_object_object_foreach(set, k, v) json_object_object_add(a, k, json_object_get(v));
        if (del) {
            CHECK(json_object_is_type(del, json_type_array) && json_object_array_length(del) > 0,
                  "record %zu: adel must be a non-empty array", r);
            for (size_t i = 0; i < json_object_array_length(del); i++) {
                const char *name = json_object_get_string(json_object_array_get_idx(del, i));
                CHECK(member(set, name) == NULL, "record %zu: %s both set and removed", r, name);
                json_object_object_add(a, name, NULL);
            }
        }
        json_object_object_del(rec, "aset");
        json_object_object_del(rec, "adel");
        json_object_object_add(rec, "attrs", a);
    }
}

static void check_plan(const mw_batch *b, int times) {
    plan_reset(&plan);
    int n_valid = 0;
    for (int t = 0; t < times; t++)
        for (int i = 0; i < b->n_items; i++) {
            if (b->items[i].error) continue;
            CHECK(plan_add(&plan, &b->items[i], SRC.partition, SRC.offset + t) == 0, "plan_add");
            n_valid++;
        }
    CHECK(plan_merge(&plan) == 0, "plan_merge");
    CHECK(plan.n_items == n_valid, "plan has %d items, %d added", plan.n_items, n_valid);

    json_object *model = json_object_new_object();
    json_object *expected_items = json_object_new_array();
    for (int i = 0; i < plan.n_items; i++) {
        const mw_plan_item *pi = &plan.items[i];
        json_object *rec = item_record(pi->item, pi->partition, pi->offset);
        model_apply(model, pi->item, rec);
        json_object_array_add(expected_items, rec);
    }

    jsonw_reset(&w);
    plan_items_json(&plan, &w);
    json_object *items = parse_back(&w, json_type_array, "plan_items_json");
    normalize_patches(items);
    CHECK((int)json_object_array_length(items) == n_valid, "plan_items_json: %zu records, %d items",
          json_object_array_length(items), n_valid);
    CHECK(json_object_equal(items, expected_items), "plan_items_json differs from the items: %s",
          w.buf);

    /* plan_rows_json: generations. Generation g holds the g-th item of every key with more
     * than g items, each as its own record (plan_items_json's), in strictly increasing key
     * order (customer, then conversation, bytewise); none is empty; every item is in one. */
    jsonw_reset(&w);
    plan_rows_json(&plan, &w);
    json_object *gens = parse_back(&w, json_type_array, "plan_rows_json");
    size_t n_gens = json_object_array_length(gens);
    CHECK((int)n_gens == plan.n_gens, "plan_rows_json: %zu generations, plan %d", n_gens,
          plan.n_gens);
    json_object *by_key = json_object_new_object(); /* key -> its records, in item order */
    for (size_t i = 0; i < json_object_array_length(items); i++) {
        json_object *rec = json_object_array_get_idx(items, i);
        json_object *cid = member(rec, "cid"), *conv = member(rec, "conv");
        char *k = row_key(json_object_get_string(cid), (size_t)json_object_get_string_len(cid),
                          json_object_get_string(conv), (size_t)json_object_get_string_len(conv));
        json_object *list = member(by_key, k);
        if (!list) {
            list = json_object_new_array();
            json_object_object_add(by_key, k, list);
        }
        json_object_array_add(list, json_object_get(rec));
        free(k);
    }
    CHECK(json_object_object_length(by_key) == plan.n_rows &&
              plan.n_rows == json_object_object_length(model),
          "%d keys in the items, plan %d, model %d", json_object_object_length(by_key),
          plan.n_rows, json_object_object_length(model));
    size_t total = 0;
    for (size_t g = 0; g < n_gens; g++) {
        json_object *gen = json_object_array_get_idx(gens, g);
        CHECK(json_object_is_type(gen, json_type_array) && json_object_array_length(gen) > 0,
              "plan_rows_json: generation %zu is not a non-empty array", g);
        normalize_patches(gen);
        const char *pc = NULL, *pv = NULL;
        size_t pcn = 0, pvn = 0;
        for (size_t r = 0; r < json_object_array_length(gen); r++) {
            json_object *rec = json_object_array_get_idx(gen, r);
            CHECK(json_object_is_type(rec, json_type_object), "generation %zu record %zu type", g, r);
            json_object *cid = member(rec, "cid"), *conv = member(rec, "conv");
            CHECK(json_object_is_type(cid, json_type_string) &&
                      json_object_is_type(conv, json_type_string),
                  "generation %zu record %zu key", g, r);
            const char *c = json_object_get_string(cid), *v = json_object_get_string(conv);
            size_t cn = (size_t)json_object_get_string_len(cid);
            size_t vn = (size_t)json_object_get_string_len(conv);
            if (pc) {
                int o = memcmp(pc, c, pcn < cn ? pcn : cn);
                if (o == 0) o = (pcn > cn) - (pcn < cn);
                if (o == 0) {
                    o = memcmp(pv, v, pvn < vn ? pvn : vn);
                    if (o == 0) o = (pvn > vn) - (pvn < vn);
                }
                CHECK(o < 0, "generation %zu: record %zu not after record %zu in key order", g,
                      r, r - 1);
            }
            pc = c, pcn = cn, pv = v, pvn = vn;
            char *k = row_key(c, cn, v, vn);
            json_object *list = member(by_key, k);
            free(k);
            CHECK(list != NULL, "generation %zu record %zu: a key no item has", g, r);
            CHECK(g < json_object_array_length(list) &&
                      json_object_equal(rec, json_object_array_get_idx(list, g)),
                  "generation %zu record %zu is %s, not its key's item %zu", g, r,
                  json_object_to_json_string(rec), g);
            total++;
        }
    }
    CHECK((int)total == n_valid, "plan_rows_json: %zu records for %d items", total, n_valid);
    /* plan_merged_json: one record per key; plan_isolated_json: every item once. */
    jsonw_reset(&w);
    plan_merged_json(&plan, &w);
    json_object *merged = parse_back(&w, json_type_array, "plan_merged_json");
    CHECK((int)json_object_array_length(merged) == plan.n_rows,
          "plan_merged_json: %zu records for %d keys", json_object_array_length(merged),
          plan.n_rows);
    json_object_put(merged);
    jsonw_reset(&w);
    plan_isolated_json(&plan, &w);
    json_object *iso = parse_back(&w, json_type_array, "plan_isolated_json");
    CHECK((int)json_object_array_length(iso) == n_valid, "plan_isolated_json: %zu records for %d items",
          json_object_array_length(iso), n_valid);
    json_object_put(iso);
    json_object_put(by_key);
    json_object_put(gens);
    json_object_put(items);
    json_object_put(expected_items);
    json_object_put(model);
    plan_reset(&plan);
}

/* ---- results ------------------------------------------------------------------------------ */

static void check_result(const mw_batch *b, const mw_item *it, int error_count) {
    const char *error = it ? result_item_error(it, NULL) : b->bad_request;
    jsonw_reset(&w);
    result_message(&w, b, it, error, error_count);
    json_object *o = parse_back(&w, json_type_object, "result_message");
    const mw_str none = {0};
    const mw_str *cid = it ? &it->f[F_CUSTOMER] : &none, *conv = it ? &it->f[F_CONVERSATION] : &none;
    CHECK(it ? str_is(member(o, "eventId"), it->f[F_EVENT].p, it->f[F_EVENT].n)
             : str_is(member(o, "eventId"), b->bad_event_id, strlen(b->bad_event_id)),
          "result_message: eventId: %s", w.buf);
    CHECK(str_is(member(o, "error"), error, strlen(error)), "result_message: error: %s", w.buf);
    CHECK(str_is(member(o, "externalCustomerId"), cid->p, cid->n),
          "result_message: externalCustomerId: %s", w.buf);
    CHECK(str_is(member(o, "externalConversationId"), conv->p, conv->n),
          "result_message: externalConversationId: %s", w.buf);
    json_object *src = member(o, "source"), *batch = member(o, "batch");
    CHECK(src && str_is(member(src, "topic"), SRC.topic, strlen(SRC.topic)) &&
              int_is(member(src, "partition"), SRC.partition) &&
              int_is(member(src, "offset"), SRC.offset) &&
              int_is(member(src, "index"), it ? it->index : 0),
          "result_message: source: %s", w.buf);
    CHECK(batch && int_is(member(batch, "itemCount"), b->n_items) &&
              int_is(member(batch, "errorCount"), error_count),
          "result_message: batch: %s", w.buf);
    CHECK(json_object_object_length(o) == 6, "result_message: extra members: %s", w.buf);
    json_object_put(o);
}

/* Writes result_response into w and checks it. */
static void check_response(const mw_batch *b) {
    jsonw_reset(&w);
    result_response(&w, b);
    json_object *o = parse_back(&w, json_type_object, "result_response");
    CHECK(int_is(member(o, "errorCount"), b->bad_request ? 1 : b->invalid_count),
          "result_response: errorCount: %s", w.buf);
    json_object *results = member(o, "results");
    CHECK(json_object_is_type(results, json_type_array), "result_response: results: %s", w.buf);
    size_t n = json_object_array_length(results);
    CHECK(n == (b->bad_request ? 1 : (size_t)b->n_items), "result_response: %zu results", n);
    for (size_t i = 0; i < n; i++) {
        json_object *r = json_object_array_get_idx(results, i);
        CHECK(json_object_is_type(r, json_type_object) && json_object_object_length(r) == 2,
              "result_response: result %zu: %s", i, w.buf);
        if (b->bad_request) {
            CHECK(str_is(member(r, "eventId"), b->bad_event_id, strlen(b->bad_event_id)) &&
                      str_is(member(r, "error"), b->bad_request, strlen(b->bad_request)),
                  "result_response: bad request result: %s", w.buf);
        } else {
            const mw_item *it = &b->items[i];
            const char *e = result_item_error(it, NULL);
            CHECK(str_is(member(r, "eventId"), it->f[F_EVENT].p, it->f[F_EVENT].n) &&
                      str_is(member(r, "error"), e, strlen(e)),
                  "result_response: result %zu: %s", i, w.buf);
        }
    }
    json_object_put(o);
}

/* ---- the target ------------------------------------------------------------------------------ */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mw_batch b;
    /* Decoded from a copy that is freed at once: ASan reports any pointer kept into it. */
    uint8_t *copy = malloc(size ? size : 1);
    CHECK(copy != NULL, "out of memory");
    if (size) memcpy(copy, data, size);
    CHECK(batch_decode(&b, copy, size, &SRC, MAX_ITEMS) == 0, "batch_decode failed");
    free(copy);
    check_batch(&b);
    ref_compare(data, size, &SRC, MAX_ITEMS, &b);

    if (b.bad_request) {
        check_result(&b, NULL, 1);
    } else {
        for (int i = 0; i < b.n_items; i++) check_result(&b, &b.items[i], b.invalid_count);
        if (b.invalid_count < b.n_items) {
            check_plan(&b, 1);
            check_plan(&b, 2); /* the same message twice in one transaction */
        }
    }
    check_response(&b);

    /* Pure and deterministic: a second decode with the same tokener gives the same answer. */
    mw_batch b2;
    CHECK(batch_decode(&b2, data, size, &SRC, MAX_ITEMS) == 0, "batch_decode failed");
    jsonw w2;
    jsonw_init(&w2);
    result_response(&w2, &b2);
    CHECK(!w2.oom && w2.len == w.len && memcmp(w.buf, w2.buf, w.len) == 0,
          "a second decode differs:\n  %s\n  %s", w.buf, w2.buf);
    jsonw_free(&w2);
    batch_free(&b2);
    batch_free(&b);
    CHECK(b.strings == NULL && b.items == NULL && b.bad_request == NULL && b.attr_pool == NULL,
          "batch_free left state");
    return 0;
}
