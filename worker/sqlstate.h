/*
 * sqlstate: the one classification of database errors (docs/contract.md §6), and the PostgreSQL
 * SQLSTATE → class mapping. Transient errors are retried, data errors are isolated to
 * their items, fatal ones stop the worker. enum db_status is what every worker/db call
 * returns and what the db_errors metric counts by.
 */
#ifndef MW_SQLSTATE_H
#define MW_SQLSTATE_H

enum db_status { DB_OK = 0, DB_TRANSIENT, DB_DATA, DB_FATAL };
#define DB_STATUS_COUNT (DB_FATAL + 1)

/* DB_TRANSIENT, DB_DATA or DB_FATAL (never DB_OK). sqlstate may be NULL (no error code: the
 * connection broke), which is transient. */
enum db_status sqlstate_class(const char *sqlstate);

/* "ok", "transient", "data", "fatal": the class label of metrics and tests. */
const char *db_status_name(enum db_status st);

#endif
