/*
 * db_text: the database side's texts, no I/O: libpq's messages made fit for the log (the
 * trailing newline dropped, the verbose form's LOCATION lines and SQLSTATE rearranged) and
 * DATABASE_URL checked without ever quoting it, its password registered with the logger.
 * Split from db.c, which owns the connection and the statements; only db.c includes this.
 */
#ifndef MW_DB_TEXT_H
#define MW_DB_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* errstr = prefix + msg, without msg's trailing newline and blanks. */
void db_copy_msg(char *errstr, size_t errstr_size, const char *prefix, const char *msg);

/* The SQLSTATE in a message written with PQERRORS_VERBOSE ("FATAL:  28P01:  …"), copied
 * into state[6]; false when there is none (the server was not reached, or the client gave
 * up on its own). */
bool db_message_sqlstate(const char *msg, char state[6]);

/* A connection failure's message for the log: libpq's text without the LOCATION lines of
 * the verbose form and with the SQLSTATE (if any) moved to the end; fatal: "refused" wording. */
void db_connect_message(char *errstr, size_t errstr_size, const char *msg, const char *state,
                        bool fatal);

#endif
