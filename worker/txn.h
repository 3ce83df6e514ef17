/*
 * txn: one transaction of a lane, from its marked messages to PostgreSQL's answer.
 *
 * txn_prepare reads the offsets PostgreSQL recorded for the transaction's partitions (when
 * not known), tells replays (a message below its partition's recorded next offset: results
 * only) from new messages, plans the new messages' valid items (plan.h), fills the offsets
 * to move (partitions ascending: the lock order that keeps two writers from deadlocking)
 * and writes the document: merged rows when customer_metadata is plain (schema 4, re-read
 * every PLAIN_REREAD_MS: an owner may add rules at any time), else generations.
 * txn_applied takes the happy-path statement's status: a data error is isolated by the
 * slow path (item by item in subtransactions, rejects recorded on the messages); success
 * moves the cached offsets; failure forgets them (read again before the retry). An offset
 * read lower than the one cached (a failover to a standby that lacked the last commits) makes
 * the partition be consumed again from it: pending messages dropped, consumer seeked back.
 *
 * Ownership: the lane owns the plan, the document and the offsets arrays; the plan points
 * into the pending messages' batches, so a lane whose messages were dropped must prepare
 * again before using it.
 */
#ifndef MW_TXN_H
#define MW_TXN_H

#include <stdbool.h>
#include <stdint.h>

#include "db.h"

struct ingest;
struct lane;

#define MAX_TXN_PARTS 1024 /* partitions one transaction may cover */
#define PLAIN_REREAD_MS 30000

/* One partition of a transaction: the offset PostgreSQL recorded before (-1: none), the one
 * to record, and the offset below which every result is acknowledged (-1: none known). */
typedef struct txn_partition {
    int32_t part;
    int64_t expected, next, acked;
} txn_partition;

/* Plans the lane's transaction (lane->offsets, lane->doc, lane->merged). *empty when there
 * is nothing to write (only replays and bad messages). */
enum db_status txn_prepare(struct ingest *ing, struct lane *lane, bool *empty)
    __attribute__((warn_unused_result));

/* After the happy-path statement returned st; plan_stale: some of the transaction's
 * messages were dropped (revoked) while it ran, so a refused item is isolated only after
 * planning again (the caller's retry). */
enum db_status txn_applied(struct ingest *ing, struct lane *lane, enum db_status st,
                           bool plan_stale) __attribute__((warn_unused_result));

/* One synchronous attempt: prepare, apply, txn_applied (retries). */
enum db_status txn_apply_sync(struct ingest *ing, struct lane *lane)
    __attribute__((warn_unused_result));

/* Rebuilds the database rejects of the transaction's replayed messages (identical results). */
enum db_status txn_load_replay_rejects(struct ingest *ing, struct lane *lane)
    __attribute__((warn_unused_result));

#endif
