/* metrics: counters and their Prometheus rendering; see metrics.h. */
#include "metrics.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const double count_bounds[MW_HIST_BUCKETS] = {1, 10, 50, 100, 250, 500, 1000,
                                                     2500, 5000, 10000, 25000, 50000};
static const double sec_bounds[MW_HIST_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                   0.1, 0.25, 0.5, 1, 2.5, 10};

#define MAX_LAG 1024

typedef struct lag_table {
    pthread_mutex_t mu;
    int n;
    struct { char topic[128]; int32_t partition; int64_t lag; } e[MAX_LAG];
} lag_table;

int64_t metrics_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

mw_metrics *metrics_new(void) {
    mw_metrics *m = calloc(1, sizeof *m);
    lag_table *t = calloc(1, sizeof *t);
    if (!m || !t) {
        free(m);
        free(t);
        return NULL;
    }
    pthread_mutex_init(&t->mu, NULL);
    m->lag = t;
    m->batch_items.bounds = count_bounds;
    m->db_seconds.bounds = sec_bounds;
    m->result_seconds.bounds = sec_bounds;
    atomic_store(&m->heartbeat_ms, metrics_now_ms());
    m->stall_ms = 60000;
    return m;
}

void metrics_destroy(mw_metrics *m) {
    if (!m) return;
    lag_table *t = m->lag;
    pthread_mutex_destroy(&t->mu);
    free(t);
    free(m);
}

void metrics_observe(mw_hist *h, double v) {
    int i = 0;
    while (i < MW_HIST_BUCKETS && v > h->bounds[i]) i++;
    atomic_fetch_add(&h->counts[i], 1);
    atomic_fetch_add(&h->count, 1);
    double old = atomic_load(&h->sum);
    while (!atomic_compare_exchange_weak(&h->sum, &old, old + v)) {
    }
}

static int brokers_up(json_object *root) {
    json_object *brokers;
    int up = 0;
    if (json_object_object_get_ex(root, "brokers", &brokers)) {
        json_object_object_foreach(brokers, bname, b) {
            json_object *state, *nodeid;
            /* Bootstrap entries (nodeid -1) do not count: a real broker must be up. */
            if (json_object_object_get_ex(b, "nodeid", &nodeid) && json_object_get_int(nodeid) < 0)
                continue;
            if (json_object_object_get_ex(b, "state", &state) &&
                strcmp(json_object_get_string(state), "UP") == 0)
                up = 1;
            (void)bname;
        }
    }
    return up;
}

int metrics_stats_brokers_up(const char *json, size_t len) {
    json_tokener *tok = json_tokener_new();
    if (!tok) return 0;
    json_object *root = json_tokener_parse_ex(tok, json, (int)len);
    json_tokener_free(tok);
    int up = root ? brokers_up(root) : 0;
    json_object_put(root);
    return up;
}

void metrics_parse_stats(mw_metrics *m, const char *json, size_t len) {
    json_tokener *tok = json_tokener_new();
    if (!tok) return;
    json_object *root = json_tokener_parse_ex(tok, json, (int)len);
    json_tokener_free(tok);
    if (!root) return;
    json_object *topics;
    atomic_store(&m->kafka_up, brokers_up(root));
    json_object *cgrp, *cstate;
    if (json_object_object_get_ex(root, "cgrp", &cgrp) &&
        json_object_object_get_ex(cgrp, "state", &cstate))
        atomic_store(&m->coord_up, strcmp(json_object_get_string(cstate), "up") == 0);
    lag_table *t = m->lag;
    pthread_mutex_lock(&t->mu);
    t->n = 0;
    if (json_object_object_get_ex(root, "topics", &topics)) {
        json_object_object_foreach(topics, tname, tobj) {
            json_object *parts;
            if (!json_object_object_get_ex(tobj, "partitions", &parts)) continue;
            json_object_object_foreach(parts, pname, p) {
                json_object *lag, *pid, *fs, *hi, *lo;
                if (!json_object_object_get_ex(p, "partition", &pid) || json_object_get_int(pid) < 0)
                    continue;
                /* Only partitions this consumer fetches (assigned to it). */
                if (!json_object_object_get_ex(p, "fetch_state", &fs) ||
                    strcmp(json_object_get_string(fs), "none") == 0)
                    continue;
                if (!json_object_object_get_ex(p, "consumer_lag", &lag)) continue;
                int64_t l = json_object_get_int64(lag);
                /* Nothing committed yet: the whole retained log is behind. */
                if (l < 0 && json_object_object_get_ex(p, "hi_offset", &hi) &&
                    json_object_object_get_ex(p, "lo_offset", &lo) &&
                    json_object_get_int64(hi) >= 0 && json_object_get_int64(lo) >= 0)
                    l = json_object_get_int64(hi) - json_object_get_int64(lo);
                if (l < 0 || t->n >= MAX_LAG) continue;
                snprintf(t->e[t->n].topic, sizeof t->e[t->n].topic, "%s", tname);
                t->e[t->n].partition = json_object_get_int(pid);
                t->e[t->n].lag = l;
                t->n++;
                (void)pname;
            }
        }
    }
    pthread_mutex_unlock(&t->mu);
    json_object_put(root);
}

int metrics_alive(mw_metrics *m, int64_t ms) {
    return metrics_now_ms() - atomic_load(&m->heartbeat_ms) < ms;
}

int metrics_ready(mw_metrics *m) {
    return atomic_load(&m->kafka_up) && atomic_load(&m->db_up) && metrics_alive(m, m->stall_ms / 2);
}

int metrics_healthy(mw_metrics *m) {
    return metrics_alive(m, m->stall_ms);
}

static void line(jsonw *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void line(jsonw *out, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0) jsonw_rawn(out, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

static void head(jsonw *out, const char *name, const char *type, const char *help) {
    line(out, "# HELP metadata_worker_%s %s\n# TYPE metadata_worker_%s %s\n", name, help, name, type);
}

static void counter(jsonw *out, const char *name, const char *help, unsigned long long v) {
    head(out, name, "counter", help);
    line(out, "metadata_worker_%s %llu\n", name, v);
}

static void gauge(jsonw *out, const char *name, const char *help, long long v) {
    head(out, name, "gauge", help);
    line(out, "metadata_worker_%s %lld\n", name, v);
}

static void hist(jsonw *out, const char *name, const char *help, mw_hist *h) {
    head(out, name, "histogram", help);
    unsigned long long cum = 0;
    for (int i = 0; i < MW_HIST_BUCKETS; i++) {
        cum += atomic_load(&h->counts[i]);
        line(out, "metadata_worker_%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i], cum);
    }
    cum += atomic_load(&h->counts[MW_HIST_BUCKETS]);
    line(out, "metadata_worker_%s_bucket{le=\"+Inf\"} %llu\n", name, cum);
    line(out, "metadata_worker_%s_sum %.6f\n", name, atomic_load(&h->sum));
    line(out, "metadata_worker_%s_count %llu\n", name, cum);
}

void metrics_count_db_retry(mw_metrics *m, const char *error) {
    static const char *const states[] = {[RR_DEADLOCK] = "40P01", [RR_UNIQUE] = "23505",
                                         [RR_SERIALIZATION] = "40001"};
    int r = RR_CONNECTION;
    /* classify() writes "SQLSTATE: message"; a SQLSTATE is five digits or capitals. */
    bool has_state = error && strlen(error) >= 7 && error[5] == ':' && error[6] == ' ';
    for (int i = 0; has_state && i < 5; i++)
        if (!((error[i] >= '0' && error[i] <= '9') || (error[i] >= 'A' && error[i] <= 'Z')))
            has_state = false;
    if (has_state) {
        r = RR_OTHER;
        for (int i = 0; i < RR_OTHER; i++)
            if (strncmp(error, states[i], 5) == 0) r = i;
    }
    atomic_fetch_add(&m->db_retries[r], 1);
}

void metrics_render(mw_metrics *m, const char *version, jsonw *out) {
    head(out, "build_info", "gauge", "Build information.");
    line(out, "metadata_worker_build_info{version=\"%s\"} 1\n", version);
    gauge(out, "up", "1 while the worker runs.", 1);
    gauge(out, "ready", "1 when connected to Kafka and PostgreSQL.", metrics_ready(m));
    gauge(out, "kafka_up", "1 when a broker connection is up.", atomic_load(&m->kafka_up));
    gauge(out, "postgres_up", "1 when the last PostgreSQL call succeeded.", atomic_load(&m->db_up));
    counter(out, "messages_consumed_total", "Kafka messages consumed.",
            atomic_load(&m->messages_consumed));
    head(out, "items_total", "counter", "Items by outcome and error code.");
    static const char *const outcomes[OUT_COUNT][2] = {
        {"ok", ""}, {"error", "FAIL_BAD_PARAMS"}, {"error", "FAIL_DB_REJECTED"}};
    for (int i = 0; i < OUT_COUNT; i++)
        line(out, "metadata_worker_items_total{outcome=\"%s\",code=\"%s\"} %llu\n", outcomes[i][0],
             outcomes[i][1], atomic_load(&m->items[i]));
    counter(out, "bad_requests_total", "Messages that are not a batch (FAIL_BAD_REQUEST).",
            atomic_load(&m->bad_requests));
    counter(out, "dead_letters_total", "Messages sent to the dead-letter topic.",
            atomic_load(&m->dead_letters));
    counter(out, "replayed_messages_total",
            "Messages consumed again that PostgreSQL already held (results re-sent only).",
            atomic_load(&m->replayed_messages));
    counter(out, "results_produced_total", "Result messages acknowledged by Kafka.",
            atomic_load(&m->results_produced));
    counter(out, "results_failed_total", "Result or dead-letter deliveries that failed (retried).",
            atomic_load(&m->results_failed));
    counter(out, "db_transactions_total", "Database transactions committed.",
            atomic_load(&m->db_transactions));
    head(out, "db_retries_total", "counter",
         "Database attempts retried after an error, by SQLSTATE (40P01 deadlock, 23505 a key "
         "another writer inserted first, 40001 offsets moved; other; none: connection failed).");
    static const char *const reasons[RR_COUNT] = {"40P01", "23505", "40001", "other", "none"};
    for (int i = 0; i < RR_COUNT; i++)
        line(out, "metadata_worker_db_retries_total{sqlstate=\"%s\"} %llu\n", reasons[i],
             atomic_load(&m->db_retries[i]));
    head(out, "db_errors_total", "counter", "Database errors by class.");
    for (enum db_status st = DB_TRANSIENT; st <= DB_FATAL; st++)
        line(out, "metadata_worker_db_errors_total{class=\"%s\"} %llu\n", db_status_name(st),
             atomic_load(&m->db_errors[st]));
    counter(out, "rebalances_total", "Partition assignments and revocations.",
            atomic_load(&m->rebalances));
    gauge(out, "assigned_partitions", "Partitions assigned to this worker.",
          atomic_load(&m->assigned_partitions));
    gauge(out, "paused_partitions", "Partitions paused while PostgreSQL or Kafka is unavailable.",
          atomic_load(&m->paused_partitions));
    head(out, "main_loop_stall_seconds", "gauge",
         "Seconds since the main loop last made a turn (/healthz fails past HEALTHZ_STALL_MS).");
    line(out, "metadata_worker_main_loop_stall_seconds %.3f\n",
         (double)(metrics_now_ms() - atomic_load(&m->heartbeat_ms)) / 1000.0);
    hist(out, "batch_items", "Items per database transaction.", &m->batch_items);
    hist(out, "db_upsert_seconds", "Database time of one transaction.", &m->db_seconds);
    hist(out, "produce_to_result_seconds",
         "From a message's Kafka timestamp to its results acknowledged.", &m->result_seconds);
    head(out, "consumer_lag", "gauge", "High watermark minus committed offset, per partition.");
    lag_table *t = m->lag;
    pthread_mutex_lock(&t->mu);
    for (int i = 0; i < t->n; i++)
        line(out, "metadata_worker_consumer_lag{topic=\"%s\",partition=\"%d\"} %lld\n",
             t->e[i].topic, (int)t->e[i].partition, (long long)t->e[i].lag);
    pthread_mutex_unlock(&t->mu);
}

/* ---- metadata-worker api ---- */

static const double api_sec_bounds[MW_HIST_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                       0.1, 0.25, 0.5, 1, 2.5, 5};

const int mw_api_statuses[MW_API_STATUS_COUNT] = {200, 400, 401, 404, 405, 413, 415, 429, 500,
                                                  503, 0};

mw_api_metrics *metrics_api_new(void) {
    mw_api_metrics *m = calloc(1, sizeof *m);
    if (m) m->latency.bounds = api_sec_bounds;
    return m;
}

void metrics_api_destroy(mw_api_metrics *m) { free(m); }

void metrics_api_count(mw_api_metrics *m, int status) {
    int i = 0;
    while (i < MW_API_STATUS_COUNT - 1 && mw_api_statuses[i] != status) i++;
    atomic_fetch_add(&m->requests[i], 1);
}

int metrics_api_ready(mw_api_metrics *m) {
    return atomic_load(&m->kafka_up) && atomic_load(&m->keys_loaded) > 0;
}

void metrics_api_render(mw_api_metrics *m, const char *version, jsonw *out) {
    head(out, "build_info", "gauge", "Build information.");
    line(out, "metadata_worker_build_info{version=\"%s\"} 1\n", version);
    gauge(out, "up", "1 while the API runs.", 1);
    gauge(out, "ready", "1 when Kafka answers and keys are loaded.", metrics_api_ready(m));
    gauge(out, "kafka_up", "1 when the last metadata request to Kafka succeeded.",
          atomic_load(&m->kafka_up));
    gauge(out, "api_keys_loaded", "Clients in API_KEYS_FILE as last loaded.",
          atomic_load(&m->keys_loaded));
    head(out, "api_requests_total", "counter", "API requests answered, by status.");
    for (int i = 0; i < MW_API_STATUS_COUNT; i++) {
        if (mw_api_statuses[i])
            line(out, "metadata_worker_api_requests_total{status=\"%d\"} %llu\n",
                 mw_api_statuses[i], atomic_load(&m->requests[i]));
        else
            line(out, "metadata_worker_api_requests_total{status=\"other\"} %llu\n",
                 atomic_load(&m->requests[i]));
    }
    counter(out, "api_items_accepted_total", "Items of requests answered 200 (in Kafka).",
            atomic_load(&m->items_accepted));
    counter(out, "api_bytes_accepted_total", "Bytes of request bodies answered 200.",
            atomic_load(&m->bytes_accepted));
    gauge(out, "api_in_flight", "Requests received and not yet answered.",
          atomic_load(&m->in_flight));
    gauge(out, "api_buffered_bytes", "Request bodies held in memory (bounded).",
          atomic_load(&m->buffered_bytes));
    hist(out, "api_request_seconds", "From a request's first byte to its answer.", &m->latency);
}
