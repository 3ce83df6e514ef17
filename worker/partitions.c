/*
 * partitions: the partition table and the rebalance handling; see partitions.h.
 */
#include "partitions.h"

#include <stdlib.h>

#include "../common/log.h"
#include "db.h"
#include "ingest_state.h"

void partitions_free(partition_table *t) {
    free(t->parts);
    if (t->recorded) rd_kafka_topic_partition_list_destroy(t->recorded);
    *t = (partition_table){0};
}

partition_state *partitions_find(partition_table *t, int32_t part) {
    for (int i = 0; i < t->n; i++)
        if (t->parts[i].part == part) return &t->parts[i];
    return NULL;
}

partition_state *partitions_add(partition_table *t, int32_t part) {
    partition_state *ps = partitions_find(t, part);
    if (ps) return ps;
    if (t->n == t->cap) {
        int cap = t->cap ? t->cap * 2 : 16;
        partition_state *n = realloc(t->parts, (size_t)cap * sizeof *n);
        if (!n) return NULL;
        t->parts = n;
        t->cap = cap;
    }
    ps = &t->parts[t->n++];
    *ps = (partition_state){part, -1, -1, false};
    return ps;
}

static void partitions_remove(partition_table *t, int32_t part) {
    partition_state *ps = partitions_find(t, part);
    if (ps) *ps = t->parts[--t->n];
}

void partitions_forget_offsets(ingest *ing, const mw_lane *lane) {
    for (int k = 0; k < ing->partitions.n; k++)
        if (lane_of(ing, ing->partitions.parts[k].part) == lane) ing->partitions.parts[k].known = false;
}

/* Records the partitions given (assigned from the main loop, partitions_assign_recorded). */
static void record_assignment(ingest *ing, rd_kafka_t *rk,
                              const rd_kafka_topic_partition_list_t *parts) {
    partition_table *t = &ing->partitions;
    if (!t->recorded) t->recorded = rd_kafka_topic_partition_list_new(parts->cnt);
    for (int i = 0; i < parts->cnt; i++)
        rd_kafka_topic_partition_list_add(t->recorded, parts->elems[i].topic,
                                          parts->elems[i].partition);
    rd_kafka_yield(rk); /* return from the poll that serves this callback: assign at once */
}

/* A revocation that comes before the main loop assigned what the callback recorded (the
 * poll is yielded at once, so this is rare): the recorded partitions are assigned now, from
 * the group's committed offsets, so that librdkafka's assignment and the revocation agree. */
static void assign_recorded_now(ingest *ing, rd_kafka_t *rk) {
    rd_kafka_topic_partition_list_t *r = ing->partitions.recorded;
    if (!r) return;
    ing->partitions.recorded = NULL;
    for (int i = 0; i < r->cnt; i++) partitions_add(&ing->partitions, r->elems[i].partition);
    rd_kafka_error_t *error = rd_kafka_incremental_assign(rk, r);
    if (error) {
        log_write(LOG_ERROR, "incremental assign failed", LF_S("error", rd_kafka_error_string(error)), LF_END);
        rd_kafka_error_destroy(error);
    }
    if (ing->paused) rd_kafka_pause_partitions(rk, r);
    rd_kafka_topic_partition_list_destroy(r);
}

void partitions_assign_recorded(ingest *ing) {
    partition_table *t = &ing->partitions;
    rd_kafka_topic_partition_list_t *parts = t->recorded;
    if (!parts) return;
    t->recorded = NULL;
    rd_kafka_t *rk = ing->consumer;
    rd_kafka_resp_err_t e = rd_kafka_committed(rk, parts, 10000);
    if (e) log_write(LOG_WARN, "cannot read committed offsets", LF_S("error", rd_kafka_err2str(e)), LF_END);
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        partition_state *ps = partitions_add(t, tp->partition);
        int64_t pg = -1, pg_acked = -1;
        /* The partition's own connection, or another one if it is busy with a statement. */
        mw_db *db = lane_of(ing, tp->partition)->db;
        for (int l = 0; l < ing->n_lanes && db_busy(db); l++) db = ing->lanes[l].db;
        if (ps && db_read_offsets(db, ing->cfg->group_id, ing->cfg->input_topic, &tp->partition,
                                  1, &pg, &pg_acked, ing->errstr, sizeof ing->errstr) == DB_OK) {
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
    atomic_store(&ing->m->assigned_partitions, t->n);
    /* librdkafka 2.0 keeps a partition's paused flag across rebalances. */
    if (ing->paused) rd_kafka_pause_partitions(rk, parts);
    else rd_kafka_resume_partitions(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
}

static void revoke(ingest *ing, rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts) {
    bool lost = rd_kafka_assignment_lost(rk);
    assign_recorded_now(ing, rk);
    pending_drop_partitions(ing, parts);
    flights_drain(ing, false); /* store what is acknowledged before committing */
    if (!lost && ing->closing && !atomic_load(&ing->m->coord_up)) {
        /* A commit without a coordinator waits for one for session.timeout.ms (and so does
         * the consumer's destruction), past the 10 s the close allows. */
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
        partitions_remove(&ing->partitions, parts->elems[i].partition);
    }
    atomic_store(&ing->m->assigned_partitions, ing->partitions.n);
    rd_kafka_error_t *error = rd_kafka_incremental_unassign(rk, parts);
    if (error) {
        log_write(LOG_ERROR, "incremental unassign failed", LF_S("error", rd_kafka_error_string(error)), LF_END);
        rd_kafka_error_destroy(error);
    }
}

void partitions_on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *parts, void *opaque) {
    ingest *ing = opaque;
    atomic_fetch_add(&ing->m->rebalances, 1);
    switch (err) {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        record_assignment(ing, rk, parts);
        break;
    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
        revoke(ing, rk, parts);
        break;
    default:
        log_write(LOG_ERROR, "rebalance error", LF_S("error", rd_kafka_err2str(err)), LF_END);
        rd_kafka_assign(rk, NULL);
        break;
    }
}
