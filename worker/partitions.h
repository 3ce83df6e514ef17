/*
 * partitions: the table of assigned partitions, and what happens at a rebalance.
 *
 * Each assigned partition has what PostgreSQL recorded for it: the next offset to apply
 * (pg_next, read before its first transaction and again after a failed one: `known`) and
 * the offset below which every result is acknowledged (acked, moved as flights complete).
 *
 * Assignment: the rebalance callback does no I/O of its own beyond librdkafka's: it only
 * records the new partitions (partitions_on_rebalance) and makes the poll return. The main
 * loop then, right after that poll (partitions_assign_recorded), reads the group's committed
 * offsets and PostgreSQL's offsets on a lane's connection and calls incremental_assign with
 * the starting offsets. librdkafka waits for that call (its join state is "wait assign
 * call", heartbeats go on), so no message is fetched before the starting offset is known:
 * the group's committed offset; where the group has none, PostgreSQL's acked_offset — not
 * its next offset: messages between the two are in the database but may lack results; when
 * neither exists (or the lane's connection is busy or PostgreSQL is unreachable),
 * auto.offset.reset applies and messages already applied are replayed for results only.
 * Assigning after a seek instead would let the fetcher start from auto.offset.reset first.
 *
 * Revocation (in the callback, as librdkafka requires before the partitions move): drop
 * their pending messages, store what flights completed, commit (unless the assignment is
 * lost, or the group coordinator is unreachable while closing), forget the partitions and
 * unassign them.
 *
 * Ownership: the table owns its array; partition entries are plain values.
 */
#ifndef MW_PARTITIONS_H
#define MW_PARTITIONS_H

#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

struct ingest;
struct lane;

typedef struct partition_state {
    int32_t part;
    int64_t pg_next; /* next offset recorded in PostgreSQL, -1: none */
    int64_t acked;   /* every result below it is acknowledged by Kafka, -1: none known */
    bool known;      /* pg_next was read since the partition was assigned */
} partition_state;

typedef struct partition_table {
    partition_state *parts;
    int n, cap;
    /* Partitions the group gave us that are not assigned yet (partitions_assign_recorded). */
    rd_kafka_topic_partition_list_t *recorded;
} partition_table;

void partitions_free(partition_table *t);

partition_state *partitions_find(partition_table *t, int32_t part);

/* The partition's entry, added (offsets unknown) if missing; NULL when memory ran out. */
partition_state *partitions_add(partition_table *t, int32_t part);

/* Marks the offsets of the lane's partitions unknown (read again before the next
 * transaction: another worker may have moved them). */
void partitions_forget_offsets(struct ingest *ing, const struct lane *lane);

/* The consumer's rebalance callback (opaque: the ingest). */
void partitions_on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *parts, void *opaque);

/* Assigns the partitions recorded by the callback, with their starting offsets. Called
 * after every consumer poll. */
void partitions_assign_recorded(struct ingest *ing);

#endif
