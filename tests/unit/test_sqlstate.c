/*
 * Unit tests of worker/sqlstate: PostgreSQL SQLSTATE → transient (retry), data (isolate the
 * item) or fatal (stop), docs/contract.md §6; and the class names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../worker/sqlstate.h"

static const struct {
    const char *code; /* NULL: no code (the connection broke) */
    enum db_status want;
    const char *why;
} rows[] = {
    {NULL, DB_TRANSIENT, "no SQLSTATE: connection lost"},
    {"08006", DB_TRANSIENT, "connection_failure"},
    {"08001", DB_TRANSIENT, "sqlclient_unable_to_establish_sqlconnection"},
    {"08P01", DB_TRANSIENT, "protocol_violation (connection class)"},
    {"40001", DB_TRANSIENT, "serialization_failure"},
    {"40P01", DB_TRANSIENT, "deadlock_detected"},
    {"55P03", DB_TRANSIENT, "lock_not_available"},
    {"57014", DB_TRANSIENT, "query_canceled"},
    {"57P01", DB_TRANSIENT, "admin_shutdown"},
    {"57P02", DB_TRANSIENT, "crash_shutdown"},
    {"57P03", DB_TRANSIENT, "cannot_connect_now"},
    {"53300", DB_TRANSIENT, "too_many_connections"},
    {"53100", DB_TRANSIENT, "disk_full"},
    {"58030", DB_TRANSIENT, "io_error"},
    {"22001", DB_DATA, "string_data_right_truncation"},
    {"22P02", DB_DATA, "invalid_text_representation"},
    {"22021", DB_DATA, "character_not_in_repertoire"},
    {"23505", DB_DATA, "unique_violation"},
    {"23514", DB_DATA, "check_violation"},
    {"23502", DB_DATA, "not_null_violation"},
    {"54000", DB_DATA, "program_limit_exceeded"},
    {"P0001", DB_DATA, "raise_exception from a trigger"},
    {"42P01", DB_FATAL, "undefined_table"},
    {"42501", DB_FATAL, "insufficient_privilege"},
    {"42883", DB_FATAL, "undefined_function"},
    {"28P01", DB_FATAL, "invalid_password"},
    {"3D000", DB_FATAL, "invalid_catalog_name"},
};

static void test_classes(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        enum db_status got = sqlstate_class(rows[i].code);
        if (got != rows[i].want) {
            print_error("%s (%s): class %s, expected %s\n", rows[i].code ? rows[i].code : "NULL",
                        rows[i].why, db_status_name(got), db_status_name(rows[i].want));
            fail();
        }
    }
}

static void test_class_names(void **state) {
    (void)state;
    assert_string_equal(db_status_name(DB_OK), "ok");
    assert_string_equal(db_status_name(DB_TRANSIENT), "transient");
    assert_string_equal(db_status_name(DB_DATA), "data");
    assert_string_equal(db_status_name(DB_FATAL), "fatal");
}

/* Malformed codes never crash; an empty code is like no code: transient. */
static void test_malformed(void **state) {
    (void)state;
    assert_int_equal(sqlstate_class(""), DB_TRANSIENT);
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
