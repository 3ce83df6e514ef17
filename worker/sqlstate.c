/* sqlstate: PostgreSQL error classification; see sqlstate.h. */
#include "sqlstate.h"

#include <string.h>

enum db_status sqlstate_class(const char *s) {
    if (!s || strlen(s) != 5) return DB_TRANSIENT;
    /* Exact codes first. */
    static const char *const transient[] = {
        "40001", /* serialization_failure (also: offsets moved by another worker) */
        "40P01", /* deadlock_detected */
        "55P03", /* lock_not_available */
        "57014", /* query_canceled (statement_timeout) */
        "57P01", "57P02", "57P03", /* admin/crash shutdown, cannot connect now */
        "25P03", /* idle_in_transaction_session_timeout */
        "25006", /* read_only_sql_transaction: a primary restarted as a standby, or set
                  * read-only, for a while (db.c drops the connection: a multi-host
                  * DATABASE_URL then finds the read-write server) */
        "XX000", /* internal_error: worth one more try */
        "MW001", /* merged rows for a table with rules of its own (schema 4): send generations */
        NULL};
    for (int i = 0; transient[i]; i++)
        if (strcmp(s, transient[i]) == 0) return DB_TRANSIENT;
    if (strcmp(s, "P0001") == 0) return DB_DATA; /* raise_exception from a user's trigger */
    /* Then classes. */
    if (strncmp(s, "08", 2) == 0) return DB_TRANSIENT; /* connection exception */
    if (strncmp(s, "53", 2) == 0) return DB_TRANSIENT; /* insufficient resources */
    if (strncmp(s, "58", 2) == 0) return DB_TRANSIENT; /* system error (I/O) */
    if (strncmp(s, "22", 2) == 0) return DB_DATA;      /* data exception */
    if (strncmp(s, "23", 2) == 0) return DB_DATA;      /* integrity constraint violation */
    if (strncmp(s, "54", 2) == 0) return DB_DATA;      /* program limit exceeded */
    /* 42 (syntax, undefined table, permission), 28 (auth), 3D (no database), and anything
     * unknown: retrying cannot help; stop with a clear message. */
    return DB_FATAL;
}

const char *db_status_name(enum db_status st) {
    switch (st) {
    case DB_OK: return "ok";
    case DB_TRANSIENT: return "transient";
    case DB_DATA: return "data";
    default: return "fatal";
    }
}
