/*
 * ingest_state: the state the ingest modules share, one struct per running worker
 * (allocated by ingest_run, never on the stack: the lanes' offset arrays make it large).
 * Everything runs on the main thread: librdkafka's callbacks (rebalance, delivery reports)
 * are served from the poll calls the modules make, so nothing here needs a lock.
 *
 * The modules, in the order of the flow (ingest.h has the protocol):
 *   flow        polling Kafka, pause/resume, keepalive, backoff, the stop deadline
 *   pending     the consumed messages waiting for, or part of, a transaction
 *   partitions  the partition table, assignment and revocation
 *   txn         preparing and applying one transaction of a lane (offsets, replay, plan)
 *   lane        one PostgreSQL connection and its transaction, as a state machine
 *   flight      results and dead letters in flight to Kafka, then the offsets stored
 *
 * Ownership: ingest owns every part below; ingest_run creates and destroys them.
 */
#ifndef MW_INGEST_STATE_H
#define MW_INGEST_STATE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "config.h"
#include "../common/jsonw.h"
#include "flight.h"
#include "flow.h"
#include "http.h"
#include "lane.h"
#include "metrics.h"
#include "partitions.h"
#include "pending.h"
#include "txn.h"

#define MAX_LANES MW_MAX_DB_CONNECTIONS

typedef struct ingest {
    const mw_config *cfg;
    volatile sig_atomic_t *run;
    rd_kafka_t *consumer;
    rd_kafka_t *producer;
    mw_lane lanes[MAX_LANES];
    int n_lanes;
    pending_queue pending;
    partition_table partitions;
    flight_queue flights;
    jsonw out;              /* the result message being produced */
    bool paused;            /* every assigned partition is paused (flow_pause) */
    int64_t deadline_ms;    /* set once a stop is asked for */
    int64_t last_ping_ms;   /* last readiness check of PostgreSQL while idle */
    mw_metrics *m;
    mw_http *http;
    bool fatal;
    bool closing;           /* leaving the group: commits must not wait for a coordinator */
    int plain;              /* customer_metadata_plain() as last read: 1, 0, -1 not read */
    int64_t plain_read_ms;  /* when */
    char errstr[1024];
} ingest;

static inline int64_t now_ms(void) { return metrics_now_ms(); }

/* Partition p belongs to lane |p| % n_lanes. */
static inline mw_lane *lane_of(ingest *ing, int32_t part) {
    return &ing->lanes[(part < 0 ? -part : part) % ing->n_lanes];
}

#endif
