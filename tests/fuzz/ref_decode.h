/*
 * ref_decode: the fuzz target's reference decoder. It reads a message with json-c's tree
 * and the validation rules of SPEC §2-§3 (the worker's decoder before it walked the text
 * itself), and checks that batch_decode's result is the same.
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

/* Aborts (with a report) unless b is what the reference makes of data. */
void ref_compare(json_tokener *tok, const uint8_t *data, size_t size, const mw_source *src,
                 int max_items, const mw_batch *b);

#endif
