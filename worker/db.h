/*
 * db: the worker's PostgreSQL side (libpq): connection with lazy reconnect, schema
 * migrations, and the calls of the database functions of schemas/ that apply a batch.
 * Every statement is parameterised; no item text is ever spliced into SQL.
 *
 * Each call returns a db_status (worker/sqlstate.h), classified where the error arises:
 * DB_OK, DB_TRANSIENT (retry later; the connection is reset if it broke), DB_DATA (an item's
 * data was refused), DB_FATAL (schema, permission, configuration: stop). errstr says why.
 *
 * Ownership: db_new copies what it needs from the config; db_destroy closes and frees.
 */
#ifndef MW_DB_H
#define MW_DB_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "sqlstate.h"

typedef struct mw_db mw_db;

/* Offsets moved by one transaction, partitions sorted ascending (lock order). expected[i]
 * is the next offset read before (-1: none recorded), next[i] the one to record, acked[i]
 * the offset below which every result is known acknowledged (-1: none). */
typedef struct mw_offsets {
    int n;
    int32_t *part;
    int64_t *expected;
    int64_t *next;
    int64_t *acked;
} mw_offsets;

/* Called for each rejected item: partition, offset, item index, error string. */
typedef void (*db_reject_cb)(void *opaque, int32_t part, int64_t off, int idx, const char *error);

mw_db *db_new(const mw_config *cfg);
void db_destroy(mw_db *db);

/* Checks that url (NULL: libpq's PG* variables) parses as a libpq conninfo or URI and
 * registers its password (and PGPASSWORD) with the logger as secrets. Returns 0, or -1 with
 * errstr saying what is wrong without quoting any of url (a token may be the password). */
int db_conninfo_check(const char *url, char *errstr, size_t errstr_size);

/* Connects if not connected. DB_FATAL when PostgreSQL was reached and refused us
 * (authentication, unknown database or role): retrying cannot help. */
enum db_status db_connect(mw_db *db, char *errstr, size_t errstr_size)
    __attribute__((warn_unused_result));
int db_connected(const mw_db *db);

/* A cheap round trip (SELECT 1), for readiness while idle. */
enum db_status db_ping(mw_db *db, char *errstr, size_t errstr_size)
    __attribute__((warn_unused_result));

/* Applies the migrations of schemas/ (compiled in) not yet applied; idempotent. */
enum db_status db_migrate(mw_db *db, int *applied, char *errstr, size_t errstr_size)
    __attribute__((warn_unused_result));

/* DB_FATAL with a message naming `migrate` when the schema is missing or older. */
enum db_status db_check_schema(mw_db *db, char *errstr, size_t errstr_size)
    __attribute__((warn_unused_result));

/* Sets *plain when customer_metadata has only the rules of the schema's migrations
 * (customer_metadata_plain, schema 4): then a key's items may be applied merged into one
 * row (db_apply with plan_merged_json's document). */
enum db_status db_table_plain(mw_db *db, int *plain, char *errstr, size_t errstr_size)
    __attribute__((warn_unused_result));

/* Reads the next and acknowledged offsets recorded for parts[0..n) into next[] and
 * acked[] (-1: none; acked may be NULL). */
enum db_status db_read_offsets(mw_db *db, const char *group, const char *topic,
                               const int32_t *parts, int n, int64_t *next, int64_t *acked,
                               char *errstr, size_t errstr_size)
    __attribute__((warn_unused_result));

/* The happy path: offsets and rows (plan_merged_json's document, or plan_rows_json's
 * generations) in one statement and transaction. Merged rows for a table that is not plain
 * fail with SQLSTATE MW001 (DB_TRANSIENT): send the generations. */
enum db_status db_apply(mw_db *db, const char *group, const char *topic, const mw_offsets *o,
                        const char *rows_doc, char *errstr, size_t errstr_size)
    __attribute__((warn_unused_result));

/* The same, asynchronously: db_apply_send sends the statement; db_apply_poll reads what
 * arrived without blocking and sets *done with the status once the result is in. Until
 * then db_busy is true and every other call answers DB_TRANSIENT. db_socket gives the
 * connection's socket to wait on (-1 when not connected). */
enum db_status db_apply_send(mw_db *db, const char *group, const char *topic,
                             const mw_offsets *o, const char *rows_doc, char *errstr,
                             size_t errstr_size) __attribute__((warn_unused_result));
enum db_status db_apply_poll(mw_db *db, int *done, char *errstr, size_t errstr_size)
    __attribute__((warn_unused_result));
int db_busy(const mw_db *db);
int db_socket(const mw_db *db);

/* Asks PostgreSQL to cancel the asynchronous statement (its result then comes as 57014);
 * db_drop closes the connection whatever it was doing (reconnected at the next call). */
void db_cancel(mw_db *db);
void db_drop(mw_db *db);

/* The slow path: offsets, then each item on its own; rejected items are recorded and
 * reported through cb. */
enum db_status db_apply_isolated(mw_db *db, const char *group, const char *topic,
                                 const mw_offsets *o, const char *items_doc, db_reject_cb cb,
                                 void *opaque, char *errstr, size_t errstr_size)
    __attribute__((warn_unused_result));

/* Reports the rejects recorded for offsets [lo, hi] of a partition (replayed messages). */
enum db_status db_read_rejects(mw_db *db, const char *group, const char *topic, int32_t part,
                               int64_t lo, int64_t hi, db_reject_cb cb, void *opaque,
                               char *errstr, size_t errstr_size)
    __attribute__((warn_unused_result));

#endif
