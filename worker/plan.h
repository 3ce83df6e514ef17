/*
 * plan: plans the upsert of one database transaction (docs/contract.md §4). Valid items are
 * added in the order they must apply (by offset within a partition, by index within a message).
 * plan_merge groups them by key. On a plain table (schema 4) plan_merged_json writes one
 * composed record per key (see below its declaration); on any other, plan_rows_json writes
 * them in generations, as follows. Generation
 * g holds the g-th item of every key that has more than g items, each item as its own record
 * (its own fields, attributes patch, eventId and source: nothing is merged across items),
 * the records of a generation in key order. The database applies the generations one after
 * the other, one MERGE each, in the transaction that moves the offsets
 * (customer_metadata_apply, schema 3). Pure: no I/O.
 *
 * Why this is exact (contract §4: the state of applying the items one after the other): each
 * key's items apply in their order, one statement each, so every intermediate state of
 * every row is written and checked by the table's constraints and triggers, as applying the
 * items one by one would. Items of different keys write different rows, so their relative
 * order does not change the result for rules that look at one row (CHECK, NOT NULL, row
 * triggers reading NEW). An item the database refuses fails the statement, and the slow path
 * (plan_isolated_json, item by item) isolates it. How the stream is split into messages and
 * transactions therefore changes neither the table nor the results. Merging a key's items
 * into one row skips the intermediate states, and could hide a refused item behind a later
 * one of its key: plan_merged_json is for plain tables only, where no rule can refuse an
 * intermediate state that it would accept at the end. Rules across rows (a UNIQUE on another column, a
 * trigger reading other rows) see the items of different keys in generation order, not in
 * stream order (contract §4 gives no order across partitions anyway).
 *
 * A generation holds at most one record per key, as MERGE needs (it may not affect a row
 * twice). Every key of a later generation is in generation 0, whose MERGE meets the rows in
 * key order: later generations take no new row lock, so the lock order is the one that keeps
 * two connections from deadlocking, as before.
 *
 * Cost: one MERGE per generation, all in the one statement the worker sends (no extra round
 * trip). A transaction has as many generations as its most repeated key has items: one when
 * no key repeats; a key repeated n times has its row written n times (once when merged).
 * Planning and writing the documents are O(items), even when one key holds every item.
 *
 * Ownership: a plan borrows the items added to it (they must outlive it) and owns its rows
 * and scratch arrays. plan_reset keeps the memory for the next batch.
 */
#ifndef MW_PLAN_H
#define MW_PLAN_H

#include "../common/jsonw.h"
#include "batch.h"

typedef struct mw_plan_item {
    const mw_item *item;
    int32_t partition;
    int64_t offset;
    int next_in_row;             /* (after plan_merge) the key's next item, or -1 */
} mw_plan_item;

/* One key of the transaction (after plan_merge). */
typedef struct mw_row {
    mw_str cid, conv;            /* the key: externalCustomerId, externalConversationId */
    int first, last_i;           /* the key's first and last items (indexes in items) */
    int n;                       /* the key's number of items */
    uint64_t hash;
} mw_row;

typedef struct mw_plan {
    mw_plan_item *items;
    int n_items, cap_items;
    mw_row *rows;                /* after plan_merge: one per key, in key order */
    int n_rows, cap_rows;
    int n_gens;                  /* after plan_merge: generations (the most items of a key) */
    int *slots;                  /* open addressing: row index + 1, 0 = empty */
    size_t n_slots;
    int *active;                 /* scratch of plan_rows_json: each unfinished key's next item */
    const mw_attr **pairs;       /* scratch: one item's patch being composed */
    int *order;
    int cap_pairs;
} mw_plan;

void plan_init(mw_plan *p);
void plan_reset(mw_plan *p);
void plan_free(mw_plan *p);

/* Adds a valid item (item->error == NULL). Returns 0, or -1 when memory ran out. */
int plan_add(mw_plan *p, const mw_item *item, int32_t partition, int64_t offset)
    __attribute__((warn_unused_result));

/* Groups the items added by key (rows, in key order: external_customer_id, then
 * external_conversation_id, bytewise) and counts the generations. Returns 0, or -1 when
 * memory ran out. */
int plan_merge(mw_plan *p) __attribute__((warn_unused_result));

/* The JSON documents the database functions take. plan_rows_json (after plan_merge): an
 * array of generations, each an array of records in key order, one per item:
 * [[gen 0 records…],[gen 1 records…],…] ([] for no items); customer_metadata_apply runs one
 * MERGE per generation. plan_items_json: every item on its own, in order (the slow path that
 * isolates refused items; it needs no plan_merge). A record holds the item's fields given
 * as strings (short names), its attributes patch as "aset"/"adel" (the last setting of a
 * name within the item wins; absent when the item has none), and "part", "off", "idx". Out
 * of memory sets out->oom. */
void plan_rows_json(mw_plan *p, jsonw *out);
void plan_items_json(mw_plan *p, jsonw *out);

/* (After plan_merge.) plan_isolated_json: the records of plan_rows_json's generations one
 * after the other in one flat array: every item on its own, each key's items in order, the
 * keys of a generation in key order, so the slow path takes its row locks in the same global
 * order as every other writer. plan_merged_json: one record per key, in key order, composing
 * the key's items in order: each field as the last item that gives it, the attributes
 * patches composed (a later setting or removal of a name wins; "aset" absent when no item
 * had attributes), eventId and source of the key's last item. Applied to a row, it gives the
 * state of applying the key's items one after the other (contract §4) on a table whose rules
 * accept every intermediate state whenever they accept the last (customer_metadata_plain,
 * schema 4); it writes one row version per key instead of one per item. */
void plan_isolated_json(mw_plan *p, jsonw *out);
void plan_merged_json(mw_plan *p, jsonw *out);

#endif
