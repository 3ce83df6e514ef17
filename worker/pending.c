/*
 * pending: the queue of consumed messages; see pending.h.
 */
#include "pending.h"

#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "ingest_state.h"

void pending_release(pending_msg *m) {
    if (m->db_err) {
        for (int i = 0; i < m->n_items; i++) free(m->db_err[i]);
        free(m->db_err);
    }
    batch_free(&m->batch);
    rd_kafka_message_destroy(m->rkm);
}

void pending_free(pending_queue *q) {
    for (int i = 0; i < q->n; i++) pending_release(&q->msgs[i]);
    free(q->msgs);
    *q = (pending_queue){0};
}

/* A message counts for its items, a bad request (no items) for one. */
static int weight(const pending_msg *m) { return m->batch.n_items ? m->batch.n_items : 1; }

static void append(ingest *ing, rd_kafka_message_t *rkm) {
    pending_queue *q = &ing->pending;
    if (q->n == q->cap) {
        int cap = q->cap ? q->cap * 2 : 64;
        pending_msg *n = realloc(q->msgs, (size_t)cap * sizeof *n);
        if (!n) goto oom;
        q->msgs = n;
        q->cap = cap;
    }
    pending_msg *m = &q->msgs[q->n];
    memset(m, 0, sizeof *m);
    m->rkm = rkm;
    m->arrived_ms = now_ms();
    mw_source src = {ing->cfg->input_topic, rkm->partition, rkm->offset};
    if (batch_decode(&m->batch, rkm->payload, rkm->len, &src, ing->cfg->max_batch_items) != 0)
        goto oom;
    m->decoded = true;
    m->n_items = m->batch.n_items;
    m->invalid = m->batch.invalid_count;
    m->bad = m->batch.bad_request != NULL;
    mw_lane *lane = lane_of(ing, rkm->partition);
    if (lane->waiting_items == 0) lane->waiting_since_ms = m->arrived_ms;
    q->n++;
    lane->waiting_items += weight(m);
    atomic_fetch_add(&ing->m->messages_consumed, 1);
    return;
oom:
    /* Not stored: the message is consumed again after a restart. Stop cleanly. */
    log_write(LOG_ERROR, "out of memory decoding a message", LF_I("partition", rkm->partition),
              LF_I("offset", rkm->offset), LF_END);
    rd_kafka_message_destroy(rkm);
    ing->fatal = true;
}

void pending_consume(ingest *ing, rd_kafka_message_t *rkm) {
    if (rkm->err) {
        log_write(LOG_WARN, "consumer error", LF_S("error", rd_kafka_message_errstr(rkm)),
                  LF_S("code", rd_kafka_err2name(rkm->err)), LF_END);
        if (rkm->err == RD_KAFKA_RESP_ERR__FATAL) ing->fatal = true;
        rd_kafka_message_destroy(rkm);
        return;
    }
    append(ing, rkm);
}

void pending_recount(ingest *ing) {
    for (int l = 0; l < ing->n_lanes; l++) ing->lanes[l].waiting_items = 0;
    for (int i = 0; i < ing->pending.n; i++) {
        const pending_msg *m = &ing->pending.msgs[i];
        if (m->in_txn) continue;
        mw_lane *lane = lane_of(ing, m->rkm->partition);
        if (!lane->waiting_items || m->arrived_ms < lane->waiting_since_ms)
            lane->waiting_since_ms = m->arrived_ms;
        lane->waiting_items += weight(m);
    }
}

int pending_remove_if(ingest *ing, bool (*match)(ingest *, const pending_msg *, const void *),
                      const void *arg, pending_msg *out) {
    pending_queue *q = &ing->pending;
    int kept = 0, removed = 0;
    for (int r = 0; r < q->n; r++) {
        if (!match(ing, &q->msgs[r], arg)) q->msgs[kept++] = q->msgs[r];
        else if (out) out[removed++] = q->msgs[r];
        else {
            pending_release(&q->msgs[r]);
            removed++;
        }
    }
    q->n = kept;
    pending_recount(ing);
    return removed;
}

static bool in_partitions(ingest *ing, const pending_msg *m, const void *arg) {
    (void)ing;
    const rd_kafka_topic_partition_list_t *parts = arg;
    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].partition == m->rkm->partition) return true;
    return false;
}

void pending_drop_partitions(ingest *ing, const rd_kafka_topic_partition_list_t *parts) {
    for (int i = 0; i < ing->pending.n; i++) {
        const pending_msg *m = &ing->pending.msgs[i];
        if (m->in_txn && in_partitions(ing, m, parts)) lane_revoked(lane_of(ing, m->rkm->partition));
    }
    pending_remove_if(ing, in_partitions, parts, NULL);
}

static bool of_lane(ingest *ing, const pending_msg *m, const void *arg) {
    return lane_of(ing, m->rkm->partition) == arg;
}

void pending_drop_lane(ingest *ing, mw_lane *lane) { pending_remove_if(ing, of_lane, lane, NULL); }

bool pending_in_txn_of(ingest *ing, const pending_msg *m, const mw_lane *lane) {
    return m->in_txn && lane_of(ing, m->rkm->partition) == lane;
}

void pending_on_reject(void *opaque, int32_t part, int64_t off, int idx, const char *error) {
    ingest *ing = opaque;
    for (int i = 0; i < ing->pending.n; i++) {
        pending_msg *m = &ing->pending.msgs[i];
        if (!m->in_txn || m->rkm->partition != part || m->rkm->offset != off) continue;
        if (idx < 0 || idx >= m->batch.n_items) return;
        if (!m->db_err && !(m->db_err = calloc((size_t)m->batch.n_items, sizeof *m->db_err))) return;
        if (!m->db_err[idx]) m->db_rejects++;
        free(m->db_err[idx]);
        m->db_err[idx] = strdup(error);
        return;
    }
}

void pending_clear_rejects(ingest *ing, mw_lane *lane) {
    for (int i = 0; i < ing->pending.n; i++) {
        pending_msg *m = &ing->pending.msgs[i];
        if (!pending_in_txn_of(ing, m, lane) || !m->db_err) continue;
        for (int k = 0; k < m->batch.n_items; k++) free(m->db_err[k]);
        free(m->db_err);
        m->db_err = NULL;
        m->db_rejects = 0;
    }
}
