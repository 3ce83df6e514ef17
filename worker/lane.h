/*
 * lane: one PostgreSQL connection and the transaction it applies. Partition p belongs to
 * lane p % DATABASE_CONNECTIONS, so lanes never share a partition: their transactions run
 * side by side while each partition's messages still apply in order, one transaction at a
 * time.
 *
 * A lane is a state machine; every change goes through lane_set_state, which refuses an
 * impossible change (a bug: the worker aborts):
 *
 *   IDLE ──lane_start──▶ PREPARING ──statement sent──▶ APPLYING ──answer──▶ PREPARING
 *     ▲                      │                           │ revoked            ▲
 *     └──delivered/abandoned─┘                           ▼                    │
 *                                                 APPLYING_REVOKED ──answer───┘
 *
 *   IDLE             no transaction; the lane's messages wait in the pending queue until
 *                    they make one (TXN_MAX_ITEMS items, or the oldest waited
 *                    TXN_MAX_WAIT_MS).
 *   PREPARING        the transaction's messages are marked (pending_msg.in_txn) and handled
 *                    synchronously: planned, retried after a backoff (transient errors, with
 *                    the partitions paused), isolated item by item, replay rejects read.
 *                    Then its messages become a flight (flight.h) and the lane is IDLE, or,
 *                    abandoned (fatal, or the stop deadline), they are dropped and consumed
 *                    again by whoever owns their partitions next.
 *   APPLYING         the happy-path statement is in PostgreSQL's hands; the main loop goes on
 *                    consuming and decoding, and polls for the answer (lane_poll).
 *   APPLYING_REVOKED the same, but messages of the transaction were revoked meanwhile: the
 *                    plan points at freed batches, so a refused item is isolated only after
 *                    planning again.
 *
 * What PostgreSQL failing does: a transient error (connection, 40001, 40P01, …) keeps the
 * lane PREPARING, retrying with capped backoff while the group is served (flow.h); the
 * offsets are read again first. A data error isolates the refused items. MW001 (merged rows
 * sent to a table that is not plain any more) retries at once with generations. A fatal
 * error stops the worker.
 *
 * While APPLYING, the lane gathers the next transaction: up to TXN_MAX_ITEMS items, or
 * TXN_BACKLOG_ITEMS when its last transaction was full (behind: a key's repeated items then
 * merge into one row version), before the main loop waits for PostgreSQL instead.
 *
 * Ownership: a lane owns its connection, plan, document and offsets arrays (lane_init,
 * lane_term); its messages stay in the pending queue until they move to a flight.
 */
#ifndef MW_LANE_H
#define MW_LANE_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "../common/jsonw.h"
#include "db.h"
#include "plan.h"
#include "txn.h"

struct ingest;

enum lane_state { LANE_IDLE, LANE_PREPARING, LANE_APPLYING, LANE_APPLYING_REVOKED };

typedef struct lane {
    int id;
    enum lane_state state;  /* changed only by lane_set_state */
    mw_db *db;
    mw_plan plan;
    jsonw doc;
    /* Maintained by pending.c: items of this lane's messages not in a transaction, and the
     * arrival of the oldest of them. */
    int waiting_items;
    int64_t waiting_since_ms;
    /* The transaction: its offsets (kept for after the statement), and figures. */
    mw_offsets offsets;
    int32_t offsets_part[MAX_TXN_PARTS];
    int64_t offsets_expected[MAX_TXN_PARTS], offsets_next[MAX_TXN_PARTS],
        offsets_acked[MAX_TXN_PARTS];
    txn_partition txn_parts[MAX_TXN_PARTS]; /* scratch of txn_prepare */
    int txn_messages, txn_items;
    int64_t txn_started_ms;
    int64_t txn_waited_ms;  /* how long its oldest message had waited when it started */
    int64_t db_t0;          /* when the statement was sent */
    bool merged;            /* the statement carries merged rows (else generations) */
    bool behind;            /* its last transaction was full: the next may grow (backlog) */
    char errstr[1024];
} mw_lane;

/* Returns 0, or -1 when memory ran out (lane_term releases what was made). */
int lane_init(mw_lane *lane, int id, const mw_config *cfg) __attribute__((warn_unused_result));
void lane_term(mw_lane *lane);

/* The one place a lane's state changes: refuses (logs, then aborts) a change the diagram
 * above does not have. Called by lane.c only; declared here for tests/unit/test_lane.c. */
void lane_set_state(mw_lane *lane, enum lane_state to);

/* The statement is in PostgreSQL's hands. */
bool lane_applying(const mw_lane *lane);
bool lanes_any_applying(const struct ingest *ing);

/* Messages of the lane's transaction were dropped (revoked). */
void lane_revoked(mw_lane *lane);

/* How many items the lane gathers while its statement runs before the main loop waits for
 * PostgreSQL instead of consuming more (bounded memory). */
int lane_txn_cap(const struct ingest *ing, const mw_lane *lane);

/* Starts the transaction of every idle lane whose waiting messages make one. */
void lanes_start_due(struct ingest *ing);

/* Completes the lane's transaction if PostgreSQL has answered (with wait: once it has;
 * past the stop deadline the statement is cancelled). */
void lane_poll(struct ingest *ing, mw_lane *lane, bool wait);

/* Every lane's transaction, synchronously (at a stop), within the stop deadline. */
void lanes_finish(struct ingest *ing);

#endif
