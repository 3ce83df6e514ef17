/* db: PostgreSQL connection, migrations and batch application; see db.h. */
#include "db.h"

#include <libpq-fe.h>
#include <poll.h>
#include <stdbool.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "db_text.h"
#include "sqlstate.h"
#include "schemas.h"

/* A silent PostgreSQL (docs/operations.md, "Silent networks"). TCP notices a path that
 * drops packets: libpq's keepalives and tcp_user_timeout (our conninfo defaults, below) end
 * the connection within ~20 s whether a statement is unanswered or the connection idle. TCP
 * cannot notice a peer that keeps acknowledging but answers nothing: a proxy, sidecar or load
 * balancer whose upstream went silent, or a server that hangs. For that the worker bounds
 * every wait for an answer itself, at the session's statement_timeout (ours: 20 s, set when
 * the session has none) plus 5 s of grace: by then a live server would have answered, if only
 * with 57014, so the silence means a dead path; the connection is dropped and the statement
 * retried as after any connection failure (the offsets check makes a late commit of the
 * abandoned statement harmless: design.md, "Concurrent writers"). Not for `migrate`, whose
 * statements may rightly run long. */
#define DB_STATEMENT_TIMEOUT_MS 20000
#define DB_ANSWER_GRACE_MS 5000

struct mw_db {
    PGconn *conn;
    char *url;  /* NULL: PG* variables */
    bool busy;  /* an asynchronous db_apply_send awaits its result */
    bool unbounded; /* migrate: no statement_timeout of ours, no answer deadline */
    int answer_ms;  /* the longest wait for an answer (0: none): statement_timeout + grace */
    int64_t sent_ms; /* when the asynchronous statement was sent */
};

mw_db *db_new(const mw_config *cfg) {
    mw_db *db = calloc(1, sizeof *db);
    if (!db) return NULL;
    if (cfg->database_url && !(db->url = strdup(cfg->database_url))) {
        free(db);
        return NULL;
    }
    return db;
}

void db_destroy(mw_db *db) {
    if (!db) return;
    if (db->conn) PQfinish(db->conn);
    free(db->url);
    free(db);
}

int db_connected(const mw_db *db) { return db->conn && PQstatus(db->conn) == CONNECTION_OK; }

static void notice_cb(void *arg, const PGresult *res) {
    (void)arg;
    char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    log_write(LOG_DEBUG, "postgresql notice", LF_S("detail", msg ? msg : ""),
              LF_S("sqlstate", PQresultErrorField(res, PG_DIAG_SQLSTATE)), LF_END);
}

/* The connect_timeout in effect (libpq's option, our default 10 s). */
static int connect_timeout_s(PGconn *c) {
    int t = 10;
    PQconninfoOption *opts = PQconninfo(c);
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "connect_timeout") == 0 && o->val && atoi(o->val) > 0)
            t = atoi(o->val);
    PQconninfoFree(opts);
    return t;
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define STR(x) #x
#define XSTR(x) STR(x)

/* Sends a statement and waits for its result at most wait_ms (0: no limit), as PQexec
 * would: the last result, or NULL (the connection failed, or *late: no answer in time). */
static PGresult *exec_wait(PGconn *c, const char *sql, int n, const char *const *params,
                           int wait_ms, bool *late) {
    *late = false;
    if (!PQsendQueryParams(c, sql, n, NULL, params, NULL, NULL, 0)) return NULL;
    int64_t deadline = wait_ms > 0 ? mono_ms() + wait_ms : 0;
    while (PQisBusy(c)) {
        int64_t left = deadline ? deadline - mono_ms() : 1000;
        if (left <= 0) {
            *late = true;
            return NULL;
        }
        struct pollfd pfd = {PQsocket(c), POLLIN, 0};
        if (poll(&pfd, 1, (int)(left > 1000 ? 1000 : left)) == 0) continue;
        if (!PQconsumeInput(c)) break;
    }
    PGresult *res = NULL, *r;
    while ((r = PQgetResult(c)) != NULL) {
        /* PQexec's rule: an error result is kept over what follows it. */
        if (res && PQresultStatus(res) == PGRES_FATAL_ERROR) {
            PQclear(r);
            continue;
        }
        PQclear(res);
        res = r;
    }
    return res;
}

/* Connects without blocking past connect_timeout and tells "cannot reach" (DB_TRANSIENT:
 * refused, timed out, PostgreSQL starting or shutting down, too many connections) from
 * "reached and refused" (DB_FATAL: authentication, unknown role or database, no pg_hba
 * entry, a password needed and none given). The server's error carries a SQLSTATE, which
 * libpq prints only in its verbose error form: it is set before the first packet. */
enum db_status db_connect(mw_db *db, char *errstr, size_t errstr_size) {
    if (db_connected(db)) return DB_OK;
    if (db->conn) {
        PQfinish(db->conn);
        db->conn = NULL;
    }
    /* Our defaults first: the user's conninfo (expanded from dbname) overrides them. */
    /* A path that drops packets ends the connection within ~20 s: tcp_user_timeout aborts it
     * when sent data (a statement, a keepalive probe) stays unacknowledged for 20 s; an idle
     * connection (or one waiting for a long statement's answer) sends keepalive probes
     * after 10 s of silence, then every 5 s, and the kernel aborts it at the first probe
     * past the user timeout (20 s; 25 s from the count alone if the user unsets
     * tcp_user_timeout). */
    const char *keys[] = {"application_name", "connect_timeout", "keepalives",
                          "keepalives_idle", "keepalives_interval", "keepalives_count",
                          "tcp_user_timeout", "dbname", NULL};
    const char *vals[] = {"metadata-worker", "10", "1", "10", "5", "3", "20000", db->url, NULL};
    if (!db->url) keys[7] = NULL;
    PGconn *c = PQconnectStartParams(keys, vals, 1);
    if (!c) {
        snprintf(errstr, errstr_size, "out of memory");
        return DB_TRANSIENT;
    }
    PQsetErrorVerbosity(c, PQERRORS_VERBOSE);
    int64_t deadline = mono_ms() + 1000LL * connect_timeout_s(c);
    PostgresPollingStatusType ps = PGRES_POLLING_WRITING;
    bool timed_out = false;
    while (PQstatus(c) != CONNECTION_BAD && ps != PGRES_POLLING_OK && ps != PGRES_POLLING_FAILED) {
        int64_t left = deadline - mono_ms();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        struct pollfd pfd = {PQsocket(c), ps == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0};
        if (pfd.fd >= 0 && poll(&pfd, 1, (int)(left > 1000 ? 1000 : left)) == 0) continue;
        ps = PQconnectPoll(c);
    }
    if (!timed_out && PQstatus(c) == CONNECTION_OK) {
        PQsetErrorVerbosity(c, PQERRORS_DEFAULT);
        PQsetNoticeReceiver(c, notice_cb, NULL);
        if (db->unbounded) {
            db->conn = c;
            db->answer_ms = 0;
            return DB_OK;
        }
        /* The session's statement_timeout (DATABASE_URL's options, PGOPTIONS, the role's or
         * database's setting), or ours when it has none: it bounds the wait for answers. */
        bool late = false;
        int left = (int)(deadline - mono_ms());
        PGresult *r = exec_wait(c,
                                "SELECT setting, CASE WHEN setting = '0' THEN set_config("
                                "'statement_timeout', '" XSTR(DB_STATEMENT_TIMEOUT_MS) "', false) END"
                                " FROM pg_settings WHERE name = 'statement_timeout'",
                                0, NULL, left > 1000 ? left : 1000, &late);
        if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            long long t = atoll(PQgetvalue(r, 0, 0));
            if (t == 0) t = DB_STATEMENT_TIMEOUT_MS;
            db->answer_ms = t > INT32_MAX - DB_ANSWER_GRACE_MS ? 0 : (int)t + DB_ANSWER_GRACE_MS;
            PQclear(r);
            db->conn = c;
            return DB_OK;
        }
        db_copy_msg(errstr, errstr_size, "cannot set up the session: ",
                 late ? "no answer within connect_timeout" : r ? PQresultErrorMessage(r)
                                                                 : PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
        return DB_TRANSIENT;
    }
    enum db_status st = DB_TRANSIENT;
    char state[6];
    const char *msg = timed_out ? "timeout expired" : PQerrorMessage(c);
    bool has_state = !timed_out && db_message_sqlstate(msg, state);
    if (has_state && sqlstate_class(state) != DB_TRANSIENT) st = DB_FATAL;
    /* The server asked for a password and none was given: no retry will find one. */
    if (!timed_out && !has_state && PQconnectionNeedsPassword(c)) st = DB_FATAL;
    db_connect_message(errstr, errstr_size, msg, has_state ? state : NULL, st == DB_FATAL);
    PQfinish(c);
    return st;
}

/* Classifies a failed result (or NULL result) and fills errstr. */
static enum db_status classify(mw_db *db, PGresult *res, char *errstr, size_t errstr_size) {
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!msg) msg = PQerrorMessage(db->conn);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%s%s", state ? state : "", state ? ": " : "");
    db_copy_msg(errstr, errstr_size, prefix, msg);
    if (PQstatus(db->conn) != CONNECTION_OK) {
        PQfinish(db->conn);
        db->conn = NULL;
        return DB_TRANSIENT;
    }
    /* A failed statement outside our explicit transactions leaves none open; make sure. */
    if (PQtransactionStatus(db->conn) != PQTRANS_IDLE) {
        PGresult *r = PQexec(db->conn, "ROLLBACK");
        PQclear(r);
    }
    enum db_status st = sqlstate_class(state);
    /* 25006: the server is read-only (demoted to a standby, or default_transaction_read_only
     * set). The connection is dropped, so the retry connects afresh: with a multi-host
     * DATABASE_URL and target_session_attrs=read-write, libpq then finds the new primary;
     * kept, it would be refused again whatever the other hosts became. */
    if (state && strcmp(state, "25006") == 0) {
        PQfinish(db->conn);
        db->conn = NULL;
        return st;
    }
    /* Two workers inserting one new key at once is not the data's fault. */
    if (st == DB_DATA && state && strcmp(state, "23505") == 0) {
        const char *c = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
        if (c && strcmp(c, "customer_metadata_pkey") == 0) return DB_TRANSIENT;
    }
    return st;
}

/* No answer within answer_ms: the path (or the server) is silent; the connection is given
 * up and the caller retries, as after any connection failure. */
static enum db_status answer_late(mw_db *db, char *errstr, size_t errstr_size) {
    snprintf(errstr, errstr_size,
             "no answer from PostgreSQL within %d s (statement_timeout + %d s): the connection"
             " is silent; dropped",
             db->answer_ms / 1000, DB_ANSWER_GRACE_MS / 1000);
    PQfinish(db->conn);
    db->conn = NULL;
    db->busy = false;
    return DB_TRANSIENT;
}

/* Runs one parameterised statement; on success *out holds the result (caller clears). */
static enum db_status exec(mw_db *db, const char *sql, int n, const char *const *params,
                           ExecStatusType want, PGresult **out, char *errstr, size_t errstr_size) {
    if (db->busy) {
        /* The caller must wait for the asynchronous statement first. */
        snprintf(errstr, errstr_size, "the connection is busy with a batch");
        return DB_TRANSIENT;
    }
    enum db_status st = db_connect(db, errstr, errstr_size);
    if (st != DB_OK) return st;
    bool late = false;
    PGresult *res = exec_wait(db->conn, sql, n, params, db->answer_ms, &late);
    if (late) return answer_late(db, errstr, errstr_size);
    if (res && PQresultStatus(res) == want) {
        if (out) *out = res;
        else PQclear(res);
        return DB_OK;
    }
    st = classify(db, res, errstr, errstr_size);
    PQclear(res);
    return st;
}

enum db_status db_ping(mw_db *db, char *errstr, size_t errstr_size) {
    return exec(db, "SELECT 1", 0, NULL, PGRES_TUPLES_OK, NULL, errstr, errstr_size);
}

enum db_status db_migrate(mw_db *db, int *applied, char *errstr, size_t errstr_size) {
    *applied = 0;
    enum db_status st;
    /* Migrations may rightly run long (an index on a big table): no deadline of ours. */
    if (!db->unbounded && db->conn) db_drop(db);
    db->unbounded = true;
    /* One migrator at a time (several workers may start together). */
    if ((st = exec(db, "SELECT pg_advisory_lock(726150001)", 0, NULL, PGRES_TUPLES_OK, NULL,
                   errstr, errstr_size)) != DB_OK)
        return st;
    st = exec(db,
              "CREATE TABLE IF NOT EXISTS metadata_worker_schema ("
              " version integer PRIMARY KEY, name text NOT NULL,"
              " applied_at timestamptz NOT NULL DEFAULT now())",
              0, NULL, PGRES_COMMAND_OK, NULL, errstr, errstr_size);
    PGresult *res = NULL;
    if (st == DB_OK)
        st = exec(db, "SELECT COALESCE(max(version), 0) FROM metadata_worker_schema", 0, NULL,
                  PGRES_TUPLES_OK, &res, errstr, errstr_size);
    int have = res ? atoi(PQgetvalue(res, 0, 0)) : 0;
    PQclear(res);
    for (int i = 0; st == DB_OK && i < schema_migrations_count; i++) {
        const schema_migration *m = &schema_migrations[i];
        if (m->version <= have) continue;
        /* Each migration and its record in one transaction. */
        PGresult *r = PQexec(db->conn, "BEGIN");
        PQclear(r);
        r = PQexec(db->conn, m->sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
            st = classify(db, r, errstr, errstr_size);
            PQclear(r);
            char tmp[512];
            snprintf(tmp, sizeof tmp, "migration %s: %s", m->name, errstr);
            snprintf(errstr, errstr_size, "%s", tmp);
            break;
        }
        PQclear(r);
        char ver[16];
        snprintf(ver, sizeof ver, "%d", m->version);
        const char *p[] = {ver, m->name};
        st = exec(db, "INSERT INTO metadata_worker_schema (version, name) VALUES ($1, $2)", 2, p,
                  PGRES_COMMAND_OK, NULL, errstr, errstr_size);
        if (st == DB_OK)
            st = exec(db, "COMMIT", 0, NULL, PGRES_COMMAND_OK, NULL, errstr, errstr_size);
        if (st == DB_OK) (*applied)++;
    }
    if (db_connected(db)) {
        PGresult *r = PQexec(db->conn, "SELECT pg_advisory_unlock(726150001)");
        PQclear(r);
    }
    return st;
}

enum db_status db_check_schema(mw_db *db, char *errstr, size_t errstr_size) {
    PGresult *res = NULL;
    enum db_status st = exec(db,
                             "SELECT COALESCE(max(version), 0) FROM metadata_worker_schema",
                             0, NULL, PGRES_TUPLES_OK, &res, errstr, errstr_size);
    if (st == DB_FATAL && strncmp(errstr, "42P01", 5) == 0) { /* undefined_table */
        snprintf(errstr, errstr_size,
                 "the database has no metadata-worker schema: run `metadata-worker migrate` first");
        return DB_FATAL;
    }
    if (st != DB_OK) return st;
    int have = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    int want = schema_migrations[schema_migrations_count - 1].version;
    if (have < want) {
        snprintf(errstr, errstr_size,
                 "the database schema is version %d, this worker needs %d: run `metadata-worker migrate`",
                 have, want);
        return DB_FATAL;
    }
    if (have > want) {
        snprintf(errstr, errstr_size,
                 "the database schema is version %d, newer than this worker's %d: upgrade the worker",
                 have, want);
        return DB_FATAL;
    }
    return DB_OK;
}

enum db_status db_table_plain(mw_db *db, int *plain, char *errstr, size_t errstr_size) {
    PGresult *res = NULL;
    enum db_status st = exec(db, "SELECT customer_metadata_plain()", 0, NULL, PGRES_TUPLES_OK,
                             &res, errstr, errstr_size);
    if (st != DB_OK) return st;
    *plain = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return DB_OK;
}

/* Writes a PostgreSQL array literal of numbers. */
static char *num_array(const void *v, int n, int is64) {
    size_t cap = (size_t)n * 21 + 3;
    char *s = malloc(cap), *o = s;
    if (!s) return NULL;
    *o++ = '{';
    for (int i = 0; i < n; i++) {
        long long x = is64 ? (long long)((const int64_t *)v)[i] : (long long)((const int32_t *)v)[i];
        o += snprintf(o, cap - (size_t)(o - s), "%s%lld", i ? "," : "", x);
    }
    *o++ = '}';
    *o = '\0';
    return s;
}

enum db_status db_read_offsets(mw_db *db, const char *group, const char *topic,
                               const int32_t *parts, int n, int64_t *next, int64_t *acked,
                               char *errstr, size_t errstr_size) {
    for (int i = 0; i < n; i++) {
        next[i] = -1;
        if (acked) acked[i] = -1;
    }
    char *arr = num_array(parts, n, 0);
    if (!arr) {
        snprintf(errstr, errstr_size, "out of memory");
        return DB_TRANSIENT;
    }
    const char *p[] = {group, topic, arr};
    PGresult *res = NULL;
    enum db_status st = exec(db,
                             "SELECT partition, next_offset, acked_offset FROM customer_metadata_offsets"
                             " WHERE consumer_group = $1 AND topic = $2 AND partition = ANY($3::integer[])",
                             3, p, PGRES_TUPLES_OK, &res, errstr, errstr_size);
    free(arr);
    if (st != DB_OK) return st;
    for (int r = 0; r < PQntuples(res); r++) {
        int32_t part = (int32_t)atol(PQgetvalue(res, r, 0));
        int64_t off = atoll(PQgetvalue(res, r, 1));
        int64_t ack = atoll(PQgetvalue(res, r, 2));
        for (int i = 0; i < n; i++) {
            if (parts[i] != part) continue;
            next[i] = off;
            if (acked) acked[i] = ack;
        }
    }
    PQclear(res);
    return DB_OK;
}

/* The seven parameters of the apply functions: group, topic, the offsets' four arrays (as
 * array literals, owned here) and the JSON document. */
typedef struct apply_params {
    char *arrays[4];
    const char *p[7];
} apply_params;

static bool apply_params_init(apply_params *ap, const char *group, const char *topic,
                              const mw_offsets *o, const char *doc, char *errstr,
                              size_t errstr_size) {
    ap->arrays[0] = num_array(o->part, o->n, 0);
    ap->arrays[1] = num_array(o->expected, o->n, 1);
    ap->arrays[2] = num_array(o->next, o->n, 1);
    ap->arrays[3] = num_array(o->acked, o->n, 1);
    const char *p[7] = {group, topic, ap->arrays[0], ap->arrays[1], ap->arrays[2],
                        ap->arrays[3], doc};
    memcpy(ap->p, p, sizeof p);
    for (int i = 0; i < 4; i++)
        if (!ap->arrays[i]) {
            snprintf(errstr, errstr_size, "out of memory");
            return false;
        }
    return true;
}

static void apply_params_free(apply_params *ap) {
    for (int i = 0; i < 4; i++) free(ap->arrays[i]);
}

#define APPLY_SQL                                                                     \
    "SELECT customer_metadata_apply($1, $2, $3::integer[], $4::bigint[], $5::bigint[]," \
    " $6::bigint[], $7::json)"

static enum db_status apply_call(mw_db *db, const char *sql, const char *group, const char *topic,
                                 const mw_offsets *o, const char *doc, PGresult **out,
                                 char *errstr, size_t errstr_size) {
    apply_params ap;
    enum db_status st = DB_TRANSIENT;
    if (apply_params_init(&ap, group, topic, o, doc, errstr, errstr_size))
        st = exec(db, sql, 7, ap.p, PGRES_TUPLES_OK, out, errstr, errstr_size);
    apply_params_free(&ap);
    return st;
}

int db_busy(const mw_db *db) { return db->busy; }

enum db_status db_apply_send(mw_db *db, const char *group, const char *topic,
                             const mw_offsets *o, const char *rows_doc, char *errstr,
                             size_t errstr_size) {
    enum db_status st = db_connect(db, errstr, errstr_size);
    if (st != DB_OK) return st;
    apply_params ap;
    if (!apply_params_init(&ap, group, topic, o, rows_doc, errstr, errstr_size))
        st = DB_TRANSIENT;
    else if (!PQsendQueryParams(db->conn, APPLY_SQL, 7, NULL, ap.p, NULL, NULL, 0))
        st = classify(db, NULL, errstr, errstr_size);
    else {
        db->busy = true;
        db->sent_ms = mono_ms();
    }
    apply_params_free(&ap);
    return st;
}

int db_socket(const mw_db *db) { return db->conn ? PQsocket(db->conn) : -1; }

void db_cancel(mw_db *db) {
    if (!db->conn || !db->busy) return;
    PGcancel *c = PQgetCancel(db->conn);
    char err[256];
    if (c && !PQcancel(c, err, sizeof err))
        log_write(LOG_WARN, "cannot cancel the statement", LF_S("error", err), LF_END);
    PQfreeCancel(c);
}

void db_drop(mw_db *db) {
    if (db->conn) PQfinish(db->conn);
    db->conn = NULL;
    db->busy = false;
}

enum db_status db_apply_poll(mw_db *db, int *done, char *errstr, size_t errstr_size) {
    *done = 0;
    if (!db->busy) {
        *done = 1;
        return DB_OK;
    }
    if (!PQconsumeInput(db->conn)) {
        db->busy = false;
        *done = 1;
        return classify(db, NULL, errstr, errstr_size);
    }
    if (PQisBusy(db->conn)) {
        if (db->answer_ms && mono_ms() - db->sent_ms > db->answer_ms) {
            *done = 1;
            return answer_late(db, errstr, errstr_size);
        }
        return DB_OK;
    }
    /* The statement's result, then NULL: read both so the connection is idle again. */
    enum db_status st = DB_OK;
    PGresult *res;
    bool failed = false;
    while ((res = PQgetResult(db->conn)) != NULL) {
        if (!failed && PQresultStatus(res) != PGRES_TUPLES_OK) {
            failed = true;
            db->busy = false;
            st = classify(db, res, errstr, errstr_size);
        }
        PQclear(res);
        if (!db->conn) break;
    }
    db->busy = false;
    *done = 1;
    return st;
}

enum db_status db_apply(mw_db *db, const char *group, const char *topic, const mw_offsets *o,
                        const char *rows_doc, char *errstr, size_t errstr_size) {
    return apply_call(db, APPLY_SQL, group, topic, o, rows_doc, NULL, errstr, errstr_size);
}

static void report_rejects(PGresult *res, db_reject_cb cb, void *opaque) {
    for (int r = 0; r < PQntuples(res); r++)
        cb(opaque, (int32_t)atol(PQgetvalue(res, r, 0)), atoll(PQgetvalue(res, r, 1)),
           atoi(PQgetvalue(res, r, 2)), PQgetvalue(res, r, 3));
}

enum db_status db_apply_isolated(mw_db *db, const char *group, const char *topic,
                                 const mw_offsets *o, const char *items_doc, db_reject_cb cb,
                                 void *opaque, char *errstr, size_t errstr_size) {
    PGresult *res = NULL;
    enum db_status st = apply_call(db,
                                   "SELECT part, off, idx, error FROM customer_metadata_apply_isolated("
                                   "$1, $2, $3::integer[], $4::bigint[], $5::bigint[], $6::bigint[], $7::json)",
                                   group, topic, o, items_doc, &res, errstr, errstr_size);
    if (st != DB_OK) return st;
    report_rejects(res, cb, opaque);
    PQclear(res);
    return DB_OK;
}

enum db_status db_read_rejects(mw_db *db, const char *group, const char *topic, int32_t part,
                               int64_t lo, int64_t hi, db_reject_cb cb, void *opaque,
                               char *errstr, size_t errstr_size) {
    char sp[16], slo[24], shi[24];
    snprintf(sp, sizeof sp, "%d", (int)part);
    snprintf(slo, sizeof slo, "%lld", (long long)lo);
    snprintf(shi, sizeof shi, "%lld", (long long)hi);
    const char *p[] = {group, topic, sp, slo, shi};
    PGresult *res = NULL;
    enum db_status st = exec(db,
                             "SELECT partition, \"offset\", item_index, error FROM customer_metadata_rejects"
                             " WHERE consumer_group = $1 AND topic = $2 AND partition = $3"
                             " AND \"offset\" BETWEEN $4 AND $5",
                             5, p, PGRES_TUPLES_OK, &res, errstr, errstr_size);
    if (st != DB_OK) return st;
    report_rejects(res, cb, opaque);
    PQclear(res);
    return DB_OK;
}
