/*
 * Unit tests of worker/sqlstate: PostgreSQL SQLSTATE → transient (retry), data (isolate the
 * item) or fatal (stop), SPEC §6; and the class names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../worker/sqlstate.h"

static const struct {
    const char *code; /* NULL: no code (the connection broke) */
    enum err_class want;
    const char *why;
} rows[] = {
    {NULL, ERR_TRANSIENT, "no SQLSTATE: connection lost"},
    {"08006", ERR_TRANSIENT, "connection_failure"},
    {"08001", ERR_TRANSIENT, "sqlclient_unable_to_establish_sqlconnection"},
    {"08P01", ERR_TRANSIENT, "protocol_violation (connection class)"},
    {"40001", ERR_TRANSIENT, "serialization_failure"},
    {"40P01", ERR_TRANSIENT, "deadlock_detected"},
    {"55P03", ERR_TRANSIENT, "lock_not_available"},
    {"57014", ERR_TRANSIENT, "query_canceled"},
    {"57P01", ERR_TRANSIENT, "admin_shutdown"},
    {"57P02", ERR_TRANSIENT, "crash_shutdown"},
    {"57P03", ERR_TRANSIENT, "cannot_connect_now"},
    {"53300", ERR_TRANSIENT, "too_many_connections"},
    {"53100", ERR_TRANSIENT, "disk_full"},
    {"58030", ERR_TRANSIENT, "io_error"},
    {"22001", ERR_DATA, "string_data_right_truncation"},
    {"22P02", ERR_DATA, "invalid_text_representation"},
    {"22021", ERR_DATA, "character_not_in_repertoire"},
    {"23505", ERR_DATA, "unique_violation"},
    {"23514", ERR_DATA, "check_violation"},
    {"23502", ERR_DATA, "not_null_violation"},
    {"54000", ERR_DATA, "program_limit_exceeded"},
    {"P0001", ERR_DATA, "raise_exception from a trigger"},
    {"42P01", ERR_FATAL, "undefined_table"},
    {"42501", ERR_FATAL, "insufficient_privilege"},
    {"42883", ERR_FATAL, "undefined_function"},
    {"28P01", ERR_FATAL, "invalid_password"},
    {"3D000", ERR_FATAL, "invalid_catalog_name"},
};

static void test_classes(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        enum err_class got = sqlstate_class(rows[i].code);
        if (got != rows[i].want) {
            print_error("%s (%s): class %s, expected %s\n", rows[i].code ? rows[i].code : "NULL",
                        rows[i].why, err_class_name(got), err_class_name(rows[i].want));
            fail();
        }
    }
}

static void test_class_names(void **state) {
    (void)state;
    assert_string_equal(err_class_name(ERR_TRANSIENT), "transient");
    assert_string_equal(err_class_name(ERR_DATA), "data");
    assert_string_equal(err_class_name(ERR_FATAL), "fatal");
}

/* Malformed codes never crash; an empty code is like no code: transient. */
static void test_malformed(void **state) {
    (void)state;
    assert_int_equal(sqlstate_class(""), ERR_TRANSIENT);
    (void)sqlstate_class("0800");
    (void)sqlstate_class("230000");
    (void)sqlstate_class("\xff\xff\xff\xff\xff");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classes),
        cmocka_unit_test(test_class_names),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
