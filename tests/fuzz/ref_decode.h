/*
 * ref_decode: the fuzz target's reference decoder. It reads a message with json-c's tree
 * and the validation rules of docs/contract.md §2-§3 (the worker's decoder before it walked
 * the text itself), and checks that batch_decode's result is the same.
 */
#ifndef MW_REF_DECODE_H
#define MW_REF_DECODE_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "batch.h"

/* An item's attributes patch as a json-c object (each entry added in order: a later
 * duplicate name replaces an earlier one); NULL when the item has none. */
json_object *ref_patch_of(const mw_item *it);

/* Aborts (with a report) unless b is what the reference makes of data. The gate is compared
 * both ways: an empty message, invalid UTF-8 (an independent check, with the same byte
 * offset) and a document json-c refuses must be refused with the same reason; a document
 * json-c's strict mode accepts, where it is strict (see json_c_lax_here), must pass the gate
 * unless it nests deeper than MW_JSON_MAX_DEPTH. */
void ref_compare(const uint8_t *data, size_t size, const mw_source *src, int max_items,
                 const mw_batch *b);

/* The depth of the reference's json-c tokener: room to spare over the worker's 64 (json-c
 * counts every value, scalars too, as a level). */
#define REF_JSON_DEPTH (MW_JSON_MAX_DEPTH * 4)

#endif
