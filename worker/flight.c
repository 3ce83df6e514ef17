/*
 * flight: results and dead letters in flight, delivery reports, offsets stored; see
 * flight.h.
 */
#include "flight.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/log.h"
#include "ingest_state.h"
#include "result.h"

static void flight_free(flight *f) {
    for (int i = 0; i < f->n; i++) pending_release(&f->msgs[i]);
    free(f->msgs);
    free(f);
}

void flights_free(flight_queue *q) {
    while (q->head) {
        flight *f = q->head;
        q->head = f->next;
        flight_free(f);
    }
    *q = (flight_queue){0};
}

/* What a failed produce means (see flight.h). */
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
 * opaque. Returns 0 once librdkafka took it; else the error, after handling it (failed
 * counted for a retry, fatal for a configuration error) — except PF_TOO_LARGE, left to the
 * caller. While the producer's queue is full it waits, serving the heartbeat, but never
 * past the stop deadline. */
static rd_kafka_resp_err_t produce(ingest *ing, pending_msg *m, const char *topic, const void *key,
                                   size_t klen, const void *val, size_t vlen,
                                   rd_kafka_headers_t *hdrs) {
    flight *f = m->flight;
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            ing->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, klen),
            RD_KAFKA_V_VALUE((void *)val, vlen), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(m), RD_KAFKA_V_END);
        if (!err) {
            f->inflight++;
            return err; /* hdrs now owned by the message */
        }
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && !ing->fatal && !flow_past_deadline(ing)) {
            flow_heartbeat(ing);
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
static void produce_dead_letter(ingest *ing, pending_msg *m) {
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
            m->flight->failed++;
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
static void produce_result(ingest *ing, pending_msg *m, const char *key, size_t klen) {
    rd_kafka_resp_err_t err = produce(ing, m, ing->cfg->results_topic, key, klen, ing->out.buf,
                                      ing->out.len, NULL);
    if (produce_fail_class(err) == PF_TOO_LARGE) {
        produce_config_error(ing, ing->cfg->results_topic, err);
        m->flight->failed++;
    }
}

void flight_produce(ingest *ing, flight *f) {
    f->attempts++;
    for (int i = 0; i < f->n; i++) {
        pending_msg *m = &f->msgs[i];
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
        } else {
            int errors = b->invalid_count + m->db_rejects;
            for (int k = 0; k < b->n_items; k++) {
                const mw_item *it = &b->items[k];
                jsonw_reset(&ing->out);
                result_message(&ing->out, b, it,
                               result_item_error(it, m->db_err ? m->db_err[k] : NULL), errors);
                produce_result(ing, m, it->f[F_EVENT].p, it->f[F_EVENT].n);
            }
        }
        /* The results are copied into the producer: the batch is not needed any more. */
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
        const pending_msg *m = &f->msgs[i];
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

/* Stores, for commit, the offset after each partition's last message of the flight, and
 * moves the partition's acked offset (written with the next transaction's rows). */
static void store_offsets(ingest *ing, const flight *f) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
    for (int i = 0; i < f->n; i++) {
        const pending_msg *m = &f->msgs[i];
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_find(l, ing->cfg->input_topic, m->rkm->partition);
        if (!tp) tp = rd_kafka_topic_partition_list_add(l, ing->cfg->input_topic, m->rkm->partition);
        if (m->rkm->offset + 1 > tp->offset) tp->offset = m->rkm->offset + 1;
    }
    for (int i = 0; i < l->cnt; i++) {
        partition_state *ps = partitions_find(&ing->partitions, l->elems[i].partition);
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

bool flights_drain(ingest *ing, bool wait) {
    flight_queue *q = &ing->flights;
    int64_t start = now_ms();
    for (;;) {
        rd_kafka_poll(ing->producer, 0);
        while (q->head && q->head->inflight == 0) {
            flight *f = q->head;
            if (f->failed) {
                if (ing->fatal) break; /* stopping: the next owner produces them again */
                if (!f->retry_at_ms) {
                    f->retry_at_ms = now_ms() + flow_backoff_ms(ing, f->attempts - 1);
                    log_write(LOG_WARN, "results not acknowledged: producing them again",
                              LF_I("failed", f->failed), LF_I("attempt", f->attempts), LF_END);
                }
                if (now_ms() < f->retry_at_ms) break;
                f->failed = 0;
                f->retry_at_ms = 0;
                flight_produce(ing, f);
                continue;
            }
            count_outcomes(ing, f);
            store_offsets(ing, f);
            log_write(LOG_DEBUG, "results acknowledged", LF_I("messages", f->n),
                      LF_I("ms", now_ms() - f->started_ms), LF_END);
            q->head = f->next;
            if (!q->head) q->tail = NULL;
            q->n--;
            flight_free(f);
        }
        if (!wait || !q->head) return q->head == NULL;
        flow_heartbeat(ing);
        rd_kafka_poll(ing->producer, 20);
        if (now_ms() - start > 1000) flow_keepalive(ing, 0); /* serve the group meanwhile */
        if (ing->fatal || flow_past_deadline(ing)) return false;
    }
}

void flights_bound(ingest *ing) {
    int64_t wait_start = now_ms();
    while (ing->flights.n > ing->n_lanes && !ing->fatal && !flow_past_deadline(ing)) {
        flights_drain(ing, false);
        if (ing->flights.n > ing->n_lanes) {
            flow_heartbeat(ing);
            rd_kafka_poll(ing->producer, 20);
            /* Kafka unreachable for a while: keep serving the group, partitions paused. */
            if (now_ms() - wait_start > 1000) flow_keepalive(ing, 0);
        }
    }
    flow_pause(ing, false); /* the keepalive paused them: nothing else would resume them */
    flights_drain(ing, false);
}

static bool in_txn_of(ingest *ing, const pending_msg *m, const void *lane) {
    return pending_in_txn_of(ing, m, lane);
}

flight *flight_take(ingest *ing, mw_lane *lane) {
    flight *f = calloc(1, sizeof *f);
    int n = 0;
    for (int i = 0; i < ing->pending.n; i++) n += pending_in_txn_of(ing, &ing->pending.msgs[i], lane);
    if (!f || !(f->msgs = malloc((size_t)(n ? n : 1) * sizeof *f->msgs))) {
        free(f);
        return NULL;
    }
    f->n = pending_remove_if(ing, in_txn_of, lane, f->msgs);
    for (int i = 0; i < f->n; i++) f->msgs[i].flight = f;
    f->started_ms = now_ms();
    flight_queue *q = &ing->flights;
    if (q->tail) q->tail->next = f;
    else q->head = f;
    q->tail = f;
    q->n++;
    return f;
}

void flight_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    ingest *ing = opaque;
    pending_msg *pm = m->_private; /* the per-message opaque given to producev */
    const char *topic = rd_kafka_topic_name(m->rkt);
    if (pm) {
        pm->flight->inflight--;
        if (m->err) pm->flight->failed++;
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
