/*
 * sqlstate: classifies PostgreSQL errors where they arise (SPEC §6): transient ones are
 * retried, data ones are isolated to their items, fatal ones stop the worker.
 */
#ifndef MW_SQLSTATE_H
#define MW_SQLSTATE_H

enum err_class { ERR_TRANSIENT, ERR_DATA, ERR_FATAL };

/* sqlstate may be NULL (no error code: the connection broke), which is transient. */
enum err_class sqlstate_class(const char *sqlstate);
const char *err_class_name(enum err_class c);

#endif
