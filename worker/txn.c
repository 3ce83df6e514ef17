/*
 * txn: preparing and applying one transaction of a lane; see txn.h.
 */
#include "txn.h"

#include <stdio.h>
#include <stdlib.h>

#include "../common/log.h"
#include "ingest_state.h"

static enum db_status out_of_memory(mw_lane *lane) {
    snprintf(lane->errstr, sizeof lane->errstr, "out of memory");
    return DB_TRANSIENT;
}

/* PostgreSQL's next offset for a partition went back, from what this worker had read or
 * committed (ps->pg_next) to pg_next: transactions it had seen committed are gone, with their
 * offsets. Offsets only ever move forward, so this is a failover to a standby that lacked the
 * last commits (asynchronous replication), or a restore. The messages from pg_next on must be
 * applied again: the partition's pending messages (all past the lost ones) are dropped and its
 * consumer position is moved back to pg_next (the beginning when the row itself is gone), so
 * the messages come again and go through the ordinary path; those whose results were already
 * sent get them again, identical (at least once to Kafka). */
static void rewind_partition(ingest *ing, partition_state *ps, int64_t pg_next) {
    int64_t to = pg_next >= 0 ? pg_next : RD_KAFKA_OFFSET_BEGINNING;
    log_write(LOG_WARN, "PostgreSQL lost committed transactions (failover to a standby that lacked them?):"
              " applying the partition's messages again from its recorded offset",
              LF_I("partition", ps->part), LF_I("pg_next_offset_was", ps->pg_next),
              LF_I("pg_next_offset", pg_next), LF_I("messages_lost", pg_next >= 0 ? ps->pg_next - pg_next : -1),
              LF_END);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, ing->cfg->input_topic, ps->part)->offset = to;
    pending_drop_partitions(ing, l);
    rd_kafka_error_t *e = rd_kafka_seek_partitions(ing->consumer, l, 0);
    /* Asynchronous (timeout 0): "in progress" is its success. */
    if (!e && l->elems[0].err && l->elems[0].err != RD_KAFKA_RESP_ERR__IN_PROGRESS)
        e = rd_kafka_error_new(l->elems[0].err, "%s", rd_kafka_err2str(l->elems[0].err));
    if (e) {
        /* The messages cannot be had again by this worker: stop rather than skip them (a
         * restart resumes from the committed offsets). */
        log_write(LOG_ERROR, "cannot move the consumer back: stopping", LF_I("partition", ps->part),
                  LF_S("error", rd_kafka_error_string(e)), LF_END);
        rd_kafka_error_destroy(e);
        ing->fatal = true;
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* Reads PostgreSQL's next offset for the transaction's partitions not known yet. */
static enum db_status load_offsets(ingest *ing, mw_lane *lane) {
    /* A transaction covers at most MAX_TXN_PARTS partitions (lane_start): all fit. */
    int32_t want[MAX_TXN_PARTS];
    int n = 0;
    for (int i = 0; i < ing->pending.n && n < MAX_TXN_PARTS; i++) {
        pending_msg *m = &ing->pending.msgs[i];
        if (!pending_in_txn_of(ing, m, lane)) continue;
        partition_state *ps = partitions_add(&ing->partitions, m->rkm->partition);
        if (!ps) return DB_TRANSIENT;
        if (ps->known) continue;
        bool dup = false;
        for (int k = 0; k < n; k++) dup |= want[k] == ps->part;
        if (!dup) want[n++] = ps->part;
    }
    if (!n) return DB_OK;
    int64_t next[MAX_TXN_PARTS];
    enum db_status st = db_read_offsets(lane->db, ing->cfg->group_id, ing->cfg->input_topic, want,
                                        n, next, NULL, lane->errstr, sizeof lane->errstr);
    if (st != DB_OK) return st;
    for (int k = 0; k < n; k++) {
        partition_state *ps = partitions_find(&ing->partitions, want[k]);
        if (!ps) continue;
        if (ps->pg_next >= 0 && next[k] < ps->pg_next) rewind_partition(ing, ps, next[k]);
        ps->pg_next = next[k];
        ps->known = true;
    }
    return DB_OK;
}

static int by_partition(const void *a, const void *b) {
    int32_t x = ((const txn_partition *)a)->part, y = ((const txn_partition *)b)->part;
    return (x > y) - (x < y);
}

/* Fills lane->offsets from the transaction's partitions, sorted ascending (lock order:
 * two workers never deadlock on offsets). */
static void set_offsets(mw_lane *lane, txn_partition *tp, int n) {
    qsort(tp, (size_t)n, sizeof *tp, by_partition);
    for (int i = 0; i < n; i++) {
        lane->offsets_part[i] = tp[i].part;
        lane->offsets_expected[i] = tp[i].expected;
        lane->offsets_next[i] = tp[i].next;
        lane->offsets_acked[i] = tp[i].acked;
    }
    lane->offsets = (mw_offsets){n, lane->offsets_part, lane->offsets_expected,
                                 lane->offsets_next, lane->offsets_acked};
}

/* Reads customer_metadata_plain() when never read or older than PLAIN_REREAD_MS. */
static enum db_status refresh_plain(ingest *ing, mw_lane *lane) {
    if (ing->plain >= 0 && now_ms() - ing->plain_read_ms < PLAIN_REREAD_MS) return DB_OK;
    int plain;
    enum db_status st = db_table_plain(lane->db, &plain, lane->errstr, sizeof lane->errstr);
    if (st != DB_OK) return st;
    if (plain != ing->plain)
        log_write(LOG_INFO, plain ? "customer_metadata is plain: a key's items are merged into one row per transaction"
                                  : "customer_metadata has rules of its own: items apply one by one, in generations",
                  LF_END);
    ing->plain = plain;
    ing->plain_read_ms = now_ms();
    return DB_OK;
}

enum db_status txn_prepare(ingest *ing, mw_lane *lane, bool *empty) {
    *empty = true;
    enum db_status st = load_offsets(ing, lane);
    if (st != DB_OK) return st;
    pending_clear_rejects(ing, lane);
    plan_reset(&lane->plan);

    txn_partition *tp = lane->txn_parts;
    int np = 0;
    for (int i = 0; i < ing->pending.n; i++) {
        pending_msg *m = &ing->pending.msgs[i];
        if (!pending_in_txn_of(ing, m, lane)) continue;
        partition_state *ps = partitions_find(&ing->partitions, m->rkm->partition);
        m->replay = ps && ps->pg_next >= 0 && m->rkm->offset < ps->pg_next;
        if (m->replay || m->batch.bad_request) continue;
        bool any = false;
        for (int k = 0; k < m->batch.n_items; k++) {
            if (m->batch.items[k].error) continue;
            if (plan_add(&lane->plan, &m->batch.items[k], m->rkm->partition, m->rkm->offset))
                return out_of_memory(lane);
            any = true;
        }
        if (!any) continue;
        int k = 0;
        while (k < np && tp[k].part != m->rkm->partition) k++;
        if (k == np) {
            if (np == MAX_TXN_PARTS) return DB_FATAL; /* lane_start keeps this from happening */
            tp[np++] = (txn_partition){m->rkm->partition, ps ? ps->pg_next : -1, 0,
                                       ps ? ps->acked : -1};
        }
        tp[k].next = m->rkm->offset + 1;
    }
    set_offsets(lane, tp, np);
    if (lane->plan.n_items == 0) return DB_OK;
    *empty = false;

    if (plan_merge(&lane->plan)) return out_of_memory(lane);
    st = refresh_plain(ing, lane);
    if (st != DB_OK) return st;
    lane->merged = ing->plain == 1;
    jsonw_reset(&lane->doc);
    if (lane->merged) plan_merged_json(&lane->plan, &lane->doc);
    else plan_rows_json(&lane->plan, &lane->doc);
    return lane->doc.oom ? out_of_memory(lane) : DB_OK;
}

enum db_status txn_applied(ingest *ing, mw_lane *lane, enum db_status st, bool plan_stale) {
    if (st == DB_DATA && plan_stale) {
        /* Partitions were revoked while the statement ran: plan again (synchronously,
         * through the retry) before isolating the refused item. */
        snprintf(lane->errstr, sizeof lane->errstr, "partitions revoked during the batch");
        st = DB_TRANSIENT;
    }
    if (st == DB_DATA) {
        atomic_fetch_add(&ing->m->db_errors[DB_DATA], 1);
        log_write(LOG_WARN, "PostgreSQL refused an item: applying the batch item by item",
                  LF_S("error", lane->errstr), LF_I("items", lane->plan.n_items), LF_END);
        jsonw_reset(&lane->doc);
        plan_isolated_json(&lane->plan, &lane->doc);
        st = lane->doc.oom ? out_of_memory(lane)
                           : db_apply_isolated(lane->db, ing->cfg->group_id, ing->cfg->input_topic,
                                               &lane->offsets, lane->doc.buf, pending_on_reject,
                                               ing, lane->errstr, sizeof lane->errstr);
        /* A data error now (outside any item) cannot be isolated. */
        if (st == DB_DATA) st = DB_FATAL;
    }
    if (st == DB_OK) {
        for (int k = 0; k < lane->offsets.n; k++) {
            partition_state *ps = partitions_find(&ing->partitions, lane->offsets.part[k]);
            if (ps) ps->pg_next = lane->offsets.next[k];
        }
        atomic_fetch_add(&ing->m->db_transactions, 1);
        metrics_observe(&ing->m->db_seconds, (double)(now_ms() - lane->db_t0) / 1000.0);
        metrics_observe(&ing->m->batch_items, lane->plan.n_items);
    } else {
        /* Read the offsets again before retrying: another worker may have moved them. */
        partitions_forget_offsets(ing, lane);
        pending_clear_rejects(ing, lane);
    }
    return st;
}

enum db_status txn_apply_sync(ingest *ing, mw_lane *lane) {
    bool empty;
    enum db_status st = txn_prepare(ing, lane, &empty);
    if (st != DB_OK || empty) return st;
    lane->db_t0 = now_ms();
    st = db_apply(lane->db, ing->cfg->group_id, ing->cfg->input_topic, &lane->offsets,
                  lane->doc.buf, lane->errstr, sizeof lane->errstr);
    return txn_applied(ing, lane, st, false);
}

enum db_status txn_load_replay_rejects(ingest *ing, mw_lane *lane) {
    for (int k = 0; k < ing->partitions.n; k++) {
        int32_t part = ing->partitions.parts[k].part;
        if (lane_of(ing, part) != lane) continue;
        int64_t lo = -1, hi = -1;
        for (int i = 0; i < ing->pending.n; i++) {
            pending_msg *m = &ing->pending.msgs[i];
            if (!m->in_txn || !m->replay || m->rkm->partition != part || m->batch.bad_request)
                continue;
            if (lo < 0 || m->rkm->offset < lo) lo = m->rkm->offset;
            if (m->rkm->offset > hi) hi = m->rkm->offset;
        }
        if (lo < 0) continue;
        enum db_status st = db_read_rejects(lane->db, ing->cfg->group_id, ing->cfg->input_topic,
                                            part, lo, hi, pending_on_reject, ing, lane->errstr,
                                            sizeof lane->errstr);
        if (st != DB_OK) return st;
    }
    return DB_OK;
}
