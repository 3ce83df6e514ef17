/*
 * Unit tests of worker/apikeys: the API_KEYS_FILE format (errors name file:line), lookup and
 * secret check, new secrets and their lines, the token bucket of API_RATE_LIMIT.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "apikeys.h"

#define BIN(lit) (lit), sizeof(lit) - 1

static mw_apikeys *parse(const char *text, char *err, size_t n) {
    return apikeys_parse(text, strlen(text), "keys.txt", err, n);
}

static void test_parse_good(void **state) {
    (void)state;
    char err[256] = "";
    char line[256], secret[APIKEYS_SECRET_LEN + 1];
    assert_int_equal(apikeys_new_secret("acme", secret, line, sizeof line, err, sizeof err), 0);
    char text[1024];
    snprintf(text, sizeof text,
             "# clients\n\n  %s   # the first\r\nother.client_2 sha256:%064d\n\t\n", line, 0);
    mw_apikeys *k = parse(text, err, sizeof err);
    assert_non_null(k);
    assert_int_equal(apikeys_count(k), 2);
    assert_string_equal(apikeys_check(k, "acme", secret, strlen(secret)), "acme");
    assert_null(apikeys_check(k, "acme", secret, strlen(secret) - 1));
    assert_null(apikeys_check(k, "acme", "", 0));
    assert_null(apikeys_check(k, "acme", NULL, 0));
    assert_null(apikeys_check(k, "other.client_2", secret, strlen(secret)));
    assert_null(apikeys_check(k, "nobody", secret, strlen(secret)));
    assert_null(apikeys_check(k, NULL, secret, strlen(secret)));
    apikeys_free(k);
}

static void test_parse_errors(void **state) {
    (void)state;
    static const struct { const char *text, *err; } cases[] = {
        {"a sha256:00\n", "keys.txt:1: the hash must be"},
        {"# c\n\nbad/id sha256:" "0000000000000000000000000000000000000000000000000000000000000000",
         "keys.txt:3: the id must be"},
        {"acme\n", "keys.txt:1: expected"},
        {"acme s3cret-in-clear-0000000000000000000000000000000000000000000000000000000000\n",
         "keys.txt:1: the hash must be"},
        {"a sha256:000000000000000000000000000000000000000000000000000000000000000g\n",
         "keys.txt:1: the hash must be"},
        {"a sha256:0000000000000000000000000000000000000000000000000000000000000000 x\n",
         "keys.txt:1: unexpected text"},
        {"a sha256:0000000000000000000000000000000000000000000000000000000000000000\n"
         "a sha256:0000000000000000000000000000000000000000000000000000000000000001\n",
         "keys.txt:2: this id is already defined"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256] = "";
        mw_apikeys *k = parse(cases[i].text, err, sizeof err);
        assert_null(k);
        if (strncmp(err, cases[i].err, strlen(cases[i].err)) != 0) {
            print_error("case %zu: got \"%s\", want \"%s…\"\n", i, err, cases[i].err);
            fail();
        }
    }
    char err[256] = "";
    mw_apikeys *k = apikeys_parse(BIN("a\0 sha256:0\n"), "keys.txt", err, sizeof err);
    assert_null(k);
    assert_string_equal(err, "keys.txt:1: a NUL byte");
    k = parse("", err, sizeof err); /* an empty file parses; `api` refuses zero keys itself */
    assert_non_null(k);
    assert_int_equal(apikeys_count(k), 0);
    apikeys_free(k);
}

static void test_known_hash(void **state) {
    (void)state;
    /* printf %s 's3cret' | sha256sum */
    char err[256];
    mw_apikeys *k = parse("acme sha256:"
                          "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0\n",
                          err, sizeof err);
    assert_non_null(k);
    assert_string_equal(apikeys_check(k, "acme", BIN("s3cret")), "acme");
    assert_null(apikeys_check(k, "acme", BIN("s3creT")));
    apikeys_free(k);
}

static void test_new_secret(void **state) {
    (void)state;
    char err[256], l1[256], l2[256], s1[APIKEYS_SECRET_LEN + 1], s2[APIKEYS_SECRET_LEN + 1];
    assert_int_equal(apikeys_new_secret("c", s1, l1, sizeof l1, err, sizeof err), 0);
    assert_int_equal(apikeys_new_secret("c", s2, l2, sizeof l2, err, sizeof err), 0);
    assert_int_equal(strlen(s1), 43); /* 32 bytes in base64url, no padding */
    assert_string_not_equal(s1, s2);
    assert_int_equal(strlen(l1), strlen("c sha256:") + 64);
    assert_null(strstr(l1, s1));
    assert_int_equal(apikeys_new_secret("no spaces", s1, l1, sizeof l1, err, sizeof err), -1);
}

static void test_rate(void **state) {
    (void)state;
    char err[256];
    mw_apikeys *k = parse("a sha256:0000000000000000000000000000000000000000000000000000000000000000\n",
                          err, sizeof err);
    assert_int_equal(apikeys_take(k, "a", 0, 1000000, 1000), 0); /* off */
    assert_int_equal(apikeys_take(k, "a", 10, 6, 1000), 0);
    assert_int_equal(apikeys_take(k, "a", 10, 4, 1000), 0);
    assert_int_equal(apikeys_take(k, "a", 10, 1, 1000), 1);      /* empty: wait 0.1 s -> 1 */
    assert_int_equal(apikeys_take(k, "a", 10, 1, 1100), 0);      /* 100 ms: one token back */
    assert_int_equal(apikeys_take(k, "a", 10, 50, 1100), 1);     /* larger than the bucket */
    assert_int_equal(apikeys_take(k, "a", 10, 50, 2100), 0);     /* full: let through, debt 40 */
    assert_int_equal(apikeys_take(k, "a", 10, 1, 2100), 5);      /* (1 + 40) / 10 -> 5 s */
    /* A reload keeps the bucket of an id that stays. */
    mw_apikeys *k2 = parse("a sha256:1111111111111111111111111111111111111111111111111111111111111111\n",
                           err, sizeof err);
    apikeys_carry_buckets(k2, k);
    assert_int_equal(apikeys_take(k2, "a", 10, 1, 2100), 5);
    assert_int_equal(apikeys_take(k2, "zz", 10, 1, 2100), 0);
    apikeys_free(k);
    apikeys_free(k2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),  cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_known_hash),  cmocka_unit_test(test_new_secret),
        cmocka_unit_test(test_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
