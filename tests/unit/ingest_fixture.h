/*
 * ingest_fixture: a real `ingest` (lanes, pending queue, partitions, flights) for the lane and
 * flight unit tests, with tests/unit/fake_db.c as its database and librdkafka's in-process
 * mock cluster (rdkafka_mock.h) as its Kafka: two brokers, one cluster per test program
 * (fx_cluster_up, fx_cluster_down: the group setup and teardown), and per test an input topic
 * (4 partitions, leader broker 1), a results topic (1 partition, leader broker 1) and a
 * dead-letter topic (1 partition, leader broker 2), so that an error injected on one broker
 * hits one topic only.
 *
 * The ingest's consumer has the test's own group and is assigned input partitions 0..3 from
 * offset 0 (no subscription, no rebalance); offsets are stored by the worker's code only, and
 * a test reads them by committing (fx_committed). Its producer is the worker's, with
 * librdkafka's own retries off (message.send.max.retries=0), so that an error injected once
 * reaches the delivery report; every delivery report is recorded (fx->dr) before
 * flight_on_delivery handles it.
 *
 * Ownership: fx_new makes everything of a test, fx_free releases it (flights and pending
 * messages included), checks that no injected error is left, and resets the fake database.
 */
#ifndef MW_INGEST_FIXTURE_H
#define MW_INGEST_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "ingest_state.h"

#define FX_BROKER_RESULTS 1 /* leads the input and results topics */
#define FX_BROKER_DLQ 2     /* leads the dead-letter topic */
#define FX_PRODUCE 0        /* the Produce request's ApiKey */

typedef struct fx_opts {
    int n_lanes;                   /* default 2 */
    int txn_max_items;             /* default 1000 */
    int txn_backlog_items;         /* default txn_max_items */
    int txn_max_wait_ms;           /* default 0: a lane's waiting messages are due at once */
    const char *message_max_bytes; /* the producer's message.max.bytes; NULL: librdkafka's */
} fx_opts;

/* One delivery report, as the producer served it. */
typedef struct fx_delivery {
    char topic[32];
    rd_kafka_resp_err_t err;
    char *value;                   /* a NUL-terminated copy */
    size_t len;
    char truncated[16];            /* header dlq.value.truncated ("" when absent) */
    char bytes[24];                /* header dlq.value.bytes */
    char dlq_error[256];           /* header dlq.error */
} fx_delivery;

typedef struct fixture {
    rd_kafka_mock_cluster_t *mc;   /* shared by the program's tests (fx_cluster_up) */
    int n;                         /* this test's number: its topics and group are its own */
    char in[32], results[32], dlq[32], group[32];
    rd_kafka_t *feeder;            /* produces the input messages */
    mw_config cfg;
    volatile sig_atomic_t run;
    ingest *ing;
    fx_delivery *dr;
    int n_dr, cap_dr;
} fixture;

/* cmocka group setup and teardown: the mock cluster. */
int fx_cluster_up(void **state);
int fx_cluster_down(void **state);

fixture *fx_new(const fx_opts *o);
void fx_free(fixture *fx);

/* Produces one input message to in/part (waits for its acknowledgement); returns its offset. */
int64_t fx_feed(fixture *fx, int32_t part, const char *value, size_t len);

/* The same with {"items":[…]} of n valid items whose eventIds are <prefix>0 … <prefix>n-1. */
int64_t fx_feed_items(fixture *fx, int32_t part, const char *prefix, int n);

/* Consumes exactly n input messages into the pending queue (pending_consume); fails the test
 * when they do not come within 5 s. */
void fx_consume(fixture *fx, int n);

/* Serves delivery reports (rd_kafka_poll) until `until` is true or 5 s passed. */
void fx_serve_until(fixture *fx, bool (*until)(fixture *fx));

/* The next `count` Produce requests to the broker answer err after rtt_ms. */
void fx_mock(fixture *fx, int32_t broker, rd_kafka_resp_err_t err, int rtt_ms, int count);

/* Commits what the worker stored and returns in/part's committed offset (-1: none). */
int64_t fx_committed(fixture *fx, int32_t part);

/* Successful deliveries of results for eventId; *last (may be NULL) the last of them. */
int fx_results_for(fixture *fx, const char *event_id, const fx_delivery **last);

/* Delivery reports of a topic with a given error (RD_KAFKA_RESP_ERR_NO_ERROR: successes). */
int fx_count(fixture *fx, const char *topic, rd_kafka_resp_err_t err);

/* The "error" member of a result message. */
const char *fx_result_error(const fx_delivery *d, char *buf, size_t size);

/* Marks the lane's pending messages as its transaction (as lane_start does). */
void fx_mark_txn(fixture *fx, mw_lane *lane);

#endif
