/*
 * ingest: the consume → validate → upsert → results → commit loop of `metadata-worker run`
 * (docs/contract.md §2–§6). Owns the Kafka clients and the database connections.
 *
 * Messages are gathered into one database transaction (up to TXN_MAX_ITEMS items or
 * TXN_MAX_WAIT_MS); after PostgreSQL commits, every result and dead letter is produced and
 * acknowledged; only then are the input offsets stored for commit. PostgreSQL records the
 * next offset of each partition in the same transaction as the rows, so a message already
 * applied is never applied again: its results are only produced again, identical.
 *
 * DATABASE_CONNECTIONS lanes (default 2) apply transactions side by side: partition p
 * belongs to lane p % lanes, so each partition's messages still apply one transaction at a
 * time, in order, exactly as with that many workers holding a share of the partitions each.
 */
#ifndef MW_INGEST_H
#define MW_INGEST_H

#include <signal.h>

#include "config.h"

/* Runs until *run becomes 0 (then finishes the batch in hand within
 * SHUTDOWN_TIMEOUT_MS, commits and leaves the group) or a fatal error. Returns the exit
 * status: 0 after a clean stop, 1 after a fatal error. */
int ingest_run(const mw_config *cfg, volatile sig_atomic_t *run);

#endif
