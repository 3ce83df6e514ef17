/*
 * plan: plans the upsert of one database transaction (SPEC §4). Valid items are added in
 * the order they must apply (by offset within a partition, by index within a message);
 * items for the same key are merged into one row exactly as applying them one after the
 * other would (a field given replaces, absent/null keeps; attributes patches compose;
 * eventId and source are the last item's). Pure: no I/O.
 *
 * Ownership: a plan borrows the items added to it (they must outlive it) and owns its rows.
 * A row's attributes patch is the patches of its items, in order, composed when written.
 * plan_reset keeps the memory for the next batch.
 */
#ifndef MW_PLAN_H
#define MW_PLAN_H

#include "../common/jsonw.h"
#include "batch.h"

typedef struct mw_plan_item {
    const mw_item *item;
    int32_t partition;
    int64_t offset;
    int next_in_row;             /* (after plan_merge) the row's next item, or -1 */
} mw_plan_item;

typedef struct mw_row {
    mw_str f[F_COUNT];
    int first, last_i;           /* the row's first and last items (indexes in items) */
    bool has_attrs;              /* some item of the row has an attributes patch */
    const mw_plan_item *last;    /* the last item applied to this row */
    uint64_t hash;
} mw_row;

typedef struct mw_plan {
    mw_plan_item *items;
    int n_items, cap_items;
    mw_row *rows;
    int n_rows, cap_rows;
    int *slots;                  /* open addressing: row index + 1, 0 = empty */
    size_t n_slots;
    const mw_attr **pairs;       /* scratch: one patch being composed */
    int *order;
    int cap_pairs;
} mw_plan;

void plan_init(mw_plan *p);
void plan_reset(mw_plan *p);
void plan_free(mw_plan *p);

/* Adds a valid item (item->error == NULL). Returns 0, or -1 when memory ran out. */
int plan_add(mw_plan *p, const mw_item *item, int32_t partition, int64_t offset)
    __attribute__((warn_unused_result));

/* Merges the items added into rows, one per key. Returns 0, or -1 when memory ran out. */
int plan_merge(mw_plan *p) __attribute__((warn_unused_result));

/* The JSON documents the database functions take: the merged rows (after plan_merge), or
 * every item on its own in order (the slow path that isolates rejected items). Out of
 * memory sets out->oom. */
void plan_rows_json(mw_plan *p, jsonw *out);
void plan_items_json(mw_plan *p, jsonw *out);

/* The composed patch of row r (after plan_merge) as a JSON object (name → value|null),
 * names in order of their last setting; for tests and diagnostics. */
void plan_row_patch_json(mw_plan *p, int r, jsonw *out);

#endif
