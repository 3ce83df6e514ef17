/*
 * kafka: builds the worker's librdkafka clients from the configuration: the group consumer
 * (cooperative-sticky, offsets stored by the worker only after results are acknowledged)
 * and the idempotent producer of results and dead letters. librdkafka's own log lines are
 * routed through common/log. -X properties are applied last, so they win.
 *
 * Ownership: the rd_kafka_conf_t built here is owned, and freed, by the rd_kafka_t that
 * rd_kafka_new returns; the caller destroys that handle.
 */
#ifndef MW_KAFKA_H
#define MW_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>

#include "config.h"

typedef void (*kafka_rebalance_fn)(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                   rd_kafka_topic_partition_list_t *parts, void *opaque);
typedef void (*kafka_dr_fn)(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);

typedef int (*kafka_stats_fn)(rd_kafka_t *rk, char *json, size_t len, void *opaque);

/* stats: called with librdkafka's statistics every 2 s (consumer lag, broker states). */
rd_kafka_t *kafka_consumer_new(const mw_config *cfg, kafka_rebalance_fn rebalance,
                               kafka_stats_fn stats, void *opaque, char *errstr,
                               size_t errstr_size);
rd_kafka_t *kafka_producer_new(const mw_config *cfg, kafka_dr_fn dr, void *opaque,
                               char *errstr, size_t errstr_size);

/* The producer of `metadata-worker api` (docs/contract.md §8): idempotent, acks=all, each
 * message confirmed or failed within API_PRODUCE_TIMEOUT_MS (message.timeout.ms), its queue
 * bounded to queue_kbytes (a full queue fails the produce call: backpressure). */
rd_kafka_t *kafka_api_producer_new(const mw_config *cfg, kafka_dr_fn dr, void *opaque,
                                   int queue_kbytes, char *errstr, size_t errstr_size);

/* A configuration error librdkafka reported through error_cb, which no retry can fix: the
 * broker refused the SASL credentials or mechanism (RD_KAFKA_RESP_ERR__AUTHENTICATION), or
 * its TLS certificate did not verify. Returns the clear message to stop with, or NULL for
 * everything else (a broker that is down or restarting is waited for, docs/contract.md §6). */
const char *kafka_refusal(rd_kafka_resp_err_t err, const char *reason);

/* True once a client of this process has been refused (kafka_refusal): the message, the
 * error's name and librdkafka's reason. Any thread; each client polled serves error_cb. */
bool kafka_refused(const char **msg, const char **error, const char **reason);

#endif
