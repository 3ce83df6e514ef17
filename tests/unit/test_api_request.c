/*
 * Unit tests of worker/api_request: the API's decisions in the order §8 gives them (404,
 * 405, 401, 415, 413 declared and received, 400, 200), the bodies (validate's response for
 * 200/400, {"error": …} otherwise, one 401 body), and what is produced. tests/fuzz/fuzz_api.c
 * checks the same rules on generated requests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_request.h"
#include "result.h"

#define TOPIC "in"
#define MAX_BODY 1000
/* SHA-256("s3cret") */
#define KEYS "acme sha256:1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0\n"
#define GOOD "{\"items\":[{\"externalConversationId\":\"c\",\"externalCustomerId\":\"u\"}]}"
#define ALL_BAD "{\"items\":[{\"externalConversationId\":\"\",\"externalCustomerId\":\"u\"}]}"

typedef struct {
    const char *ct, *id, *secret, *cl;
} hdrs;

static const char *lookup(void *ctx, const char *name) {
    const hdrs *h = ctx;
    if (strcasecmp(name, "Content-Type") == 0) return h->ct;
    if (strcasecmp(name, "asapp-api-id") == 0) return h->id;
    if (strcasecmp(name, "asapp-api-secret") == 0) return h->secret;
    if (strcasecmp(name, "Content-Length") == 0) return h->cl;
    return NULL;
}

/* One client, "acme", secret "s3cret" (its hash computed outside, by sha256sum). */
static mw_apikeys *keys(void) {
    char err[256];
    mw_apikeys *k = apikeys_parse(KEYS, strlen(KEYS), "keys", err, sizeof err);
    assert_non_null(k);
    return k;
}

static int handle(mw_apikeys *k, const char *method, const char *path, hdrs h, const char *body,
                  mw_api_resp *r) {
    mw_api_request req = {method, path, lookup, &h, body, body ? strlen(body) : 0};
    mw_source src = {TOPIC, 2, 77};
    api_request_init(r);
    return api_request_handle(r, &req, k, MAX_BODY, 100, &src);
}

static void assert_error(const mw_api_resp *r, int status, const char *message) {
    char want[256];
    snprintf(want, sizeof want, "{\"error\":\"%s\"}", message);
    assert_int_equal(r->status, status);
    assert_false(r->produce);
    assert_int_equal(r->body.len, strlen(want));
    assert_memory_equal(r->body.buf, want, strlen(want));
}

/* validate's response for body at src. */
static char *validate(const char *body, int32_t partition, int64_t offset) {
    mw_source src = {TOPIC, partition, offset};
    mw_batch b;
    assert_int_equal(batch_decode(&b, body, strlen(body), &src, 100), 0);
    jsonw w;
    jsonw_init(&w);
    result_response(&w, &b);
    batch_free(&b);
    return jsonw_take(&w);
}

static const hdrs OK = {"application/json", "acme", "s3cret", NULL};

static void test_order_and_errors(void **state) {
    (void)state;
    mw_apikeys *k = keys();
    assert_string_equal(apikeys_check(k, "acme", "s3cret", 6), "acme");
    mw_api_resp r;
    hdrs h = OK;

    handle(k, "POST", "/", h, GOOD, &r);
    assert_error(&r, 404, "not found");
    api_request_free(&r);
    handle(k, "GET", API_ROUTE, (hdrs){0}, NULL, &r); /* 405 before credentials */
    assert_error(&r, 405, "method not allowed");
    api_request_free(&r);

    /* 401: one body for a wrong secret, an unknown id and nothing at all; no client. */
    const hdrs bad[] = {{"application/json", "acme", "s3creT", NULL},
                        {"application/json", "nobody", "s3cret", NULL},
                        {"application/json", "acme", NULL, NULL},
                        {NULL, NULL, NULL, NULL}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        handle(k, "POST", API_ROUTE, bad[i], GOOD, &r);
        assert_error(&r, 401, "unauthorized");
        assert_string_equal(r.client, "");
        api_request_free(&r);
    }

    h.ct = "text/plain";
    handle(k, "POST", API_ROUTE, h, GOOD, &r);
    assert_error(&r, 415, "Content-Type must be application/json");
    assert_string_equal(r.client, "acme");
    api_request_free(&r);
    h.ct = NULL; /* missing: 415 too (§8) */
    handle(k, "POST", API_ROUTE, h, GOOD, &r);
    assert_error(&r, 415, "Content-Type must be application/json");
    api_request_free(&r);

    h = OK;
    const char *too_large[] = {"1001", "12a", "-1", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof too_large / sizeof *too_large; i++) {
        h.cl = too_large[i];
        handle(k, "POST", API_ROUTE, h, GOOD, &r);
        assert_error(&r, 413, "request body too large");
        api_request_free(&r);
    }
    h.cl = "1000";
    char big[MAX_BODY + 2];
    memset(big, ' ', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    handle(k, "POST", API_ROUTE, h, big, &r); /* received over the limit */
    assert_error(&r, 413, "request body too large");
    api_request_free(&r);
    apikeys_free(k);
}

static void test_body_chunks(void **state) {
    (void)state;
    mw_api_resp r;
    api_request_init(&r);
    assert_int_equal(api_request_body(&r, 0, 600, MAX_BODY), 0);
    assert_int_equal(api_request_body(&r, 600, 400, MAX_BODY), 0);
    assert_int_equal(api_request_body(&r, 1000, 1, MAX_BODY), 413);
    assert_int_equal(api_request_body(&r, 1, SIZE_MAX, MAX_BODY), 413); /* no wrap-around */
    api_request_free(&r);
}

static void test_400_and_200(void **state) {
    (void)state;
    mw_api_resp r;
    mw_apikeys *k = keys();
    const char *refused[] = {ALL_BAD, "[1]", ""};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        assert_int_equal(handle(k, "POST", API_ROUTE, OK, refused[i], &r), 400);
        assert_false(r.produce);
        char *v = validate(refused[i], 0, 0); /* validate's, at topic/0/0 */
        assert_int_equal(r.body.len, strlen(v));
        assert_memory_equal(r.body.buf, v, strlen(v));
        free(v);
        api_request_free(&r);
    }
    hdrs h = OK;
    h.ct = " application/JSON; charset=utf-8";
    h.cl = "67";
    assert_int_equal(handle(k, "POST", API_ROUTE, h, GOOD, &r), 200);
    assert_true(r.produce);
    assert_string_equal(r.client, "acme");
    assert_int_equal(r.items, 1);
    char *v = validate(GOOD, 2, 77); /* at the source Kafka gave it */
    assert_int_equal(r.body.len, strlen(v));
    assert_memory_equal(r.body.buf, v, strlen(v));
    free(v);
    api_request_free(&r);
    apikeys_free(k);
}

static void test_is_json(void **state) {
    (void)state;
    assert_true(api_request_is_json("application/json"));
    assert_true(api_request_is_json("\t Application/Json;charset=utf-8"));
    assert_true(api_request_is_json("application/json "));
    assert_false(api_request_is_json(NULL));
    assert_false(api_request_is_json(""));
    assert_false(api_request_is_json("application/jsonx"));
    assert_false(api_request_is_json("application/json-patch+json"));
    assert_false(api_request_is_json("text/json"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_errors), cmocka_unit_test(test_body_chunks),
        cmocka_unit_test(test_400_and_200),      cmocka_unit_test(test_is_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
