/*
 * metrics: the worker's counters, gauges and histograms, and their Prometheus text
 * rendering (docs/contract.md §7). Written by the ingest thread, read by the HTTP thread:
 * every value is a C11 atomic, and the per-partition lag table takes a mutex.
 *
 * Ownership: one mw_metrics, created by metrics_new and freed by metrics_destroy; the
 * rendering is written into a caller's jsonw (used as a plain growable buffer).
 */
#ifndef MW_METRICS_H
#define MW_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "../common/jsonw.h"
#include "sqlstate.h"

#define MW_HIST_BUCKETS 12

typedef struct mw_hist {
    const double *bounds; /* MW_HIST_BUCKETS upper bounds, ascending */
    atomic_ullong counts[MW_HIST_BUCKETS + 1]; /* the last is +Inf */
    _Atomic double sum;
    atomic_ullong count;
} mw_hist;

enum mw_item_outcome { OUT_OK, OUT_BAD_PARAMS, OUT_DB_REJECTED, OUT_COUNT };
/* Why a database attempt was retried: the SQLSTATEs concurrent writers cause (deadlock,
 * a key inserted by another writer first, offsets moved by another worker), any other
 * SQLSTATE, or none (the connection failed). */
enum mw_retry_reason { RR_DEADLOCK, RR_UNIQUE, RR_SERIALIZATION, RR_OTHER, RR_CONNECTION,
                       RR_COUNT };

typedef struct mw_metrics {
    atomic_ullong messages_consumed;
    atomic_ullong items[OUT_COUNT];
    atomic_ullong bad_requests;
    atomic_ullong dead_letters;
    atomic_ullong results_produced;
    atomic_ullong results_failed;
    atomic_ullong db_transactions;
    atomic_ullong db_retries[RR_COUNT];
    atomic_ullong db_errors[DB_STATUS_COUNT]; /* by enum db_status; [DB_OK] stays 0 */
    atomic_ullong replayed_messages;
    atomic_ullong rebalances;
    atomic_int assigned_partitions;
    atomic_int paused_partitions;
    atomic_int kafka_up;       /* a broker connection is up (librdkafka statistics) */
    atomic_int coord_up;       /* the consumer group's coordinator is known and up (same) */
    atomic_int db_up;          /* the last database call or ping succeeded */
    atomic_llong heartbeat_ms; /* the main loop's last turn (monotonic ms) */
    int64_t stall_ms;          /* HEALTHZ_STALL_MS: not alive past it (set before serving) */
    mw_hist batch_items;       /* items per database transaction */
    mw_hist db_seconds;        /* database time of one transaction */
    mw_hist result_seconds;    /* produce (message timestamp) to result acknowledged */
    void *lag;                 /* per-partition consumer lag, see metrics.c */
} mw_metrics;

mw_metrics *metrics_new(void);
void metrics_destroy(mw_metrics *m);

void metrics_observe(mw_hist *h, double v);

/* Counts one retried database attempt whose error began with its SQLSTATE ("40P01: …");
 * an error without one (a connection failure) counts as RR_CONNECTION. */
void metrics_count_db_retry(mw_metrics *m, const char *error);

/* Replaces the per-partition consumer lag from librdkafka's statistics JSON; also sets
 * kafka_up from the brokers' states. */
void metrics_parse_stats(mw_metrics *m, const char *json, size_t len);

/* Monotonic milliseconds, the clock of heartbeat_ms. */
int64_t metrics_now_ms(void);

/* True when the main loop turned within the last `ms` milliseconds. */
int metrics_alive(mw_metrics *m, int64_t ms);

/* True when the main loop turned within stall_ms (/healthz). */
int metrics_healthy(mw_metrics *m);

/* True when connected to Kafka and PostgreSQL (partitions assigned or waiting for them) and
 * the main loop turned within half of stall_ms. */
int metrics_ready(mw_metrics *m);

/* Prometheus text exposition format 0.0.4. */
void metrics_render(mw_metrics *m, const char *version, jsonw *out);

/* 1 when librdkafka's statistics JSON shows a real broker (not a bootstrap entry) UP. */
int metrics_stats_brokers_up(const char *json, size_t len);

/* `metadata-worker api` (docs/contract.md §8): written by the HTTP thread and the Kafka
 * delivery thread, read by the METRICS_ADDR thread; all atomics. */
#define MW_API_STATUS_COUNT 11
extern const int mw_api_statuses[MW_API_STATUS_COUNT]; /* the statuses counted, the last 0: other */

typedef struct mw_api_metrics {
    atomic_ullong requests[MW_API_STATUS_COUNT]; /* by mw_api_statuses' index */
    atomic_ullong items_accepted;  /* items of requests answered 200 */
    atomic_ullong bytes_accepted;  /* their bodies */
    atomic_int in_flight;          /* requests between their first byte and their answer */
    atomic_llong buffered_bytes;   /* request bodies held (reading or waiting for Kafka) */
    atomic_int kafka_up;           /* the last metadata request to the brokers succeeded */
    atomic_int keys_loaded;        /* clients in the keys in use */
    mw_hist latency;               /* seconds from the first byte to the answer */
} mw_api_metrics;

mw_api_metrics *metrics_api_new(void);
void metrics_api_destroy(mw_api_metrics *m);
void metrics_api_count(mw_api_metrics *m, int status);
int metrics_api_ready(mw_api_metrics *m);
void metrics_api_render(mw_api_metrics *m, const char *version, jsonw *out);

#endif
