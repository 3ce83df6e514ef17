/*
 * Unit tests of common/utf8: strict validation (overlong forms, surrogates, > U+10FFFF,
 * truncation, offset of the first bad byte), code point counting and the blank test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "../../common/utf8.h"

/* A byte string with its length (it may hold NUL bytes). */
typedef struct bytes {
    const char *s;
    size_t n;
} bytes;

#define B(lit) {(lit), sizeof(lit) - 1}

/* ---- utf8_valid ---------------------------------------------------------------------- */

static const struct {
    const char *name;
    bytes in;
} valid_rows[] = {
    {"empty", B("")},
    {"ascii", B("hello, world")},
    {"embedded NUL", B("a\0b")},
    {"U+007F", B("\x7f")},
    {"U+0080 (first 2-byte)", B("\xc2\x80")},
    {"U+00E9", B("\xc3\xa9")},
    {"U+07FF (last 2-byte)", B("\xdf\xbf")},
    {"U+0800 (first 3-byte)", B("\xe0\xa0\x80")},
    {"U+D7FF (below surrogates)", B("\xed\x9f\xbf")},
    {"U+E000 (above surrogates)", B("\xee\x80\x80")},
    {"U+FEFF", B("\xef\xbb\xbf")},
    {"U+FFFD", B("\xef\xbf\xbd")},
    {"U+FFFF (last 3-byte)", B("\xef\xbf\xbf")},
    {"U+10000 (first 4-byte)", B("\xf0\x90\x80\x80")},
    {"U+1F600 emoji", B("\xf0\x9f\x98\x80")},
    {"U+10FFFF (last code point)", B("\xf4\x8f\xbf\xbf")},
    {"mixed", B("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z")},
};

static void test_valid(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof valid_rows / sizeof valid_rows[0]; i++) {
        size_t bad = 12345;
        if (!utf8_valid(valid_rows[i].in.s, valid_rows[i].in.n, &bad)) {
            print_error("row \"%s\": expected valid, rejected at %zu\n", valid_rows[i].name, bad);
            fail();
        }
        /* bad_at is optional. */
        assert_true(utf8_valid(valid_rows[i].in.s, valid_rows[i].in.n, NULL));
    }
}

static const struct {
    const char *name;
    bytes in;
    size_t bad_at;
} invalid_rows[] = {
    {"lone continuation byte", B("\x80"), 0},
    {"lone continuation after ascii", B("ab\xbf"), 2},
    {"two continuation bytes", B("\x80\x80"), 0},
    {"overlong NUL C0 80", B("\xc0\x80"), 0},
    {"overlong C1 BF", B("\xc1\xbf"), 0},
    {"overlong 3-byte E0 80 80", B("\xe0\x80\x80"), 0},
    {"overlong 3-byte E0 9F BF (U+07FF)", B("\xe0\x9f\xbf"), 0},
    {"overlong 4-byte F0 80 80 80", B("\xf0\x80\x80\x80"), 0},
    {"overlong 4-byte F0 8F BF BF (U+FFFF)", B("\xf0\x8f\xbf\xbf"), 0},
    {"surrogate U+D800", B("\xed\xa0\x80"), 0},
    {"surrogate U+DBFF", B("\xed\xaf\xbf"), 0},
    {"surrogate U+DC00", B("\xed\xb0\x80"), 0},
    {"surrogate U+DFFF after ascii", B("x\xed\xbf\xbf"), 1},
    {"CESU-8 surrogate pair", B("\xed\xa0\xbd\xed\xb8\x80"), 0},
    {"above U+10FFFF (F4 90 80 80)", B("\xf4\x90\x80\x80"), 0},
    {"F5 lead byte", B("\xf5\x80\x80\x80"), 0},
    {"F8 lead byte", B("\xf8\x88\x80\x80\x80"), 0},
    {"FE byte", B("\xfe"), 0},
    {"FF byte", B("a\xff"), 1},
    {"truncated 2-byte at end", B("ab\xc3"), 2},
    {"truncated 3-byte at end", B("\xe2\x82"), 0},
    {"truncated 4-byte at end", B("\xf0\x9f\x98"), 0},
    {"truncated 3-byte before ascii", B("\xe2\x82z"), 0},
    {"2-byte lead followed by lead", B("\xc3\xc3\xa9"), 0},
    {"valid then invalid", B("\xc3\xa9\xe2\x82\xac\x80"), 5},
};

static void test_invalid(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof invalid_rows / sizeof invalid_rows[0]; i++) {
        size_t bad = 12345;
        if (utf8_valid(invalid_rows[i].in.s, invalid_rows[i].in.n, &bad)) {
            print_error("row \"%s\": expected invalid, accepted\n", invalid_rows[i].name);
            fail();
        }
        if (bad != invalid_rows[i].bad_at) {
            print_error("row \"%s\": bad_at %zu, expected %zu\n", invalid_rows[i].name, bad,
                        invalid_rows[i].bad_at);
            fail();
        }
        assert_false(utf8_valid(invalid_rows[i].in.s, invalid_rows[i].in.n, NULL));
    }
}

/* Only n bytes are looked at: a valid prefix of an invalid buffer is valid. */
static void test_valid_respects_length(void **state) {
    (void)state;
    const char s[] = "ok\xff";
    assert_true(utf8_valid(s, 2, NULL));
    assert_false(utf8_valid(s, 3, NULL));
    const char t[] = "\xc3\xa9";
    assert_false(utf8_valid(t, 1, NULL)); /* cut in the middle of a sequence */
}

/* ---- utf8_count ---------------------------------------------------------------------- */

static const struct {
    const char *name;
    bytes in;
    size_t count;
} count_rows[] = {
    {"empty", B(""), 0},
    {"ascii", B("abc"), 3},
    {"embedded NUL", B("a\0b"), 3},
    {"2-byte", B("\xc3\xa9\xc3\xa9"), 2},
    {"3-byte", B("\xe2\x82\xac"), 1},
    {"4-byte", B("\xf0\x9f\x98\x80\xf0\x9f\x98\x80"), 2},
    {"mixed", B("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z"), 5},
    {"U+10FFFF", B("\xf4\x8f\xbf\xbf"), 1},
};

static void test_count(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof count_rows / sizeof count_rows[0]; i++) {
        size_t c = utf8_count(count_rows[i].in.s, count_rows[i].in.n);
        if (c != count_rows[i].count) {
            print_error("row \"%s\": count %zu, expected %zu\n", count_rows[i].name, c,
                        count_rows[i].count);
            fail();
        }
    }
}

/* Long strings: the counts the length limits of docs/contract.md §3 rely on. */
static void test_count_long(void **state) {
    (void)state;
    static const char *const units[] = {"a", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
    char buf[4 * 4097];
    for (size_t u = 0; u < 4; u++) {
        size_t ul = strlen(units[u]), n = 0;
        for (int k = 0; k < 4097; k++, n += ul) memcpy(buf + n, units[u], ul);
        assert_true(utf8_valid(buf, n, NULL));
        assert_int_equal(utf8_count(buf, n), 4097);
        assert_int_equal(utf8_count(buf, n - ul), 4096);
    }
}

/* ---- utf8_blank ---------------------------------------------------------------------- */

static const struct {
    const char *name;
    bytes in;
    bool blank;
} blank_rows[] = {
    {"empty", B(""), true},
    {"space", B(" "), true},
    {"ascii white space", B(" \t\n\v\f\r"), true},
    {"U+0085 NEL", B("\xc2\x85"), true},
    {"U+00A0 NBSP", B("\xc2\xa0"), true},
    {"U+1680", B("\xe1\x9a\x80"), true},
    {"U+2000", B("\xe2\x80\x80"), true},
    {"U+2005", B("\xe2\x80\x85"), true},
    {"U+200A", B("\xe2\x80\x8a"), true},
    {"U+2028", B("\xe2\x80\xa8"), true},
    {"U+2029", B("\xe2\x80\xa9"), true},
    {"U+202F", B("\xe2\x80\xaf"), true},
    {"U+205F", B("\xe2\x81\x9f"), true},
    {"U+3000 ideographic space", B("\xe3\x80\x80"), true},
    {"U+FEFF", B("\xef\xbb\xbf"), true},
    {"mixed white space", B(" \xe3\x80\x80\t\xc2\xa0\n"), true},
    {"letter", B("a"), false},
    {"letter in spaces", B("  a  "), false},
    {"letter after U+3000", B("\xe3\x80\x80x"), false},
    {"NUL", B("\0"), false},
    {"space then NUL", B(" \0"), false},
    {"U+200B zero width space (not a separator)", B("\xe2\x80\x8b"), false},
    {"U+1FFF (below U+2000)", B("\xe1\xbf\xbf"), false},
    {"U+00E9", B("\xc3\xa9"), false},
    {"emoji", B("\xf0\x9f\x98\x80"), false},
    {"invalid byte after space", B(" \xff"), false},
    {"truncated U+3000", B("\xe3\x80"), false},
};

static void test_blank(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof blank_rows / sizeof blank_rows[0]; i++) {
        bool b = utf8_blank(blank_rows[i].in.s, blank_rows[i].in.n);
        if (b != blank_rows[i].blank) {
            print_error("row \"%s\": blank %d, expected %d\n", blank_rows[i].name, b,
                        blank_rows[i].blank);
            fail();
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_valid_respects_length),
        cmocka_unit_test(test_count),
        cmocka_unit_test(test_count_long),
        cmocka_unit_test(test_blank),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
