/*
 * ingest: setup, the main loop and teardown of `metadata-worker run`; see ingest.h for the
 * protocol and ingest_state.h for the modules the loop drives. One thread: librdkafka's
 * callbacks are served from the poll calls, so no state needs a lock.
 */
#include "ingest.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/log.h"
#include "db.h"
#include "ingest_state.h"
#include "kafka.h"

#ifndef MW_VERSION
#define MW_VERSION "dev"
#endif

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

static bool wait_for_database(ingest *ing) {
    for (int attempt = 0;; attempt++) {
        flow_heartbeat(ing);
        enum db_status st = db_check_schema(ing->lanes[0].db, ing->errstr, sizeof ing->errstr);
        atomic_store(&ing->m->db_up, st == DB_OK);
        if (st == DB_OK) return true;
        if (st == DB_FATAL) {
            log_write(LOG_ERROR, "cannot start: PostgreSQL refused the worker",
                      LF_S("error", ing->errstr), LF_END);
            return false;
        }
        log_write(LOG_WARN, "waiting for PostgreSQL", LF_S("error", ing->errstr), LF_END);
        for (int64_t end = now_ms() + flow_backoff_ms(ing, attempt); now_ms() < end;) {
            if (!*ing->run) return false;
            /* The producer connects at once: a refused Kafka configuration stops the worker
             * now, not once PostgreSQL is back. */
            rd_kafka_poll(ing->producer, 0);
            if (flow_kafka_refused(ing)) return false;
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
}

/* Commits the stored offsets and leaves the group, within a bounded time even when the
 * brokers are unreachable (rd_kafka_consumer_close alone may wait for them for ever). */
static void close_consumer(ingest *ing) {
    pending_free(&ing->pending);
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
                    partitions_on_rebalance(ing->consumer, rd_kafka_event_error(ev),
                                            rd_kafka_event_topic_partition_list(ev), ing);
                rd_kafka_event_destroy(ev);
            }
            partitions_assign_recorded(ing);
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

/* METRICS_ADDR's answers: the worker's metrics. */
static void probe_render(void *m, jsonw *out) { metrics_render(m, MW_VERSION, out); }
static int probe_healthy(void *m) { return metrics_healthy(m); }
static int probe_ready(void *m) { return metrics_ready(m); }

/* Creates the metrics, the HTTP endpoint, the lanes and the Kafka clients, waits for
 * PostgreSQL and subscribes. Returns 0; 1 after an error; 2 when stopped while waiting
 * (a clean exit). */
static int setup(ingest *ing) {
    const mw_config *cfg = ing->cfg;
    ing->n_lanes = cfg->db_connections < 1 ? 1 : cfg->db_connections > MAX_LANES ? MAX_LANES
                                                                                 : cfg->db_connections;
    bool lanes_ok = true;
    for (int l = 0; l < ing->n_lanes; l++) lanes_ok &= lane_init(&ing->lanes[l], l, cfg) == 0;
    ing->m = metrics_new();
    if (!lanes_ok || !ing->m) {
        log_write(LOG_ERROR, "out of memory", LF_END);
        return 1;
    }
    ing->m->stall_ms = cfg->healthz_stall_ms;
    if (cfg->metrics_addr) {
        const mw_http_probes probes = {probe_render, probe_healthy, probe_ready, ing->m};
        ing->http = http_start(cfg->metrics_addr, &probes, ing->errstr, sizeof ing->errstr);
        if (!ing->http) {
            log_write(LOG_ERROR, ing->errstr, LF_END);
            return 1;
        }
        log_write(LOG_INFO, "serving /metrics, /healthz, /readyz", LF_S("addr", cfg->metrics_addr), LF_END);
    }
    /* Kafka clients first: a configuration error stops the worker at once, before any wait
     * for PostgreSQL. */
    ing->producer = kafka_producer_new(cfg, flight_on_delivery, ing, ing->errstr, sizeof ing->errstr);
    if (!ing->producer) {
        log_write(LOG_ERROR, ing->errstr, LF_END);
        return 1;
    }
    ing->consumer = kafka_consumer_new(cfg, partitions_on_rebalance, on_stats, ing, ing->errstr,
                                       sizeof ing->errstr);
    if (!ing->consumer) {
        log_write(LOG_ERROR, ing->errstr, LF_END);
        return 1;
    }
    if (!wait_for_database(ing)) return *ing->run || ing->fatal ? 1 : 2;
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, cfg->input_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(ing->consumer, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (err) {
        log_write(LOG_ERROR, "cannot subscribe", LF_S("error", rd_kafka_err2str(err)), LF_END);
        return 1;
    }
    log_write(LOG_INFO, "worker started", LF_S("topic", cfg->input_topic),
              LF_S("group", cfg->group_id), LF_S("results_topic", cfg->results_topic),
              LF_S("dlq_topic", cfg->dlq_topic), LF_END);
    return 0;
}

/* A lane whose next transaction is full while its statement runs: wait for PostgreSQL, not
 * for more messages (bounded memory). False when no lane is full. */
static bool wait_for_full_lanes(ingest *ing) {
    struct pollfd full[MAX_LANES];
    int n_full = 0;
    for (int l = 0; l < ing->n_lanes; l++) {
        mw_lane *lane = &ing->lanes[l];
        if (lane_applying(lane) && lane->waiting_items >= lane_txn_cap(ing, lane))
            full[n_full++] = (struct pollfd){db_socket(lane->db), POLLIN, 0};
    }
    if (!n_full) return false;
    bool done = false;
    for (int l = 0; l < ing->n_lanes; l++) {
        mw_lane *lane = &ing->lanes[l];
        bool was = lane_applying(lane);
        lane_poll(ing, lane, false);
        done |= was && !lane_applying(lane);
    }
    if (!done) poll(full, (nfds_t)n_full, 5);
    rd_kafka_poll(ing->producer, 0);
    lanes_start_due(ing);
    return true;
}

/* How long the poll may wait: short while a statement runs, and never past the moment a
 * lane's oldest waiting message makes its transaction due. */
static int poll_timeout(ingest *ing) {
    int timeout = lanes_any_applying(ing) ? 1 : 100;
    for (int l = 0; l < ing->n_lanes; l++) {
        const mw_lane *lane = &ing->lanes[l];
        if (lane_applying(lane) || !lane->waiting_items) continue;
        int64_t left = lane->waiting_since_ms + ing->cfg->txn_max_wait_ms - now_ms();
        if (left < timeout) timeout = left < 0 ? 0 : (int)left;
    }
    return timeout;
}

/* poll (consume, decode) → apply (lanes) → report (flights) → commit (offsets stored as
 * flights complete; librdkafka commits them). */
static void main_loop(ingest *ing) {
    while (!ing->fatal && !flow_stopping(ing)) {
        flow_heartbeat(ing);
        if (wait_for_full_lanes(ing)) continue;
        flow_poll_consumer(ing, poll_timeout(ing));
        for (int l = 0; l < ing->n_lanes; l++) lane_poll(ing, &ing->lanes[l], false);
        flights_drain(ing, false);
        if (!ing->pending.n && !lanes_any_applying(ing)) idle_ping(ing);
        lanes_start_due(ing);
    }
    /* Finish the batch in hand and its acknowledgements (bounded by the stop deadline),
     * then leave the group. */
    if (!ing->fatal) lanes_finish(ing);
    if (!ing->fatal && !flights_drain(ing, true))
        log_write(LOG_WARN, "stop deadline reached: unacknowledged results will be sent again"
                  " by the next owner of their partitions", LF_END);
}

static void teardown(ingest *ing) {
    if (ing->producer) {
        /* Whatever is still unacknowledged past the deadline is purged: its delivery
         * reports are served now, while the flights they point to still exist. */
        rd_kafka_purge(ing->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(ing->producer, 2000);
    }
    /* Flights hold consumer messages: released before the consumer is destroyed. */
    flights_free(&ing->flights);
    if (ing->consumer) close_consumer(ing);
    if (ing->producer) rd_kafka_destroy(ing->producer);
    pending_free(&ing->pending);
    partitions_free(&ing->partitions);
    for (int l = 0; l < ing->n_lanes; l++) lane_term(&ing->lanes[l]);
    jsonw_free(&ing->out);
    http_stop(ing->http);
    metrics_destroy(ing->m);
}

int ingest_run(const mw_config *cfg, volatile sig_atomic_t *run) {
    ingest *ing = calloc(1, sizeof *ing); /* large (the lanes' offset arrays): not on the stack */
    if (!ing) {
        log_write(LOG_ERROR, "out of memory", LF_END);
        return 1;
    }
    ing->cfg = cfg;
    ing->run = run;
    ing->plain = -1;
    jsonw_init(&ing->out);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());

    int rc = setup(ing);
    if (rc == 0) {
        main_loop(ing);
        rc = ing->fatal ? 1 : 0;
        log_write(LOG_INFO, "stopping: committing and leaving the group", LF_END);
    } else if (rc == 2) {
        rc = 0;
    }
    teardown(ing);
    free(ing);
    log_write(LOG_INFO, "worker stopped", LF_I("exit_status", rc), LF_END);
    return rc;
}
