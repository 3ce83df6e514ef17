/*
 * pending: the queue of consumed messages not yet handed to a flight. Owns each message's
 * librdkafka message and its decoded batch from the moment it is consumed until it is
 * released (dropped) or moved into a flight (pending_take_txn).
 *
 * A pending message belongs to the lane of its partition (lane.h). It is either waiting
 * for a transaction, or marked in_txn: part of the transaction its lane is preparing or
 * applying. The queue keeps each lane's count of waiting items and the arrival of the
 * oldest of them (lane->waiting_items, lane->waiting_since_ms): a cache of the queue,
 * recomputed here after every removal, never written elsewhere.
 *
 * Every removal goes through one compaction (pending_remove_if): drop the messages of
 * revoked partitions, drop a lane's messages when its transaction is abandoned, or move a
 * lane's transaction into a flight.
 *
 * Ownership: the queue owns its messages; pending_release frees one (its database errors,
 * batch and rd_kafka_message_t). Moved messages are owned by their flight.
 */
#ifndef MW_PENDING_H
#define MW_PENDING_H

#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "batch.h"

struct ingest;
struct lane;
struct flight;

/* A dead letter Kafka refuses as too large goes again with its value cut to a prefix, then
 * empty; its headers say so (dlq.value.truncated, dlq.value.bytes). */
enum dlq_cut { DLQ_CUT_NONE = 0, DLQ_CUT_PREFIX, DLQ_CUT_EMPTY };

typedef struct pending_msg {
    rd_kafka_message_t *rkm;
    mw_batch batch;
    bool in_txn;        /* part of its lane's transaction */
    bool replay;        /* already applied to PostgreSQL: results only */
    int db_rejects;
    char **db_err;      /* per item, allocated at the first reject */
    /* Kept when the decoded batch is freed (a flight keeps only the raw message: a repeat
     * decodes it again, with the same outcome). */
    int n_items, invalid;
    bool bad, decoded;
    int64_t arrived_ms;
    struct flight *flight; /* the flight that holds it (delivery reports find it here) */
    enum dlq_cut dlq_cut;  /* its dead letter was refused as too large */
} pending_msg;

typedef struct pending_queue {
    pending_msg *msgs;
    int n, cap;
} pending_queue;

void pending_release(pending_msg *m);

/* Frees every message and the queue's array. */
void pending_free(pending_queue *q);

/* Handles one consumed message (an error event, or a message appended and decoded).
 * Takes ownership of rkm. Out of memory sets ing->fatal. */
void pending_consume(struct ingest *ing, rd_kafka_message_t *rkm);

/* Recomputes every lane's waiting_items and waiting_since_ms. */
void pending_recount(struct ingest *ing);

/* Removes the messages for which match(ing, m, arg) is true, keeping the others in order:
 * moved into out[] (which must hold them all) when out is not NULL, else released.
 * Returns how many were removed, then recounts. */
int pending_remove_if(struct ingest *ing,
                      bool (*match)(struct ingest *ing, const pending_msg *m, const void *arg),
                      const void *arg, pending_msg *out);

/* Drops the messages of the given partitions (revoked: their new owner consumes them again
 * from the committed offset); a lane applying a statement with some of them is told
 * (lane_revoked: its plan points into them). */
void pending_drop_partitions(struct ingest *ing, const rd_kafka_topic_partition_list_t *parts);

/* Drops every message of the lane (its transaction abandoned: they are consumed again). */
void pending_drop_lane(struct ingest *ing, struct lane *lane);

/* True for the messages of the lane's transaction. */
bool pending_in_txn_of(struct ingest *ing, const pending_msg *m, const struct lane *lane);

/* Records a database reject of item idx of the message (part, off) of a transaction
 * (a db_reject_cb; opaque is the ingest). */
void pending_on_reject(void *opaque, int32_t part, int64_t off, int idx, const char *error);

/* Forgets the database rejects recorded for the lane's transaction. */
void pending_clear_rejects(struct ingest *ing, struct lane *lane);

#endif
