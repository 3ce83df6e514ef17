/*
 * lane: one PostgreSQL connection and its transaction, as a state machine; see lane.h.
 */
#include "lane.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "ingest_state.h"

int lane_init(mw_lane *lane, int id, const mw_config *cfg) {
    lane->id = id;
    lane->state = LANE_IDLE;
    plan_init(&lane->plan);
    jsonw_init(&lane->doc);
    lane->db = db_new(cfg);
    return lane->db ? 0 : -1;
}

void lane_term(mw_lane *lane) {
    plan_free(&lane->plan);
    jsonw_free(&lane->doc);
    db_destroy(lane->db);
    lane->db = NULL;
}

static const char *state_name(enum lane_state s) {
    switch (s) {
    case LANE_IDLE: return "idle";
    case LANE_PREPARING: return "preparing";
    case LANE_APPLYING: return "applying";
    case LANE_APPLYING_REVOKED: return "applying_revoked";
    }
    return "?";
}

/* The one place a lane's state changes. */
void lane_set_state(mw_lane *lane, enum lane_state to) {
    enum lane_state from = lane->state;
    bool ok;
    switch (from) {
    case LANE_IDLE: ok = to == LANE_PREPARING; break;
    case LANE_PREPARING: ok = to == LANE_APPLYING || to == LANE_IDLE; break;
    case LANE_APPLYING: ok = to == LANE_APPLYING_REVOKED || to == LANE_PREPARING; break;
    case LANE_APPLYING_REVOKED: ok = to == LANE_PREPARING; break;
    default: ok = false; break;
    }
    if (!ok) {
        log_write(LOG_ERROR, "impossible lane state change", LF_I("connection", lane->id),
                  LF_S("from", state_name(from)), LF_S("to", state_name(to)), LF_END);
        abort();
    }
    lane->state = to;
}

bool lane_applying(const mw_lane *lane) {
    return lane->state == LANE_APPLYING || lane->state == LANE_APPLYING_REVOKED;
}

bool lanes_any_applying(const ingest *ing) {
    for (int l = 0; l < ing->n_lanes; l++)
        if (lane_applying(&ing->lanes[l])) return true;
    return false;
}

void lane_revoked(mw_lane *lane) {
    /* Preparing: the next attempt plans again anyway. */
    if (lane->state == LANE_APPLYING) lane_set_state(lane, LANE_APPLYING_REVOKED);
}

int lane_txn_cap(const ingest *ing, const mw_lane *lane) {
    int cap = ing->cfg->txn_max_items;
    return lane->behind && ing->cfg->txn_backlog_items > cap ? ing->cfg->txn_backlog_items : cap;
}

/* The lane's waiting messages make a transaction: enough items, or the oldest waited long
 * enough. */
static bool txn_due(const ingest *ing, const mw_lane *lane) {
    return lane->waiting_items && (lane->waiting_items >= ing->cfg->txn_max_items ||
                                   now_ms() - lane->waiting_since_ms >= ing->cfg->txn_max_wait_ms);
}

/* PREPARING, once the first attempt returned st: retries (with backoff, synchronously),
 * then the rejects of replayed messages. False when the transaction was abandoned (its
 * messages are consumed again; the lane is IDLE). */
static bool lane_settle(ingest *ing, mw_lane *lane, enum db_status st) {
    for (int attempt = 0;; attempt++) {
        if (attempt > 0) st = txn_apply_sync(ing, lane);
        if (st == DB_OK) st = txn_load_replay_rejects(ing, lane);
        atomic_store(&ing->m->db_up, st != DB_TRANSIENT);
        if (st == DB_OK) return true;
        atomic_fetch_add(&ing->m->db_errors[st == DB_TRANSIENT ? DB_TRANSIENT : DB_FATAL], 1);
        if (st == DB_FATAL) {
            log_write(LOG_ERROR, "PostgreSQL error that retrying cannot fix: stopping",
                      LF_S("error", lane->errstr), LF_END);
            ing->fatal = true;
            break;
        }
        if (lane->merged && strncmp(lane->errstr, "MW001", 5) == 0) {
            /* The table stopped being plain since it was read: generations, at once. */
            log_write(LOG_INFO, "customer_metadata has rules of its own: items apply one by one, in generations",
                      LF_END);
            ing->plain = 0;
            ing->plain_read_ms = now_ms();
            continue;
        }
        if (!flow_backoff(ing, attempt, "database", lane->errstr)) break;
    }
    log_write(LOG_WARN, "batch abandoned: its messages will be consumed again",
              LF_I("messages", lane->txn_messages), LF_I("connection", lane->id), LF_END);
    /* Nothing stored for these messages; drop everything pending of their partitions so
     * that no later message of theirs is committed past them. */
    pending_drop_lane(ing, lane);
    lane_set_state(lane, LANE_IDLE);
    flow_pause(ing, false);
    return false;
}

/* IDLE → PREPARING: marks the lane's waiting messages (up to MAX_TXN_PARTS partitions) as
 * one transaction and sends its statement. True when it must go on synchronously
 * (PREPARING: nothing to write, or the statement could not be sent), with the status in
 * *st; false when the statement is in PostgreSQL's hands (APPLYING) or nothing was waiting
 * (IDLE). */
static bool lane_start(ingest *ing, mw_lane *lane, enum db_status *st) {
    lane_set_state(lane, LANE_PREPARING);
    lane->txn_messages = lane->txn_items = 0;
    lane->txn_waited_ms = lane->waiting_items ? now_ms() - lane->waiting_since_ms : 0;
    /* One transaction covers at most MAX_TXN_PARTS partitions; messages of further
     * partitions wait for the next one (all of a partition's messages together). */
    int np = 0;
    for (int i = 0; i < ing->pending.n; i++) {
        pending_msg *m = &ing->pending.msgs[i];
        if (m->in_txn || lane_of(ing, m->rkm->partition) != lane) continue;
        int k = 0;
        while (k < np && lane->offsets_part[k] != m->rkm->partition) k++;
        if (k == np) {
            if (np == MAX_TXN_PARTS) continue;
            lane->offsets_part[np++] = m->rkm->partition;
        }
        m->in_txn = true;
        lane->txn_messages++;
        lane->txn_items += m->batch.n_items;
    }
    pending_recount(ing);
    if (!lane->txn_messages) {
        lane_set_state(lane, LANE_IDLE);
        return false;
    }
    lane->behind = lane->txn_items >= ing->cfg->txn_max_items;
    lane->txn_started_ms = now_ms();
    bool empty;
    *st = txn_prepare(ing, lane, &empty);
    if (*st == DB_OK && !empty) {
        lane->db_t0 = now_ms();
        *st = db_apply_send(lane->db, ing->cfg->group_id, ing->cfg->input_topic, &lane->offsets,
                            lane->doc.buf, lane->errstr, sizeof lane->errstr);
        if (*st == DB_OK) {
            lane_set_state(lane, LANE_APPLYING);
            return false;
        }
        *st = txn_applied(ing, lane, *st, false);
    }
    return true;
}

/* PREPARING → IDLE, the rows in PostgreSQL: the transaction's messages become a flight
 * whose results go to Kafka. With pipeline, the lane's next transaction (if due) is sent to
 * PostgreSQL first, so that the database works while these results are rendered and
 * acknowledged. */
static void lane_deliver(ingest *ing, mw_lane *lane, bool pipeline) {
    int64_t t1 = now_ms(), t0 = lane->txn_started_ms, waited = lane->txn_waited_ms;
    int n = lane->txn_messages, items = lane->txn_items;
    int rows = lane->merged ? lane->plan.n_rows : lane->plan.n_items; /* row versions written */
    flight *f = flight_take(ing, lane);
    lane_set_state(lane, LANE_IDLE);
    if (!f) {
        log_write(LOG_ERROR, "out of memory", LF_END);
        ing->fatal = true;
        pending_drop_lane(ing, lane);
        return;
    }
    /* Results are produced before anything can complete flights (flights_drain): a flight
     * with no delivery in flight counts as acknowledged. */
    enum db_status next_st = DB_OK;
    bool next_sync = pipeline && !ing->paused && txn_due(ing, lane) && lane_start(ing, lane, &next_st);
    flight_produce(ing, f);
    flow_pause(ing, false);
    log_write(LOG_DEBUG, "batch done", LF_I("messages", n), LF_I("items", items), LF_I("rows", rows),
              LF_I("wait_ms", waited), LF_I("db_ms", t1 - t0), LF_I("total_ms", now_ms() - t0),
              LF_I("connection", lane->id), LF_END);
    flights_bound(ing);
    if (next_sync && lane_settle(ing, lane, next_st)) lane_deliver(ing, lane, false);
}

/* Starts the lane's transaction; on the happy path the statement is sent and lane_poll
 * completes it, so that the next messages are consumed and decoded while PostgreSQL works. */
static void lane_begin(ingest *ing, mw_lane *lane) {
    enum db_status st;
    if (lane_start(ing, lane, &st) && lane_settle(ing, lane, st)) lane_deliver(ing, lane, false);
}

void lanes_start_due(ingest *ing) {
    for (int l = 0; l < ing->n_lanes; l++) {
        mw_lane *lane = &ing->lanes[l];
        if (lane->state == LANE_IDLE && txn_due(ing, lane)) lane_begin(ing, lane);
    }
}

void lane_poll(ingest *ing, mw_lane *lane, bool wait) {
    int64_t cancelled_ms = 0;
    while (lane_applying(lane)) {
        int done = 0;
        enum db_status st = db_apply_poll(lane->db, &done, lane->errstr, sizeof lane->errstr);
        if (!done && wait && cancelled_ms && now_ms() - cancelled_ms > 2000) {
            /* No answer to the cancel (PostgreSQL unreachable): give the connection up. */
            db_drop(lane->db);
            snprintf(lane->errstr, sizeof lane->errstr, "statement abandoned at the stop deadline");
            st = DB_TRANSIENT;
            done = 1;
        }
        if (done) {
            bool plan_stale = lane->state == LANE_APPLYING_REVOKED;
            lane_set_state(lane, LANE_PREPARING);
            if (lane_settle(ing, lane, txn_applied(ing, lane, st, plan_stale)))
                lane_deliver(ing, lane, !wait);
            return;
        }
        if (!wait) return;
        /* Stopping and past SHUTDOWN_TIMEOUT_MS: a statement PostgreSQL still holds (a lock,
         * a slow disk) is cancelled; its batch is abandoned, uncommitted. */
        if (!cancelled_ms && flow_past_deadline(ing)) {
            log_write(LOG_WARN, "stop deadline reached: cancelling the statement in PostgreSQL",
                      LF_I("connection", lane->id), LF_END);
            db_cancel(lane->db);
            cancelled_ms = now_ms();
        }
        struct pollfd pfd = {db_socket(lane->db), POLLIN, 0};
        if (pfd.fd >= 0) poll(&pfd, 1, 100);
        flow_heartbeat(ing);
    }
}

void lanes_finish(ingest *ing) {
    for (int l = 0; l < ing->n_lanes; l++) lane_poll(ing, &ing->lanes[l], true);
    for (int l = 0; l < ing->n_lanes && !flow_past_deadline(ing); l++) lane_begin(ing, &ing->lanes[l]);
    for (int l = 0; l < ing->n_lanes; l++) lane_poll(ing, &ing->lanes[l], true);
}
