/*
 * fake_db: a scriptable stand-in for worker/db.c in unit tests; see fake_db.h.
 */
#include "fake_db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mw_db {
    int id;
    bool busy; /* a db_apply_send statement awaits its answer */
};

struct fake_db_state fake_db;

void fake_db_reset(void) {
    for (int i = 0; i < fake_db.n_stmts; i++) free(fake_db.stmts[i].doc);
    memset(&fake_db, 0, sizeof fake_db);
    fake_db.plain = 1;
    for (int i = 0; i < FAKE_MAX_PARTS; i++) fake_db.pg_next[i] = fake_db.pg_acked[i] = -1;
}

void fake_db_then(enum db_status st, const char *error) {
    if (fake_db.n_answers < FAKE_MAX) fake_db.answers[fake_db.n_answers++] = (fake_answer){st, error};
}

void fake_db_send_then(enum db_status st, const char *error) {
    if (fake_db.n_sends < FAKE_MAX) fake_db.sends[fake_db.n_sends++] = (fake_answer){st, error};
}

int fake_db_count(enum fake_kind kind) {
    int n = 0;
    for (int i = 0; i < fake_db.n_stmts; i++) n += fake_db.stmts[i].kind == kind;
    return n;
}

static enum db_status answer(fake_answer *script, int n, int *next, char *errstr, size_t size) {
    fake_answer a = *next < n ? script[(*next)++] : (fake_answer){DB_OK, NULL};
    snprintf(errstr, size, "%s", a.error ? a.error : "");
    return a.st;
}

static void record(const mw_db *db, enum fake_kind kind, const mw_offsets *o, const char *doc) {
    if (fake_db.n_stmts == FAKE_MAX || o->n > FAKE_MAX_PARTS) {
        fake_db.misuse++;
        return;
    }
    fake_statement *s = &fake_db.stmts[fake_db.n_stmts++];
    *s = (fake_statement){.kind = kind, .connection = db->id, .n = o->n};
    s->doc = strdup(doc ? doc : "");
    for (int i = 0; i < o->n; i++) {
        s->part[i] = o->part[i];
        s->expected[i] = o->expected[i];
        s->next[i] = o->next[i];
        s->acked[i] = o->acked[i];
    }
}

mw_db *db_new(const mw_config *cfg) {
    (void)cfg;
    mw_db *db = calloc(1, sizeof *db);
    if (db) db->id = fake_db.n_db++;
    return db;
}

void db_destroy(mw_db *db) { free(db); }

int db_busy(const mw_db *db) { return db->busy; }

int db_socket(const mw_db *db) {
    (void)db;
    return -1; /* nothing to wait on: lane_poll with wait polls again at once */
}

int db_connected(const mw_db *db) {
    (void)db;
    return 1;
}

void db_cancel(mw_db *db) {
    (void)db;
    fake_db.cancels++;
}

void db_drop(mw_db *db) {
    db->busy = false;
    fake_db.drops++;
}

enum db_status db_table_plain(mw_db *db, int *plain, char *errstr, size_t errstr_size) {
    if (db->busy) fake_db.misuse++;
    fake_db.plain_calls++;
    *plain = fake_db.plain;
    snprintf(errstr, errstr_size, "%s", "");
    return DB_OK;
}

enum db_status db_read_offsets(mw_db *db, const char *group, const char *topic,
                               const int32_t *parts, int n, int64_t *next, int64_t *acked,
                               char *errstr, size_t errstr_size) {
    (void)group;
    (void)topic;
    if (db->busy) fake_db.misuse++;
    for (int i = 0; i < n; i++) {
        if (parts[i] < 0 || parts[i] >= FAKE_MAX_PARTS) {
            fake_db.misuse++;
            return DB_FATAL;
        }
        if (fake_db.n_offsets_read < FAKE_MAX) fake_db.offsets_read[fake_db.n_offsets_read++] = parts[i];
        next[i] = fake_db.pg_next[parts[i]];
        if (acked) acked[i] = fake_db.pg_acked[parts[i]];
    }
    snprintf(errstr, errstr_size, "%s", "");
    return DB_OK;
}

enum db_status db_apply(mw_db *db, const char *group, const char *topic, const mw_offsets *o,
                        const char *rows_doc, char *errstr, size_t errstr_size) {
    (void)group;
    (void)topic;
    if (db->busy) fake_db.misuse++;
    record(db, FAKE_APPLY, o, rows_doc);
    return answer(fake_db.answers, fake_db.n_answers, &fake_db.next_answer, errstr, errstr_size);
}

enum db_status db_apply_send(mw_db *db, const char *group, const char *topic, const mw_offsets *o,
                             const char *rows_doc, char *errstr, size_t errstr_size) {
    (void)group;
    (void)topic;
    if (db->busy) fake_db.misuse++;
    record(db, FAKE_SEND, o, rows_doc);
    enum db_status st = answer(fake_db.sends, fake_db.n_sends, &fake_db.next_send, errstr, errstr_size);
    db->busy = st == DB_OK;
    return st;
}

enum db_status db_apply_poll(mw_db *db, int *done, char *errstr, size_t errstr_size) {
    fake_db.polls++;
    *done = 0;
    if (!db->busy) {
        fake_db.misuse++;
        *done = 1;
        snprintf(errstr, errstr_size, "no statement sent");
        return DB_TRANSIENT;
    }
    if (fake_db.hold) return DB_OK;
    *done = 1;
    db->busy = false;
    return answer(fake_db.answers, fake_db.n_answers, &fake_db.next_answer, errstr, errstr_size);
}

enum db_status db_apply_isolated(mw_db *db, const char *group, const char *topic,
                                 const mw_offsets *o, const char *items_doc, db_reject_cb cb,
                                 void *opaque, char *errstr, size_t errstr_size) {
    (void)group;
    (void)topic;
    if (db->busy) fake_db.misuse++;
    record(db, FAKE_ISOLATED, o, items_doc);
    enum db_status st =
        answer(fake_db.answers, fake_db.n_answers, &fake_db.next_answer, errstr, errstr_size);
    if (st == DB_OK)
        for (int i = 0; i < fake_db.n_rejects; i++) {
            const fake_reject *r = &fake_db.rejects[i];
            cb(opaque, r->part, r->off, r->idx, r->error);
        }
    return st;
}

enum db_status db_read_rejects(mw_db *db, const char *group, const char *topic, int32_t part,
                               int64_t lo, int64_t hi, db_reject_cb cb, void *opaque,
                               char *errstr, size_t errstr_size) {
    (void)group;
    (void)topic;
    if (db->busy) fake_db.misuse++;
    fake_db.read_rejects_calls++;
    for (int i = 0; i < fake_db.n_replay_rejects; i++) {
        const fake_reject *r = &fake_db.replay_rejects[i];
        if (r->part == part && r->off >= lo && r->off <= hi) cb(opaque, r->part, r->off, r->idx, r->error);
    }
    snprintf(errstr, errstr_size, "%s", "");
    return DB_OK;
}
