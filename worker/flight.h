/*
 * flight: the messages of one committed transaction whose results and dead letters are in
 * flight to Kafka, and when an input offset is stored for commit.
 *
 * After PostgreSQL commits a lane's transaction, its messages move from the pending queue
 * into a flight at the tail of a FIFO queue, and every result (one per item, docs/contract.md §5) and
 * dead letter (a bad message's raw bytes, with headers saying why and where from) is
 * produced with the message as the delivery's opaque. Flights complete in order: only when
 * every delivery of the flight at the head is acknowledged are its outcomes counted and its
 * offsets stored (rd_kafka_offsets_store; committed by librdkafka's auto-commit, on
 * revocation and at the close), so a committed offset never passes a message whose results
 * are not acknowledged, while the next transaction goes to PostgreSQL without waiting.
 * At most one flight per lane awaits its acknowledgements (flights_bound).
 *
 * A failed delivery is final for that message (librdkafka retried what it could). Classes:
 * Kafka unreachable (timeouts, leaders, replicas) → the whole flight is produced again
 * after a backoff (the repeats are identical); a dead letter too large → sent again cut to
 * a prefix, then empty; anything else (unknown topic, authorisation, a result too large) →
 * a configuration error: the worker stops (exit 1) rather than loop.
 *
 * Ownership: a flight owns its messages (moved from the pending queue) and their
 * rd_kafka_message_t; the queue owns its flights; flight_free releases one.
 */
#ifndef MW_FLIGHT_H
#define MW_FLIGHT_H

#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "pending.h"

struct ingest;
struct lane;

#define DLQ_PREFIX_BYTES 65536

typedef struct flight {
    pending_msg *msgs;      /* owned */
    int n;
    long inflight;          /* deliveries not yet reported */
    long failed;            /* deliveries that failed: the flight is produced again */
    int attempts;
    int64_t retry_at_ms;
    int64_t started_ms;
    struct flight *next;
} flight;

typedef struct flight_queue {
    flight *head, *tail;    /* FIFO: completed (offsets stored) from the head */
    int n;
} flight_queue;

/* Moves the lane's transaction out of the pending queue into a new flight at the tail.
 * NULL when memory ran out (the messages stay pending). */
flight *flight_take(struct ingest *ing, struct lane *lane);

/* Produces the flight's results and dead letters (again, after a failure). */
void flight_produce(struct ingest *ing, flight *f);

/* Completes the flights at the head whose deliveries are all reported (counts outcomes,
 * stores offsets); a flight with failures is produced again after a backoff. With wait,
 * returns only when the queue is empty (true) or the stop deadline passed (false). */
bool flights_drain(struct ingest *ing, bool wait);

/* Waits (serving the group) until at most one flight per lane is left, or fatal, or the
 * stop deadline; then resumes the partitions and completes what it can. */
void flights_bound(struct ingest *ing);

/* Frees every flight (their deliveries must have been reported or purged). */
void flights_free(flight_queue *q);

/* The producer's delivery report callback (opaque: the ingest). */
void flight_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);

#endif
