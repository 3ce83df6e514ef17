/*
 * flow: flow control of the main thread. Polling the consumer (each poll may serve the
 * rebalance callback; recorded assignments are completed right after it), pausing every
 * assigned partition while PostgreSQL or Kafka is unavailable (the group membership is
 * kept by polling on), the keepalive that serves the group while a lane waits, the capped
 * exponential backoff, the stop deadline (SHUTDOWN_TIMEOUT_MS after the stop was asked
 * for) and the heartbeat the health endpoint watches.
 *
 * Ownership: owns nothing; acts on the ingest's consumer and flags.
 */
#ifndef MW_FLOW_H
#define MW_FLOW_H

#include <stdbool.h>
#include <stdint.h>

struct ingest;

/* Records that the main thread is turning (/healthz, main_loop_stall_seconds). */
void flow_heartbeat(struct ingest *ing);

/* True, after logging it once and setting fatal, when a Kafka client was refused: wrong
 * SASL credentials or an untrusted broker certificate (kafka_refused): exit 1, no retry. */
bool flow_kafka_refused(struct ingest *ing);

/* Polls the consumer for up to timeout_ms: a message goes to the pending queue, a recorded
 * assignment is completed; a refusal (flow_kafka_refused) sets fatal. */
void flow_poll_consumer(struct ingest *ing, int timeout_ms);

/* Pauses (or resumes) every assigned partition; nothing when already so. */
void flow_pause(struct ingest *ing, bool pause);

/* True once a stop was asked for (the first call sets the deadline). */
bool flow_stopping(struct ingest *ing);
bool flow_past_deadline(struct ingest *ing);

/* The capped exponential backoff before retry `attempt` (0, 1, …): 100 ms doubling up to
 * RETRY_MAX_MS. */
int64_t flow_backoff_ms(const struct ingest *ing, int attempt);

/* Serves group membership and delivery reports for up to ms with the partitions paused;
 * messages already fetched are kept for after the transaction in hand. */
void flow_keepalive(struct ingest *ing, int ms);

/* Waits before retry `attempt` (backoff with jitter, serving the group). False when the
 * work in hand must be abandoned (stop deadline passed, or fatal). */
bool flow_backoff(struct ingest *ing, int attempt, const char *what, const char *error);

#endif
