/*
 * ingest: the worker's main loop; see ingest.h for the protocol. Everything here runs on
 * one thread: librdkafka's callbacks (rebalance, delivery reports) are served from the
 * poll calls made below, so no state needs a lock.
 */
#include "ingest.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include "../common/jsonw.h"
#include "../common/log.h"
#include "batch.h"
#include "db.h"
#include "http.h"
#include "kafka.h"
#include "metrics.h"
#include "plan.h"
#include "result.h"

#ifndef MW_VERSION
#define MW_VERSION "dev"
#endif

typedef struct pend_msg {
    rd_kafka_message_t *rkm;
    mw_batch batch;
    bool in_flush;   /* part of the transaction being flushed */
    bool replay;     /* already applied to PostgreSQL: results only */
    int db_rejects;
    char **db_err;   /* per item, allocated at the first reject */
    /* Kept when the decoded tree is freed (a flight keeps only the raw message: a repeat
     * decodes it again, with the same outcome). */
    int n_items, invalid;
    bool bad, decoded;
    int64_t arrived_ms;
    struct flight *fl;  /* the flight that holds it (delivery reports find it through this) */
    int dlq_cut;        /* its dead letter was refused as too large: DLQ_CUT_* */
} pend_msg;

/* A dead letter Kafka refuses as too large goes again with its value cut to a prefix, then
 * empty; its headers say so (dlq.value.truncated, dlq.value.bytes). */
enum { DLQ_CUT_NONE = 0, DLQ_CUT_PREFIX, DLQ_CUT_EMPTY };
#define DLQ_PREFIX_BYTES 65536

typedef struct part_state {
    int32_t part;
    int64_t pg_next; /* next offset recorded in PostgreSQL, -1: none */
    int64_t acked;   /* every result below it is acknowledged by Kafka, -1: none known */
    bool known;      /* pg_next was read since the partition was assigned */
} part_state;

#define MAX_TXN_PARTS 1024 /* partitions one transaction may cover */
#define MAX_LANES 8
#define PLAIN_REREAD_MS 30000

/* A lane: one PostgreSQL connection and the transaction it applies. Partition p belongs to
 * lane p % n_lanes, so lanes never share a partition: their transactions run side by side
 * while each partition's messages still apply in order, one transaction at a time. */
typedef struct lane {
    int id;
    mw_db *db;
    mw_plan plan;
    jsonw doc;
    int pend_items;         /* items of this lane's pending messages not yet in a flush */
    int64_t pend_since_ms;  /* arrival of the oldest of them */
    /* The transaction being flushed: its offsets, and the asynchronous statement's state. */
    mw_offsets o;
    int32_t o_part[MAX_TXN_PARTS];
    int64_t o_expected[MAX_TXN_PARTS], o_next[MAX_TXN_PARTS], o_acked[MAX_TXN_PARTS];
    bool flushing;          /* the happy-path statement is in PostgreSQL's hands */
    bool plan_stale;        /* messages of the plan were dropped (revoked) meanwhile */
    int64_t db_t0;
    int flush_n, flush_items;
    int64_t flush_t0;
    int64_t flush_wait_ms;  /* how long its oldest message had waited when the flush began */
    bool merged;            /* the statement carries merged rows (else generations) */
    bool behind;            /* its last transaction was full: the next may grow (backlog) */
    char errstr[1024];
} lane;

typedef struct ingest {
    const mw_config *cfg;
    volatile sig_atomic_t *run;
    rd_kafka_t *consumer;
    rd_kafka_t *producer;
    lane lanes[MAX_LANES];
    int n_lanes;
    jsonw out;
    pend_msg *pend;
    int n_pend, cap_pend;
    part_state *parts;
    int n_parts, cap_parts;
    bool paused;
    struct flight *fl_head; /* transactions whose results await acknowledgement, FIFO */
    struct flight *fl_tail;
    int n_flights;
    int64_t deadline_ms;    /* set once a stop is asked for */
    int64_t last_ping_ms;   /* last readiness check of PostgreSQL while idle */
    mw_metrics *m;
    mw_http *http;
    bool fatal;
    bool closing;           /* leaving the group: commits must not wait for a coordinator */
    int plain;              /* customer_metadata_plain() as last read: 1, 0, -1 not read */
    int64_t plain_read_ms;  /* when */
    char errstr[1024];
} ingest;

static int64_t now_ms(void) { return metrics_now_ms(); }

/* The capped exponential backoff before retry `attempt` (0, 1, …): 100 ms doubling up to
 * RETRY_MAX_MS. */
static int64_t backoff_ms(const ingest *ing, int attempt) {
    int64_t d = 100;
    for (int i = 0; i < attempt && d < ing->cfg->retry_max_ms; i++) d *= 2;
    return d > ing->cfg->retry_max_ms ? ing->cfg->retry_max_ms : d;
}

/* ---- partitions ---- */

static lane *lane_of(ingest *ing, int32_t part) {
    return &ing->lanes[(part < 0 ? -part : part) % ing->n_lanes];
}

static bool any_flushing(const ingest *ing) {
    for (int l = 0; l < ing->n_lanes; l++)
        if (ing->lanes[l].flushing) return true;
    return false;
}

static part_state *part_find(ingest *ing, int32_t part) {
    for (int i = 0; i < ing->n_parts; i++)
        if (ing->parts[i].part == part) return &ing->parts[i];
    return NULL;
}

static part_state *part_add(ingest *ing, int32_t part) {
    part_state *ps = part_find(ing, part);
    if (ps) return ps;
    if (ing->n_parts == ing->cap_parts) {
        int cap = ing->cap_parts ? ing->cap_parts * 2 : 16;
        part_state *n = realloc(ing->parts, (size_t)cap * sizeof *n);
        if (!n) return NULL;
        ing->parts = n;
        ing->cap_parts = cap;
    }
    ps = &ing->parts[ing->n_parts++];
    *ps = (part_state){part, -1, -1, false};
    return ps;
}

static void part_remove(ingest *ing, int32_t part) {
    part_state *ps = part_find(ing, part);
    if (ps) *ps = ing->parts[--ing->n_parts];
}

/* ---- pending messages ---- */

static void pend_release(pend_msg *m) {
    if (m->db_err) {
        for (int i = 0; i < m->n_items; i++) free(m->db_err[i]);
        free(m->db_err);
    }
    batch_free(&m->batch);
    rd_kafka_message_destroy(m->rkm);
}

static void pend_append(ingest *ing, rd_kafka_message_t *rkm) {
    if (ing->n_pend == ing->cap_pend) {
        int cap = ing->cap_pend ? ing->cap_pend * 2 : 64;
        pend_msg *n = realloc(ing->pend, (size_t)cap * sizeof *n);
        if (!n) goto oom;
        ing->pend = n;
        ing->cap_pend = cap;
    }
    pend_msg *m = &ing->pend[ing->n_pend];
    memset(m, 0, sizeof *m);
    m->rkm = rkm;
    m->arrived_ms = now_ms();
    mw_source src = {ing->cfg->input_topic, rkm->partition, rkm->offset};
    if (batch_decode(&m->batch, rkm->payload, rkm->len, &src,
                     ing->cfg->max_batch_items) != 0)
        goto oom;
    m->decoded = true;
    m->n_items = m->batch.n_items;
    m->invalid = m->batch.invalid_count;
    m->bad = m->batch.bad_request != NULL;
    lane *L = lane_of(ing, rkm->partition);
    if (L->pend_items == 0) L->pend_since_ms = m->arrived_ms;
    ing->n_pend++;
    L->pend_items += m->batch.n_items ? m->batch.n_items : 1;
    atomic_fetch_add(&ing->m->messages_consumed, 1);
    return;
oom:
    /* Not stored: the message is consumed again after a restart. Stop cleanly. */
    log_write(LOG_ERROR, "out of memory decoding a message", LF_I("partition", rkm->partition),
              LF_I("offset", rkm->offset), LF_END);
    rd_kafka_message_destroy(rkm);
    ing->fatal = true;
}

/* Counts each lane's pending items not yet in a flush, and when the oldest arrived. */
static void pend_recount(ingest *ing) {
    for (int l = 0; l < ing->n_lanes; l++) ing->lanes[l].pend_items = 0;
    for (int i = 0; i < ing->n_pend; i++) {
        const pend_msg *m = &ing->pend[i];
        if (m->in_flush) continue;
        lane *L = lane_of(ing, m->rkm->partition);
        if (!L->pend_items || m->arrived_ms < L->pend_since_ms) L->pend_since_ms = m->arrived_ms;
        L->pend_items += m->batch.n_items ? m->batch.n_items : 1;
    }
}

/* Drops pending messages of the given partitions (revoked: their new owner consumes them
 * again from the committed offset). */
static void pend_drop_partitions(ingest *ing, const rd_kafka_topic_partition_list_t *parts) {
    int w = 0;
    for (int r = 0; r < ing->n_pend; r++) {
        bool drop = false;
        for (int i = 0; i < parts->cnt; i++)
            if (parts->elems[i].partition == ing->pend[r].rkm->partition) drop = true;
        /* The plan points into these messages' strings: it must not be used again. */
        if (drop && ing->pend[r].in_flush) lane_of(ing, ing->pend[r].rkm->partition)->plan_stale = true;
        if (drop) pend_release(&ing->pend[r]);
        else ing->pend[w++] = ing->pend[r];
    }
    ing->n_pend = w;
    pend_recount(ing);
}

/* Drops every pending message of lane L (its flush abandoned: they are consumed again). */
static void pend_drop_lane(ingest *ing, lane *L) {
    int w = 0;
    for (int r = 0; r < ing->n_pend; r++) {
        if (lane_of(ing, ing->pend[r].rkm->partition) == L) {
            pend_release(&ing->pend[r]);
            continue;
        }
        ing->pend[w++] = ing->pend[r];
    }
    ing->n_pend = w;
    pend_recount(ing);
}

/* ---- pausing while PostgreSQL or the producer is unavailable ---- */

static void set_paused(ingest *ing, bool pause) {
    if (ing->paused == pause) return;
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(ing->consumer, &a) == RD_KAFKA_RESP_ERR_NO_ERROR && a) {
        if (a->cnt) {
            if (pause) rd_kafka_pause_partitions(ing->consumer, a);
            else rd_kafka_resume_partitions(ing->consumer, a);
        }
        atomic_store(&ing->m->paused_partitions, pause ? a->cnt : 0);
        rd_kafka_topic_partition_list_destroy(a);
    }
    ing->paused = pause;
    log_write(LOG_DEBUG, pause ? "partitions paused" : "partitions resumed", LF_END);
}

static bool stopping(ingest *ing) {
    if (*ing->run) return false;
    if (!ing->deadline_ms) ing->deadline_ms = now_ms() + ing->cfg->shutdown_timeout_ms;
    return true;
}

static bool past_deadline(ingest *ing) { return stopping(ing) && now_ms() >= ing->deadline_ms; }

static void handle_message(ingest *ing, rd_kafka_message_t *rkm) {
    if (rkm->err) {
        log_write(LOG_WARN, "consumer error", LF_S("error", rd_kafka_message_errstr(rkm)),
                  LF_S("code", rd_kafka_err2name(rkm->err)), LF_END);
        if (rkm->err == RD_KAFKA_RESP_ERR__FATAL) ing->fatal = true;
        rd_kafka_message_destroy(rkm);
        return;
    }
    pend_append(ing, rkm);
}

/* Serves group membership and delivery reports for up to ms while the partitions are
 * paused; messages already fetched are kept for after the flush in hand. */
static void keepalive(ingest *ing, int ms) {
    set_paused(ing, true);
    int64_t end = now_ms() + ms;
    do {
        atomic_store(&ing->m->heartbeat_ms, now_ms());
        rd_kafka_poll(ing->producer, 0);
        int64_t left = end - now_ms();
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(ing->consumer, left > 100 ? 100 : (int)(left > 0 ? left : 0));
        if (rkm) handle_message(ing, rkm);
    } while (now_ms() < end && !ing->fatal && !past_deadline(ing));
}

/* Waits before retry `attempt` (capped exponential backoff with jitter). False when the
 * batch must be abandoned (stop deadline passed, or fatal). */
static bool backoff(ingest *ing, int attempt, const char *what, const char *error) {
    int64_t d = backoff_ms(ing, attempt);
    d = d / 2 + rand() % (d / 2 + 1); /* jitter: workers do not retry in step */
    if (strcmp(what, "database") == 0) metrics_count_db_retry(ing->m, error);
    log_write(attempt > 2 ? LOG_WARN : LOG_INFO, "retrying", LF_S("what", what),
              LF_S("error", error), LF_I("attempt", attempt), LF_I("delay_ms", d), LF_END);
    keepalive(ing, (int)d);
    return !ing->fatal && !past_deadline(ing);
}

/* ---- the flush: database, results, offsets ---- */

static void on_reject(void *opaque, int32_t part, int64_t off, int idx, const char *error) {
    ingest *ing = opaque;
    for (int i = 0; i < ing->n_pend; i++) {
        pend_msg *m = &ing->pend[i];
        if (!m->in_flush || m->rkm->partition != part || m->rkm->offset != off) continue;
        if (idx < 0 || idx >= m->batch.n_items) return;
        if (!m->db_err && !(m->db_err = calloc((size_t)m->batch.n_items, sizeof *m->db_err))) return;
        if (!m->db_err[idx]) m->db_rejects++;
        free(m->db_err[idx]);
        m->db_err[idx] = strdup(error);
        return;
    }
}

/* True for the messages of lane L's flush. */
static bool in_flush_of(ingest *ing, const pend_msg *m, const lane *L) {
    return m->in_flush && lane_of(ing, m->rkm->partition) == L;
}

static void clear_rejects(ingest *ing, lane *L) {
    for (int i = 0; i < ing->n_pend; i++) {
        pend_msg *m = &ing->pend[i];
        if (!in_flush_of(ing, m, L) || !m->db_err) continue;
        for (int k = 0; k < m->batch.n_items; k++) free(m->db_err[k]);
        free(m->db_err);
        m->db_err = NULL;
        m->db_rejects = 0;
    }
}

/* Reads PostgreSQL's next offset for the flush's partitions not known yet. */
static enum db_status load_offsets(ingest *ing, lane *L) {
    /* A flush covers at most MAX_TXN_PARTS partitions (flush_start): all fit. */
    int32_t want[MAX_TXN_PARTS];
    int n = 0;
    for (int i = 0; i < ing->n_pend && n < MAX_TXN_PARTS; i++) {
        pend_msg *m = &ing->pend[i];
        if (!in_flush_of(ing, m, L)) continue;
        part_state *ps = part_add(ing, m->rkm->partition);
        if (!ps) return DB_TRANSIENT;
        if (ps->known) continue;
        bool dup = false;
        for (int k = 0; k < n; k++) dup |= want[k] == ps->part;
        if (!dup) want[n++] = ps->part;
    }
    if (!n) return DB_OK;
    int64_t next[MAX_TXN_PARTS];
    enum db_status st = db_read_offsets(L->db, ing->cfg->group_id, ing->cfg->input_topic, want,
                                        n, next, NULL, L->errstr, sizeof L->errstr);
    if (st != DB_OK) return st;
    for (int k = 0; k < n; k++) {
        part_state *ps = part_find(ing, want[k]);
        if (ps) {
            ps->pg_next = next[k];
            ps->known = true;
        }
    }
    return DB_OK;
}

/* Plans lane L's transaction: which messages are replays, the merged rows and the offsets
 * to move (kept in L->o for after the statement). *empty when there is nothing to write. */
static enum db_status prepare(ingest *ing, lane *L, bool *empty) {
    *empty = true;
    L->plan_stale = false;
    enum db_status st = load_offsets(ing, L);
    if (st != DB_OK) return st;
    clear_rejects(ing, L);
    plan_reset(&L->plan);

    int32_t *parts = L->o_part;
    int64_t *expected = L->o_expected, *next = L->o_next, *acked = L->o_acked;
    int np = 0;
    for (int i = 0; i < ing->n_pend; i++) {
        pend_msg *m = &ing->pend[i];
        if (!in_flush_of(ing, m, L)) continue;
        part_state *ps = part_find(ing, m->rkm->partition);
        m->replay = ps && ps->pg_next >= 0 && m->rkm->offset < ps->pg_next;
        if (m->replay || m->batch.bad_request) continue;
        bool any = false;
        for (int k = 0; k < m->batch.n_items; k++) {
            if (m->batch.items[k].error) continue;
            if (plan_add(&L->plan, &m->batch.items[k], m->rkm->partition, m->rkm->offset)) {
                snprintf(L->errstr, sizeof L->errstr, "out of memory");
                return DB_TRANSIENT;
            }
            any = true;
        }
        if (!any) continue;
        int k = 0;
        while (k < np && parts[k] != m->rkm->partition) k++;
        if (k == np) {
            if (np == MAX_TXN_PARTS) return DB_FATAL; /* flush_start keeps this from happening */
            parts[np] = m->rkm->partition;
            expected[np] = ps ? ps->pg_next : -1;
            acked[np] = ps ? ps->acked : -1;
            np++;
        }
        next[k] = m->rkm->offset + 1;
    }
    L->o = (mw_offsets){np, parts, expected, next, acked};
    if (L->plan.n_items == 0) return DB_OK;
    *empty = false;

    /* Lock order: partitions ascending, so two workers never deadlock on offsets. */
    for (int i = 1; i < np; i++)
        for (int j = i; j > 0 && parts[j - 1] > parts[j]; j--) {
            int32_t tp = parts[j]; parts[j] = parts[j - 1]; parts[j - 1] = tp;
            int64_t te = expected[j]; expected[j] = expected[j - 1]; expected[j - 1] = te;
            int64_t tn = next[j]; next[j] = next[j - 1]; next[j - 1] = tn;
            int64_t ta = acked[j]; acked[j] = acked[j - 1]; acked[j - 1] = ta;
        }
    if (plan_merge(&L->plan)) {
        snprintf(L->errstr, sizeof L->errstr, "out of memory");
        return DB_TRANSIENT;
    }
    /* Merged rows when the table is plain (schema 4), re-read every PLAIN_REREAD_MS: an
     * owner may add or drop rules of their own at any time (the database checks again). */
    if (ing->plain < 0 || now_ms() - ing->plain_read_ms >= PLAIN_REREAD_MS) {
        int plain;
        st = db_table_plain(L->db, &plain, L->errstr, sizeof L->errstr);
        if (st != DB_OK) return st;
        if (plain != ing->plain)
            log_write(LOG_INFO, plain ? "customer_metadata is plain: a key's items are merged into one row per transaction"
                                      : "customer_metadata has rules of its own: items apply one by one, in generations",
                      LF_END);
        ing->plain = plain;
        ing->plain_read_ms = now_ms();
    }
    L->merged = ing->plain == 1;
    jsonw_reset(&L->doc);
    if (L->merged) plan_merged_json(&L->plan, &L->doc);
    else plan_rows_json(&L->plan, &L->doc);
    if (L->doc.oom) {
        snprintf(L->errstr, sizeof L->errstr, "out of memory");
        return DB_TRANSIENT;
    }
    return DB_OK;
}

/* After the happy-path statement returned st: isolates refused items (slow path), moves
 * the cached offsets on success, forgets them on failure. */
static enum db_status applied(ingest *ing, lane *L, enum db_status st) {
    if (st == DB_DATA && L->plan_stale) {
        /* Partitions were revoked while the statement ran: plan again (synchronously,
         * through the retry) before isolating the refused item. */
        snprintf(L->errstr, sizeof L->errstr, "partitions revoked during the batch");
        st = DB_TRANSIENT;
    }
    if (st == DB_DATA) {
        atomic_fetch_add(&ing->m->db_errors[DBC_DATA], 1);
        log_write(LOG_WARN, "PostgreSQL refused an item: applying the batch item by item",
                  LF_S("error", L->errstr), LF_I("items", L->plan.n_items), LF_END);
        jsonw_reset(&L->doc);
        plan_isolated_json(&L->plan, &L->doc);
        if (L->doc.oom) snprintf(L->errstr, sizeof L->errstr, "out of memory");
        st = L->doc.oom ? DB_TRANSIENT
                        : db_apply_isolated(L->db, ing->cfg->group_id, ing->cfg->input_topic,
                                            &L->o, L->doc.buf, on_reject, ing, L->errstr,
                                            sizeof L->errstr);
        /* A data error now (outside any item) cannot be isolated. */
        if (st == DB_DATA) st = DB_FATAL;
    }
    if (st == DB_OK) {
        for (int k = 0; k < L->o.n; k++) {
            part_state *ps = part_find(ing, L->o.part[k]);
            if (ps) ps->pg_next = L->o.next[k];
        }
        atomic_fetch_add(&ing->m->db_transactions, 1);
        metrics_observe(&ing->m->db_seconds, (double)(now_ms() - L->db_t0) / 1000.0);
        metrics_observe(&ing->m->batch_items, L->plan.n_items);
    } else {
        /* Read the offsets again before retrying: another worker may have moved them. */
        for (int k = 0; k < ing->n_parts; k++)
            if (lane_of(ing, ing->parts[k].part) == L) ing->parts[k].known = false;
        clear_rejects(ing, L);
    }
    return st;
}

/* One synchronous attempt at the database side of the flush (retries, slow path). */
static enum db_status apply_once(ingest *ing, lane *L) {
    bool empty;
    enum db_status st = prepare(ing, L, &empty);
    if (st != DB_OK || empty) return st;
    L->db_t0 = now_ms();
    st = db_apply(L->db, ing->cfg->group_id, ing->cfg->input_topic, &L->o, L->doc.buf,
                  L->errstr, sizeof L->errstr);
    return applied(ing, L, st);
}

/* Rebuilds the database rejects of replayed messages (for identical results). */
static enum db_status load_replay_rejects(ingest *ing, lane *L) {
    for (int k = 0; k < ing->n_parts; k++) {
        int32_t part = ing->parts[k].part;
        if (lane_of(ing, part) != L) continue;
        int64_t lo = -1, hi = -1;
        for (int i = 0; i < ing->n_pend; i++) {
            pend_msg *m = &ing->pend[i];
            if (!m->in_flush || !m->replay || m->rkm->partition != part || m->batch.bad_request)
                continue;
            if (lo < 0 || m->rkm->offset < lo) lo = m->rkm->offset;
            if (m->rkm->offset > hi) hi = m->rkm->offset;
        }
        if (lo < 0) continue;
        enum db_status st = db_read_rejects(L->db, ing->cfg->group_id, ing->cfg->input_topic,
                                            part, lo, hi, on_reject, ing, L->errstr,
                                            sizeof L->errstr);
        if (st != DB_OK) return st;
    }
    return DB_OK;
}

/* A flight: the messages of one committed transaction whose results and dead letters are
 * in flight to Kafka. Flights complete in order (FIFO): only then are their offsets stored,
 * so a committed offset never passes a message whose results are not acknowledged, while
 * the next transaction goes to PostgreSQL without waiting for the acknowledgements. */
typedef struct flight {
    pend_msg *msgs;         /* owned */
    int n;
    long inflight;          /* deliveries not yet reported */
    long failed;            /* deliveries that failed: the flight is produced again */
    int attempts;
    int64_t retry_at_ms;
    int64_t started_ms;
    struct flight *next;
} flight;

static void flight_free(flight *f) {
    for (int i = 0; i < f->n; i++) pend_release(&f->msgs[i]);
    free(f->msgs);
    free(f);
}

/* What a failed produce means. librdkafka retries what it can by itself, so a delivery
 * report's error is final for that message: only Kafka being unreachable (timeouts,
 * connections, leaders, replicas) is worth producing the flight again. A message too large
 * is cut (a dead letter) or a configuration error (a result: the topic's max.message.bytes
 * is absurdly small); anything else — unknown topic, authorisation, a policy, an invalid
 * record — is a configuration error: stop with a clear message (SPEC §6) rather than loop. */
enum produce_fail { PF_RETRY, PF_TOO_LARGE, PF_CONFIG };

static enum produce_fail produce_fail_class(rd_kafka_resp_err_t err) {
    switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
        return PF_TOO_LARGE;
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE:
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
    case RD_KAFKA_RESP_ERR__RETRY:
    case RD_KAFKA_RESP_ERR__NODE_UPDATE:
    case RD_KAFKA_RESP_ERR__WAIT_COORD:
    case RD_KAFKA_RESP_ERR__OUTDATED:
    case RD_KAFKA_RESP_ERR__NOENT:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
    case RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR:
    case RD_KAFKA_RESP_ERR_BROKER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_REPLICA_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_FENCED_LEADER_EPOCH:
    case RD_KAFKA_RESP_ERR_UNKNOWN_LEADER_EPOCH:
    case RD_KAFKA_RESP_ERR_OFFSET_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_CONTROLLER:
    case RD_KAFKA_RESP_ERR_THROTTLING_QUOTA_EXCEEDED:
        return PF_RETRY;
    default:
        return PF_CONFIG;
    }
}

/* A permanent produce failure that no retry can fix: the worker stops (exit 1). */
static void produce_config_error(ingest *ing, const char *topic, rd_kafka_resp_err_t err) {
    if (!ing->fatal)
        log_write(LOG_ERROR, "Kafka refuses the worker's messages: stopping (check the topic and"
                  " the worker's rights and settings)", LF_S("topic", topic),
                  LF_S("error", rd_kafka_err2str(err)), LF_S("code", rd_kafka_err2name(err)), LF_END);
    ing->fatal = true;
}

/* Produces one message of m's (its dead letter or a result) with m as the delivery's
 * opaque. Returns 0 once librdkafka took it; else the error, after handling it (f->failed
 * for a retry, fatal for a configuration error) — except PF_TOO_LARGE, left to the caller.
 * While the producer's queue is full it waits, serving the heartbeat, but never past the
 * stop deadline. */
static rd_kafka_resp_err_t produce(ingest *ing, pend_msg *m, const char *topic, const void *key,
                                   size_t klen, const void *val, size_t vlen,
                                   rd_kafka_headers_t *hdrs) {
    flight *f = m->fl;
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            ing->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, klen),
            RD_KAFKA_V_VALUE((void *)val, vlen), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(m), RD_KAFKA_V_END);
        if (!err) {
            f->inflight++;
            return err; /* hdrs now owned by the message */
        }
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && !ing->fatal && !past_deadline(ing)) {
            atomic_store(&ing->m->heartbeat_ms, now_ms());
            rd_kafka_poll(ing->producer, 50);
            continue;
        }
        if (hdrs) rd_kafka_headers_destroy(hdrs);
        enum produce_fail c = produce_fail_class(err);
        if (c == PF_TOO_LARGE) return err;
        if (c == PF_CONFIG) produce_config_error(ing, topic, err);
        else log_write(LOG_WARN, "cannot produce", LF_S("topic", topic),
                       LF_S("error", rd_kafka_err2str(err)), LF_END);
        f->failed++;
        return err;
    }
}

/* The dead letter of a bad message: its raw bytes (cut when Kafka refused them as too large)
 * and headers saying why and where it came from. */
static void produce_dead_letter(ingest *ing, pend_msg *m) {
    for (;;) {
        char part[16], off[24], bytes[24];
        snprintf(part, sizeof part, "%d", (int)m->rkm->partition);
        snprintf(off, sizeof off, "%lld", (long long)m->rkm->offset);
        snprintf(bytes, sizeof bytes, "%zu", m->rkm->len);
        size_t vlen = m->rkm->len;
        if (m->dlq_cut == DLQ_CUT_PREFIX && vlen > DLQ_PREFIX_BYTES) vlen = DLQ_PREFIX_BYTES;
        if (m->dlq_cut == DLQ_CUT_EMPTY) vlen = 0;
        rd_kafka_headers_t *h = rd_kafka_headers_new(7);
        rd_kafka_header_add(h, "dlq.error", -1, m->batch.bad_request, -1);
        rd_kafka_header_add(h, "dlq.source.topic", -1, ing->cfg->input_topic, -1);
        rd_kafka_header_add(h, "dlq.source.partition", -1, part, -1);
        rd_kafka_header_add(h, "dlq.source.offset", -1, off, -1);
        rd_kafka_header_add(h, "dlq.event.id", -1, m->batch.bad_event_id, -1);
        if (vlen < m->rkm->len) {
            rd_kafka_header_add(h, "dlq.value.truncated", -1, vlen ? "prefix" : "empty", -1);
            rd_kafka_header_add(h, "dlq.value.bytes", -1, bytes, -1);
        }
        rd_kafka_resp_err_t err = produce(ing, m, ing->cfg->dlq_topic, m->rkm->key,
                                          m->rkm->key_len, m->rkm->payload, vlen, h);
        if (produce_fail_class(err) != PF_TOO_LARGE) return;
        if (m->dlq_cut == DLQ_CUT_EMPTY) { /* even the headers alone are too large */
            produce_config_error(ing, ing->cfg->dlq_topic, err);
            m->fl->failed++;
            return;
        }
        m->dlq_cut++;
        log_write(LOG_WARN, "dead letter too large for Kafka: sending it cut",
                  LF_S("topic", ing->cfg->dlq_topic), LF_I("partition", m->rkm->partition),
                  LF_I("offset", m->rkm->offset), LF_I("bytes", m->rkm->len),
                  LF_S("cut", m->dlq_cut == DLQ_CUT_PREFIX ? "prefix" : "empty"), LF_END);
    }
}

/* A result message; Kafka refusing one as too large is a configuration error. */
static void produce_result(ingest *ing, pend_msg *m, const char *key, size_t klen) {
    rd_kafka_resp_err_t err = produce(ing, m, ing->cfg->results_topic, key, klen, ing->out.buf,
                                      ing->out.len, NULL);
    if (produce_fail_class(err) == PF_TOO_LARGE) {
        produce_config_error(ing, ing->cfg->results_topic, err);
        m->fl->failed++;
    }
}

static void produce_results(ingest *ing, flight *f) {
    f->attempts++;
    for (int i = 0; i < f->n; i++) {
        pend_msg *m = &f->msgs[i];
        if (!m->decoded) {
            mw_source src = {ing->cfg->input_topic, m->rkm->partition, m->rkm->offset};
            if (batch_decode(&m->batch, m->rkm->payload, m->rkm->len, &src,
                             ing->cfg->max_batch_items) != 0) {
                f->failed++; /* out of memory: tried again with the flight */
                continue;
            }
            m->decoded = true;
        }
        const mw_batch *b = &m->batch;
        if (b->bad_request) {
            produce_dead_letter(ing, m);
            jsonw_reset(&ing->out);
            result_message(&ing->out, b, NULL, b->bad_request, 1);
            produce_result(ing, m, b->bad_event_id, MW_UUID_STR_LEN);
            batch_free(&m->batch);
            m->decoded = false;
            continue;
        }
        int errors = b->invalid_count + m->db_rejects;
        for (int k = 0; k < b->n_items; k++) {
            const mw_item *it = &b->items[k];
            jsonw_reset(&ing->out);
            result_message(&ing->out, b, it, result_item_error(it, m->db_err ? m->db_err[k] : NULL),
                           errors);
            produce_result(ing, m, it->f[F_EVENT].p, it->f[F_EVENT].n);
        }
        /* The results are copied into the producer: the tree is not needed any more. */
        batch_free(&m->batch);
        m->decoded = false;
    }
}

/* Counts the outcomes of a flight whose results are all acknowledged. */
static void count_outcomes(ingest *ing, const flight *f) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t wall = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    for (int i = 0; i < f->n; i++) {
        const pend_msg *m = &f->msgs[i];
        if (m->replay) atomic_fetch_add(&ing->m->replayed_messages, 1);
        if (m->bad) {
            atomic_fetch_add(&ing->m->bad_requests, 1);
            atomic_fetch_add(&ing->m->dead_letters, 1);
        }
        int bad = m->invalid, rej = m->db_rejects;
        atomic_fetch_add(&ing->m->items[OUT_BAD_PARAMS], (unsigned long long)bad);
        atomic_fetch_add(&ing->m->items[OUT_DB_REJECTED], (unsigned long long)rej);
        atomic_fetch_add(&ing->m->items[OUT_OK], (unsigned long long)(m->n_items - bad - rej));
        rd_kafka_timestamp_type_t tt;
        int64_t t = rd_kafka_message_timestamp(m->rkm, &tt);
        if (t > 0 && wall >= t) metrics_observe(&ing->m->result_seconds, (double)(wall - t) / 1000.0);
    }
}

static void store_offsets(ingest *ing, const flight *f) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
    for (int i = 0; i < f->n; i++) {
        const pend_msg *m = &f->msgs[i];
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_find(l, ing->cfg->input_topic, m->rkm->partition);
        if (!tp) tp = rd_kafka_topic_partition_list_add(l, ing->cfg->input_topic, m->rkm->partition);
        if (m->rkm->offset + 1 > tp->offset) tp->offset = m->rkm->offset + 1;
    }
    for (int i = 0; i < l->cnt; i++) {
        part_state *ps = part_find(ing, l->elems[i].partition);
        if (ps && l->elems[i].offset > ps->acked) ps->acked = l->elems[i].offset;
    }
    if (l->cnt) {
        /* A partition revoked meanwhile is refused (its new owner replays): harmless. */
        rd_kafka_resp_err_t err = rd_kafka_offsets_store(ing->consumer, l);
        if (err && err != RD_KAFKA_RESP_ERR__STATE)
            log_write(LOG_WARN, "cannot store offsets", LF_S("error", rd_kafka_err2str(err)), LF_END);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* Completes the flights at the head of the queue whose deliveries are all reported; a
 * flight with failed deliveries is produced again after a backoff (repeats are identical).
 * With wait, returns only when the queue is empty (true) or the stop deadline passed. */
static bool drain_flights(ingest *ing, bool wait) {
    int64_t start = now_ms();
    for (;;) {
        rd_kafka_poll(ing->producer, 0);
        while (ing->fl_head && ing->fl_head->inflight == 0) {
            flight *f = ing->fl_head;
            if (f->failed) {
                if (ing->fatal) break; /* stopping: the next owner produces them again */
                if (!f->retry_at_ms) {
                    f->retry_at_ms = now_ms() + backoff_ms(ing, f->attempts - 1);
                    log_write(LOG_WARN, "results not acknowledged: producing them again",
                              LF_I("failed", f->failed), LF_I("attempt", f->attempts), LF_END);
                }
                if (now_ms() < f->retry_at_ms) break;
                f->failed = 0;
                f->retry_at_ms = 0;
                produce_results(ing, f);
                continue;
            }
            count_outcomes(ing, f);
            store_offsets(ing, f);
            log_write(LOG_DEBUG, "results acknowledged", LF_I("messages", f->n),
                      LF_I("ms", now_ms() - f->started_ms), LF_END);
            ing->fl_head = f->next;
            if (!ing->fl_head) ing->fl_tail = NULL;
            ing->n_flights--;
            flight_free(f);
        }
        if (!wait || !ing->fl_head) return ing->fl_head == NULL;
        atomic_store(&ing->m->heartbeat_ms, now_ms());
        rd_kafka_poll(ing->producer, 20);
        if (now_ms() - start > 1000) keepalive(ing, 0); /* serve the group meanwhile */
        if (ing->fatal || past_deadline(ing)) return false;
    }
}

/* Moves lane L's flushed messages out of pend into a new flight at the tail of the queue. */
static flight *flight_take(ingest *ing, lane *L) {
    flight *f = calloc(1, sizeof *f);
    int n = 0;
    for (int i = 0; i < ing->n_pend; i++) n += in_flush_of(ing, &ing->pend[i], L);
    if (!f || !(f->msgs = malloc((size_t)(n ? n : 1) * sizeof *f->msgs))) {
        free(f);
        return NULL;
    }
    int w = 0;
    for (int r = 0; r < ing->n_pend; r++) {
        if (in_flush_of(ing, &ing->pend[r], L)) f->msgs[f->n++] = ing->pend[r];
        else ing->pend[w++] = ing->pend[r];
    }
    ing->n_pend = w;
    pend_recount(ing);
    for (int i = 0; i < f->n; i++) f->msgs[i].fl = f;
    f->started_ms = now_ms();
    if (ing->fl_tail) ing->fl_tail->next = f;
    else ing->fl_head = f;
    ing->fl_tail = f;
    ing->n_flights++;
    return f;
}

/* The database side of lane L's flush once its first attempt returned st: retries (with
 * backoff, synchronously), then the rejects of replayed messages. False when the flush was
 * abandoned (its messages are consumed again). */
static bool flush_settle(ingest *ing, lane *L, enum db_status st) {
    for (int attempt = 0;; attempt++) {
        if (attempt > 0) st = apply_once(ing, L);
        if (st == DB_OK) st = load_replay_rejects(ing, L);
        atomic_store(&ing->m->db_up, st != DB_TRANSIENT);
        if (st == DB_OK) return true;
        atomic_fetch_add(&ing->m->db_errors[st == DB_TRANSIENT ? DBC_TRANSIENT : DBC_FATAL], 1);
        if (st == DB_FATAL) {
            log_write(LOG_ERROR, "PostgreSQL error that retrying cannot fix: stopping",
                      LF_S("error", L->errstr), LF_END);
            ing->fatal = true;
            break;
        }
        if (L->merged && strncmp(L->errstr, "MW001", 5) == 0) {
            /* The table stopped being plain since it was read: generations, at once. */
            log_write(LOG_INFO, "customer_metadata has rules of its own: items apply one by one, in generations",
                      LF_END);
            ing->plain = 0;
            ing->plain_read_ms = now_ms();
            continue;
        }
        if (!backoff(ing, attempt, "database", L->errstr)) break;
    }
    log_write(LOG_WARN, "batch abandoned: its messages will be consumed again",
              LF_I("messages", L->flush_n), LF_I("connection", L->id), LF_END);
    /* Nothing stored for these messages; drop everything pending of their partitions so
     * that no later message of theirs is committed past them. */
    pend_drop_lane(ing, L);
    set_paused(ing, false);
    return false;
}

/* How many items lane L gathers while its statement runs before it stops consuming and waits
 * for PostgreSQL. Caught up: TXN_MAX_ITEMS, for short transactions and low latency. Behind
 * (its last transaction was full): up to TXN_BACKLOG_ITEMS, so that a key's repeated items
 * merge into one row version before they reach PostgreSQL (issue 10); the pending items are
 * what bounds the memory. */
static int txn_cap(const ingest *ing, const lane *L) {
    int cap = ing->cfg->txn_max_items;
    return L->behind && ing->cfg->txn_backlog_items > cap ? ing->cfg->txn_backlog_items : cap;
}

/* Lane L's pending messages make a transaction: enough items, or the oldest waited long
 * enough. */
static bool flush_due(ingest *ing, const lane *L) {
    return L->pend_items && (L->pend_items >= ing->cfg->txn_max_items ||
                             now_ms() - L->pend_since_ms >= ing->cfg->txn_max_wait_ms);
}

static bool flush_start(ingest *ing, lane *L, enum db_status *st);

/* A flush whose rows are in PostgreSQL: its messages become a flight whose results go to
 * Kafka. With pipeline, the lane's next transaction (if due) is sent to PostgreSQL first,
 * so that the database works while these results are rendered and acknowledged. */
static void flush_deliver(ingest *ing, lane *L, bool pipeline) {
    int64_t t1 = now_ms(), t0 = L->flush_t0, waited = L->flush_wait_ms;
    int n = L->flush_n, items = L->flush_items;
    int rows = L->merged ? L->plan.n_rows : L->plan.n_items; /* row versions written */
    flight *f = flight_take(ing, L);
    if (!f) {
        log_write(LOG_ERROR, "out of memory", LF_END);
        ing->fatal = true;
        pend_drop_lane(ing, L);
        return;
    }
    /* Results are produced before anything can complete flights (drain_flights): a
     * flight with no delivery in flight counts as acknowledged. */
    enum db_status next_st = DB_OK;
    bool next_sync = pipeline && !ing->paused && flush_due(ing, L) && flush_start(ing, L, &next_st);
    produce_results(ing, f);
    set_paused(ing, false);
    log_write(LOG_DEBUG, "batch done", LF_I("messages", n), LF_I("items", items), LF_I("rows", rows),
              LF_I("wait_ms", waited), LF_I("db_ms", t1 - t0), LF_I("total_ms", now_ms() - t0),
              LF_I("connection", L->id), LF_END);
    /* Bounded memory: at most one transaction per lane awaits its acknowledgements. */
    int64_t wait_start = now_ms();
    while (ing->n_flights > ing->n_lanes && !ing->fatal && !past_deadline(ing)) {
        drain_flights(ing, false);
        if (ing->n_flights > ing->n_lanes) {
            atomic_store(&ing->m->heartbeat_ms, now_ms());
            rd_kafka_poll(ing->producer, 20);
            /* Kafka unreachable for a while: keep serving the group, partitions paused. */
            if (now_ms() - wait_start > 1000) keepalive(ing, 0);
        }
    }
    set_paused(ing, false); /* keepalive paused them: nothing else would resume them */
    drain_flights(ing, false);
    if (next_sync && flush_settle(ing, L, next_st)) flush_deliver(ing, L, false);
}

/* Marks lane L's pending messages (up to MAX_TXN_PARTS partitions) as one transaction and
 * sends its statement: true when it must go on synchronously (nothing to write, or the
 * statement could not be sent), with the status in *st; false when the statement is in
 * PostgreSQL's hands (flush_poll completes it) or there was nothing pending. */
static bool flush_start(ingest *ing, lane *L, enum db_status *st) {
    L->flush_n = L->flush_items = 0;
    L->flush_wait_ms = L->pend_items ? now_ms() - L->pend_since_ms : 0;
    /* One transaction covers at most MAX_TXN_PARTS partitions; messages of further
     * partitions wait for the next one (all of a partition's messages together). */
    int np = 0;
    for (int i = 0; i < ing->n_pend; i++) {
        pend_msg *m = &ing->pend[i];
        if (m->in_flush || lane_of(ing, m->rkm->partition) != L) continue;
        int k = 0;
        while (k < np && L->o_part[k] != m->rkm->partition) k++;
        if (k == np) {
            if (np == MAX_TXN_PARTS) continue;
            L->o_part[np++] = m->rkm->partition;
        }
        m->in_flush = true;
        L->flush_n++;
        L->flush_items += m->batch.n_items;
    }
    pend_recount(ing);
    if (!L->flush_n) return false;
    L->behind = L->flush_items >= ing->cfg->txn_max_items;
    L->flush_t0 = now_ms();
    bool empty;
    *st = prepare(ing, L, &empty);
    if (*st == DB_OK && !empty) {
        L->db_t0 = now_ms();
        *st = db_apply_send(L->db, ing->cfg->group_id, ing->cfg->input_topic, &L->o,
                            L->doc.buf, L->errstr, sizeof L->errstr);
        if (*st == DB_OK) {
            L->flushing = true;
            return false;
        }
        *st = applied(ing, L, *st);
    }
    return true;
}

/* Starts flushing lane L's pending messages as one transaction. On the happy path the
 * statement is sent and the flush goes on in flush_poll, so that the next messages are
 * consumed and decoded while PostgreSQL works. */
static void flush_begin(ingest *ing, lane *L) {
    enum db_status st;
    if (flush_start(ing, L, &st) && flush_settle(ing, L, st)) flush_deliver(ing, L, false);
}

/* Starts the flush of every idle lane whose pending messages make a transaction. */
static void flush_due_lanes(ingest *ing) {
    for (int l = 0; l < ing->n_lanes; l++) {
        lane *L = &ing->lanes[l];
        if (!L->flushing && flush_due(ing, L)) flush_begin(ing, L);
    }
}

/* Completes lane L's flush if PostgreSQL has answered (or, with wait, once it has). */
static void flush_poll(ingest *ing, lane *L, bool wait) {
    int64_t cancelled_ms = 0;
    while (L->flushing) {
        int done = 0;
        enum db_status st = db_apply_poll(L->db, &done, L->errstr, sizeof L->errstr);
        if (!done && wait && cancelled_ms && now_ms() - cancelled_ms > 2000) {
            /* No answer to the cancel (PostgreSQL unreachable): give the connection up. */
            db_drop(L->db);
            snprintf(L->errstr, sizeof L->errstr, "statement abandoned at the stop deadline");
            st = DB_TRANSIENT;
            done = 1;
        }
        if (done) {
            L->flushing = false;
            if (flush_settle(ing, L, applied(ing, L, st))) flush_deliver(ing, L, !wait);
            return;
        }
        if (!wait) return;
        /* Stopping and past SHUTDOWN_TIMEOUT_MS: a statement PostgreSQL still holds (a
         * lock, a slow disk) is cancelled; its batch is abandoned, uncommitted. */
        if (!cancelled_ms && past_deadline(ing)) {
            log_write(LOG_WARN, "stop deadline reached: cancelling the statement in PostgreSQL",
                      LF_I("connection", L->id), LF_END);
            db_cancel(L->db);
            cancelled_ms = now_ms();
        }
        struct pollfd pfd = {db_socket(L->db), POLLIN, 0};
        if (pfd.fd >= 0) poll(&pfd, 1, 100);
        atomic_store(&ing->m->heartbeat_ms, now_ms());
    }
}

/* Every lane's flush, synchronously (at a stop). */
static void flush(ingest *ing) {
    for (int l = 0; l < ing->n_lanes; l++) flush_poll(ing, &ing->lanes[l], true);
    for (int l = 0; l < ing->n_lanes && !past_deadline(ing); l++) flush_begin(ing, &ing->lanes[l]);
    for (int l = 0; l < ing->n_lanes; l++) flush_poll(ing, &ing->lanes[l], true);
}

/* ---- callbacks ---- */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    ingest *ing = opaque;
    pend_msg *pm = m->_private; /* the per-message opaque given to producev */
    const char *topic = rd_kafka_topic_name(m->rkt);
    if (pm) {
        pm->fl->inflight--;
        if (m->err) pm->fl->failed++;
    }
    if (!m->err && strcmp(topic, ing->cfg->results_topic) == 0)
        atomic_fetch_add(&ing->m->results_produced, 1);
    if (!m->err) return;
    atomic_fetch_add(&ing->m->results_failed, 1);
    log_write(LOG_WARN, "delivery failed", LF_S("topic", topic),
              LF_S("error", rd_kafka_err2str(m->err)), LF_END);
    /* The flight is produced again (after a backoff) unless the failure is permanent: a
     * dead letter too large goes again cut; anything else permanent stops the worker. */
    enum produce_fail c = produce_fail_class(m->err);
    bool dead_letter = pm && pm->bad && strcmp(topic, ing->cfg->dlq_topic) == 0;
    if (c == PF_TOO_LARGE && dead_letter && pm->dlq_cut < DLQ_CUT_EMPTY)
        pm->dlq_cut = pm->dlq_cut == DLQ_CUT_NONE && m->len > DLQ_PREFIX_BYTES ? DLQ_CUT_PREFIX
                                                                              : DLQ_CUT_EMPTY;
    else if (c != PF_RETRY)
        produce_config_error(ing, topic, m->err);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
    ingest *ing = opaque;
    atomic_fetch_add(&ing->m->rebalances, 1);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        /* Resume from the group's committed offset. Where the group has none, from the
         * offset below which PostgreSQL knows every result was acknowledged — not from its
         * next offset: messages between the two are in the database but may lack results.
         * When neither exists, auto.offset.reset applies; messages already applied are then
         * replayed for their results only. */
        rd_kafka_resp_err_t e = rd_kafka_committed(rk, parts, 10000);
        if (e) log_write(LOG_WARN, "cannot read committed offsets", LF_S("error", rd_kafka_err2str(e)), LF_END);
        for (int i = 0; i < parts->cnt; i++) {
            rd_kafka_topic_partition_t *tp = &parts->elems[i];
            part_state *ps = part_add(ing, tp->partition);
            int64_t pg = -1, pg_acked = -1;
            /* The partition's own connection, or another one if it is busy with a batch. */
            mw_db *db = lane_of(ing, tp->partition)->db;
            for (int l = 0; l < ing->n_lanes && db_busy(db); l++) db = ing->lanes[l].db;
            if (ps && db_read_offsets(db, ing->cfg->group_id, ing->cfg->input_topic,
                                      &tp->partition, 1, &pg, &pg_acked, ing->errstr,
                                      sizeof ing->errstr) == DB_OK) {
                ps->pg_next = pg;
                ps->known = true;
            }
            if (tp->offset < 0 && pg_acked >= 0) tp->offset = pg_acked;
            if (ps) ps->acked = tp->offset >= 0 ? tp->offset : -1;
            log_write(LOG_INFO, "partition assigned", LF_S("topic", tp->topic),
                      LF_I("partition", tp->partition), LF_I("offset", tp->offset),
                      LF_I("pg_next_offset", pg), LF_END);
        }
        rd_kafka_error_t *error = rd_kafka_incremental_assign(rk, parts);
        if (error) {
            log_write(LOG_ERROR, "incremental assign failed", LF_S("error", rd_kafka_error_string(error)), LF_END);
            rd_kafka_error_destroy(error);
        }
        atomic_store(&ing->m->assigned_partitions, ing->n_parts);
        /* librdkafka 2.0 keeps a partition's paused flag across rebalances. */
        if (ing->paused) rd_kafka_pause_partitions(rk, parts);
        else rd_kafka_resume_partitions(rk, parts);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        bool lost = rd_kafka_assignment_lost(rk);
        pend_drop_partitions(ing, parts);
        drain_flights(ing, false); /* store what is acknowledged before committing */
        if (!lost && ing->closing && !atomic_load(&ing->m->coord_up)) {
            /* A commit without a coordinator waits for one for session.timeout.ms (and so
             * does the consumer's destruction), past the 10 s close_consumer allows. */
            log_write(LOG_WARN, "group coordinator unreachable: leaving without committing;"
                      " the partitions' next owner resumes from the last commit", LF_END);
        } else if (!lost) {
            /* Commit what is done for these partitions before handing them over. */
            rd_kafka_resp_err_t e = rd_kafka_commit(rk, NULL, 0);
            if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET)
                log_write(LOG_WARN, "commit on revoke failed", LF_S("error", rd_kafka_err2str(e)), LF_END);
        }
        for (int i = 0; i < parts->cnt; i++) {
            log_write(LOG_INFO, lost ? "partition lost" : "partition revoked",
                      LF_S("topic", parts->elems[i].topic), LF_I("partition", parts->elems[i].partition),
                      LF_END);
            part_remove(ing, parts->elems[i].partition);
        }
        atomic_store(&ing->m->assigned_partitions, ing->n_parts);
        rd_kafka_error_t *error = rd_kafka_incremental_unassign(rk, parts);
        if (error) {
            log_write(LOG_ERROR, "incremental unassign failed", LF_S("error", rd_kafka_error_string(error)), LF_END);
            rd_kafka_error_destroy(error);
        }
    } else {
        log_write(LOG_ERROR, "rebalance error", LF_S("error", rd_kafka_err2str(err)), LF_END);
        rd_kafka_assign(rk, NULL);
    }
}

static int on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
    (void)rk;
    ingest *ing = opaque;
    metrics_parse_stats(ing->m, json, len);
    return 0; /* json is freed by librdkafka */
}

/* While idle, checks PostgreSQL every 2 s so that /readyz tells the truth. */
static void idle_ping(ingest *ing) {
    int64_t now = now_ms();
    if (now - ing->last_ping_ms < 2000) return;
    ing->last_ping_ms = now;
    char err[256];
    atomic_store(&ing->m->db_up, db_ping(ing->lanes[0].db, err, sizeof err) == DB_OK);
}

/* ---- run ---- */

static bool wait_for_database(ingest *ing) {
    for (int attempt = 0;; attempt++) {
        atomic_store(&ing->m->heartbeat_ms, now_ms());
        enum db_status st = db_check_schema(ing->lanes[0].db, ing->errstr, sizeof ing->errstr);
        atomic_store(&ing->m->db_up, st == DB_OK);
        if (st == DB_OK) return true;
        if (st == DB_FATAL) {
            log_write(LOG_ERROR, "cannot start: PostgreSQL refused the worker",
                      LF_S("error", ing->errstr), LF_END);
            return false;
        }
        log_write(LOG_WARN, "waiting for PostgreSQL", LF_S("error", ing->errstr), LF_END);
        for (int64_t end = now_ms() + backoff_ms(ing, attempt); now_ms() < end;) {
            if (!*ing->run) return false;
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
}

/* Commits the stored offsets and leaves the group, within a bounded time even when the
 * brokers are unreachable (rd_kafka_consumer_close alone may wait for them for ever). */
static void close_consumer(ingest *ing) {
    for (int i = 0; i < ing->n_pend; i++) pend_release(&ing->pend[i]);
    ing->n_pend = 0;
    ing->closing = true;
    rd_kafka_queue_t *q = rd_kafka_queue_new(ing->consumer);
    rd_kafka_error_t *error = rd_kafka_consumer_close_queue(ing->consumer, q);
    int flags = 0;
    if (error) {
        log_write(LOG_WARN, "consumer close failed", LF_S("error", rd_kafka_error_string(error)), LF_END);
        rd_kafka_error_destroy(error);
        flags = RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE;
    } else {
        int64_t end = now_ms() + 10000;
        while (!rd_kafka_consumer_closed(ing->consumer)) {
            if (now_ms() >= end) {
                log_write(LOG_WARN, "could not leave the group in time: closing anyway", LF_END);
                flags = RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE;
                break;
            }
            /* The rebalance callback is served here (revoke, commit). */
            rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);
            if (ev) {
                if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
                    on_rebalance(ing->consumer, rd_kafka_event_error(ev),
                                 rd_kafka_event_topic_partition_list(ev), ing);
                rd_kafka_event_destroy(ev);
            }
        }
    }
    rd_kafka_queue_destroy(q);
    if (flags && !error) {
        /* The close timed out (no coordinator): destroying the consumer would wait for its
         * pending commit requests to time out (session.timeout.ms). The process is about to
         * exit; nothing is left to send (the offsets could not be committed anyway). */
        log_write(LOG_WARN, "leaving the Kafka consumer to the process exit", LF_END);
        ing->consumer = NULL;
        return;
    }
    rd_kafka_destroy_flags(ing->consumer, flags);
    ing->consumer = NULL;
}

int ingest_run(const mw_config *cfg, volatile sig_atomic_t *run) {
    ingest ing_s;
    ingest *ing = &ing_s;
    memset(ing, 0, sizeof *ing);
    ing->cfg = cfg;
    ing->run = run;
    ing->plain = -1;
    jsonw_init(&ing->out);
    int rc = 1;
    srand((unsigned)time(NULL) ^ (unsigned)getpid());

    ing->n_lanes = cfg->db_connections < 1 ? 1 : cfg->db_connections > MAX_LANES ? MAX_LANES
                                                                                 : cfg->db_connections;
    bool lanes_ok = true;
    for (int l = 0; l < ing->n_lanes; l++) {
        lane *L = &ing->lanes[l];
        L->id = l;
        plan_init(&L->plan);
        jsonw_init(&L->doc);
        lanes_ok &= (L->db = db_new(cfg)) != NULL;
    }
    ing->m = metrics_new();
    if (!lanes_ok || !ing->m) {
        log_write(LOG_ERROR, "out of memory", LF_END);
        goto done;
    }
    ing->m->stall_ms = cfg->healthz_stall_ms;
    if (cfg->metrics_addr) {
        ing->http = http_start(cfg->metrics_addr, ing->m, MW_VERSION, ing->errstr, sizeof ing->errstr);
        if (!ing->http) {
            log_write(LOG_ERROR, ing->errstr, LF_END);
            goto done;
        }
        log_write(LOG_INFO, "serving /metrics, /healthz, /readyz", LF_S("addr", cfg->metrics_addr), LF_END);
    }
    /* Kafka clients first: a configuration error stops the worker at once, before any wait
     * for PostgreSQL. */
    ing->producer = kafka_producer_new(cfg, on_delivery, ing, ing->errstr, sizeof ing->errstr);
    if (!ing->producer) {
        log_write(LOG_ERROR, ing->errstr, LF_END);
        goto done;
    }
    ing->consumer = kafka_consumer_new(cfg, on_rebalance, on_stats, ing, ing->errstr,
                                       sizeof ing->errstr);
    if (!ing->consumer) {
        log_write(LOG_ERROR, ing->errstr, LF_END);
        goto done;
    }
    if (!wait_for_database(ing)) {
        rc = *run ? 1 : 0;
        goto done;
    }
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, cfg->input_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(ing->consumer, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (err) {
        log_write(LOG_ERROR, "cannot subscribe", LF_S("error", rd_kafka_err2str(err)), LF_END);
        goto done;
    }
    log_write(LOG_INFO, "worker started", LF_S("topic", cfg->input_topic),
              LF_S("group", cfg->group_id), LF_S("results_topic", cfg->results_topic),
              LF_S("dlq_topic", cfg->dlq_topic), LF_END);

    while (!ing->fatal && !stopping(ing)) {
        atomic_store(&ing->m->heartbeat_ms, now_ms());
        /* A lane whose next transaction is full while its statement runs: wait for
         * PostgreSQL, not for more messages (bounded memory). */
        struct pollfd full[MAX_LANES];
        int n_full = 0;
        for (int l = 0; l < ing->n_lanes; l++) {
            lane *L = &ing->lanes[l];
            if (L->flushing && L->pend_items >= txn_cap(ing, L))
                full[n_full++] = (struct pollfd){db_socket(L->db), POLLIN, 0};
        }
        if (n_full) {
            bool done = false;
            for (int l = 0; l < ing->n_lanes; l++) {
                lane *L = &ing->lanes[l];
                bool was = L->flushing;
                flush_poll(ing, L, false);
                done |= was && !L->flushing;
            }
            if (!done) poll(full, (nfds_t)n_full, 5);
            rd_kafka_poll(ing->producer, 0);
            flush_due_lanes(ing);
            continue;
        }
        int timeout = 100;
        if (any_flushing(ing)) timeout = 1;
        for (int l = 0; l < ing->n_lanes; l++) {
            lane *L = &ing->lanes[l];
            if (L->flushing || !L->pend_items) continue;
            int64_t left = L->pend_since_ms + cfg->txn_max_wait_ms - now_ms();
            if (left < timeout) timeout = left < 0 ? 0 : (int)left;
        }
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(ing->consumer, timeout);
        if (rkm) handle_message(ing, rkm);
        for (int l = 0; l < ing->n_lanes; l++) flush_poll(ing, &ing->lanes[l], false);
        drain_flights(ing, false);
        if (!ing->n_pend && !any_flushing(ing)) idle_ping(ing);
        flush_due_lanes(ing);
    }
    /* Finish the batch in hand and its acknowledgements (bounded by the stop deadline),
     * then leave the group. */
    if (!ing->fatal) flush(ing);
    if (!ing->fatal && !drain_flights(ing, true))
        log_write(LOG_WARN, "stop deadline reached: unacknowledged results will be sent again"
                  " by the next owner of their partitions", LF_END);
    rc = ing->fatal ? 1 : 0;
    log_write(LOG_INFO, "stopping: committing and leaving the group", LF_END);

done:
    if (ing->producer) {
        /* Whatever is still unacknowledged past the deadline is purged: its delivery
         * reports are served now, while the flights they point to still exist. */
        rd_kafka_purge(ing->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(ing->producer, 2000);
    }
    /* Flights hold consumer messages: released before the consumer is destroyed. */
    while (ing->fl_head) {
        flight *f = ing->fl_head;
        ing->fl_head = f->next;
        flight_free(f);
    }
    ing->fl_tail = NULL;
    ing->n_flights = 0;
    if (ing->consumer) close_consumer(ing);
    if (ing->producer) rd_kafka_destroy(ing->producer);
    for (int i = 0; i < ing->n_pend; i++) pend_release(&ing->pend[i]);
    free(ing->pend);
    free(ing->parts);
    for (int l = 0; l < ing->n_lanes; l++) {
        plan_free(&ing->lanes[l].plan);
        jsonw_free(&ing->lanes[l].doc);
        db_destroy(ing->lanes[l].db);
    }
    jsonw_free(&ing->out);
    http_stop(ing->http);
    metrics_destroy(ing->m);
    log_write(LOG_INFO, "worker stopped", LF_I("exit_status", rc), LF_END);
    return rc;
}
