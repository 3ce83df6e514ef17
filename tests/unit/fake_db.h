/*
 * fake_db: the database edge (worker/db.h) of the lane and flight unit tests, linked instead
 * of worker/db.c. No PostgreSQL: each test scripts the answers and reads back what the worker
 * sent.
 *
 * Scripted, in the order the worker asks:
 *   - the outcome of each statement (fake_db_then): the answer db_apply_poll gives once the
 *     statement is done, or db_apply, or db_apply_isolated, one per call, in call order;
 *     DB_OK with no error once the script is used up;
 *   - the outcome of db_apply_send (fake_db_send_then; DB_OK when none is scripted);
 *   - hold: db_apply_poll answers "not done yet" (the statement is in PostgreSQL's hands);
 *   - db_table_plain's answer (plain, default 1), db_read_offsets' answers per partition
 *     (pg_next, pg_acked, default -1), the rejects db_apply_isolated and db_read_rejects
 *     report.
 * Recorded: every statement (kind, connection, document, offsets), the partitions whose
 * offsets were read, how often the table was asked whether it is plain, and misuse (a
 * poll without a statement, a call while busy), which every test expects to stay 0.
 *
 * Ownership: one global state, fake_db_reset frees what it recorded.
 */
#ifndef MW_FAKE_DB_H
#define MW_FAKE_DB_H

#include <stdbool.h>
#include <stdint.h>

#include "db.h"

#define FAKE_MAX 64
#define FAKE_MAX_PARTS 16

enum fake_kind { FAKE_SEND, FAKE_APPLY, FAKE_ISOLATED };

typedef struct fake_statement {
    enum fake_kind kind;  /* db_apply_send, db_apply (synchronous retry), db_apply_isolated */
    int connection;       /* the lane's connection: the order db_new was called in */
    char *doc;            /* a copy of the document sent */
    int n;                /* the offsets carried */
    int32_t part[FAKE_MAX_PARTS];
    int64_t expected[FAKE_MAX_PARTS], next[FAKE_MAX_PARTS], acked[FAKE_MAX_PARTS];
} fake_statement;

typedef struct fake_answer {
    enum db_status st;
    const char *error;    /* the errstr the worker gets ("40P01: deadlock detected") */
} fake_answer;

typedef struct fake_reject {
    int32_t part;
    int64_t off;
    int idx;
    const char *error;
} fake_reject;

struct fake_db_state {
    /* scripts */
    fake_answer answers[FAKE_MAX];
    int n_answers, next_answer;
    fake_answer sends[FAKE_MAX];
    int n_sends, next_send;
    bool hold;
    int plain;
    int64_t pg_next[FAKE_MAX_PARTS], pg_acked[FAKE_MAX_PARTS];
    fake_reject rejects[FAKE_MAX];         /* reported by every db_apply_isolated */
    int n_rejects;
    fake_reject replay_rejects[FAKE_MAX];  /* reported by db_read_rejects within [lo, hi] */
    int n_replay_rejects;
    /* records */
    fake_statement stmts[FAKE_MAX];
    int n_stmts;
    int32_t offsets_read[FAKE_MAX];         /* partitions, in the order asked */
    int n_offsets_read;
    int plain_calls, read_rejects_calls, polls, cancels, drops;
    int misuse;
    int n_db;
};

extern struct fake_db_state fake_db;

/* Forgets every script and record; pg_next/pg_acked -1, plain 1, not holding. */
void fake_db_reset(void);

/* The next statement's outcome (poll, apply or isolated, in call order). */
void fake_db_then(enum db_status st, const char *error);
void fake_db_send_then(enum db_status st, const char *error);

/* The statements of a kind recorded so far. */
int fake_db_count(enum fake_kind kind);

#endif
