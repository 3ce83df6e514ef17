/*
 * result: the per-item result message (docs/contract.md §5) and the API response that
 * `metadata-worker validate` prints. Pure: formats into a jsonw, no I/O.
 */
#ifndef MW_RESULT_H
#define MW_RESULT_H

#include "../common/jsonw.h"
#include "batch.h"

/* The error of item i: its validation error, else db_error (may be NULL), else "". */
const char *result_item_error(const mw_item *it, const char *db_error);

/* Writes the result message value of item `it` of batch b (it == NULL: the one result of a
 * bad request). error_count counts the batch's failed items, database rejects included. */
void result_message(jsonw *out, const mw_batch *b, const mw_item *it, const char *error,
                    int error_count);

/* Writes the API's response {"errorCount": N, "results": [{"eventId", "error"}, …]}. */
void result_response(jsonw *out, const mw_batch *b);

#endif
