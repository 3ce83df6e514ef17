/*
 * api_request: the pure part of the API's request handling (docs/contract.md §8), so that
 * worker/api.c and the fuzz target tests/fuzz/fuzz_api.c run the same code.
 *
 * It owns, in the order they apply: the route (404), the method (405), the credentials
 * (401, one body whatever is wrong), the content type (415), the declared and the received
 * body size (413), the decision on the decoded body (400 with validate's response, or
 * produce), and the 200 response for the source Kafka gave the message; and the error
 * bodies {"error": "…"} of every status. No I/O, no locks, no clock: the caller holds the
 * keys' lock around api_request_head, and keeps what needs the world — the buffer budget
 * and Kafka (503), the rate limit (429), producing itself — in api.c.
 *
 * A request goes: api_request_head (headers complete) → api_request_body (each chunk
 * received) → api_request_decide (body complete) → produce → api_request_accept (Kafka
 * confirmed it at src). api_request_handle chains them for a whole request without Kafka,
 * with a given source standing for the delivery report (the fuzz target's entry point).
 *
 * Ownership: an mw_api_resp is initialized by api_request_init and released by
 * api_request_free; its body is a jsonw the caller may take (jsonw_take).
 */
#ifndef MW_API_REQUEST_H
#define MW_API_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/jsonw.h"
#include "apikeys.h"
#include "batch.h"

#define API_ROUTE "/metadata-ingestion/v1/many-customer-metadata"

/* A request header's value by name (case-insensitive, as HTTP's), NULL when absent. */
typedef const char *(*api_header_fn)(void *ctx, const char *name);

typedef struct mw_api_resp {
    int status;       /* 0 while the request goes on; else the answer's status */
    bool produce;     /* api_request_decide: the body goes to Kafka */
    jsonw body;       /* the answer's body (status != 0) */
    char client[APIKEYS_ID_MAX + 1]; /* the authenticated client's id, "" before */
    bool has_length;  /* Content-Length was given (and within the limit): declared_len */
    uint64_t declared_len;
    int items;        /* items of the decoded body (api_request_decide) */
} mw_api_resp;

/* A whole request, for api_request_handle. */
typedef struct mw_api_request {
    const char *method, *path;   /* libmicrohttpd's: the path without its query string */
    api_header_fn header;
    void *header_ctx;
    const char *body;
    size_t body_len;
} mw_api_request;

void api_request_init(mw_api_resp *r);
void api_request_free(mw_api_resp *r);

/* Sets status and the body {"error": message}. Returns status. */
int api_request_error(mw_api_resp *r, int status, const char *message);

/* Headers complete: route, method, credentials (apikeys_check), Content-Type,
 * Content-Length against max_body. Returns 0 (read the body; r->client is set) or the
 * refusal's status with its body. */
int api_request_head(mw_api_resp *r, const char *method, const char *path, api_header_fn header,
                     void *header_ctx, const mw_apikeys *keys, int64_t max_body);

/* A body chunk of n bytes arrives after `have`: 0, or 413 once the body would exceed
 * max_body (checked while reading: nothing beyond the limit is buffered). */
int api_request_body(mw_api_resp *r, size_t have, size_t n, int64_t max_body);

/* The body is complete: decoded as `validate` does (source topic/0/0) into *b. Returns 400
 * with validate's response when it is not a batch or every item is invalid; 0 with
 * r->produce set otherwise, *b then kept for api_request_accept (the caller frees it with
 * batch_free if the request ends before); 500 when memory ran out. Sets r->items. */
int api_request_decide(mw_api_resp *r, mw_batch *b, const char *body, size_t len,
                       const char *topic, int max_items);

/* Kafka confirmed the message at src: 200 with validate's response for it (b, from
 * api_request_decide, moved to src: generated eventIds follow from it; the body is not
 * decoded again); frees b. 500 when memory ran out. */
int api_request_accept(mw_api_resp *r, mw_batch *b, const mw_source *src);

/* The whole request, src standing for where Kafka put it: head, body, decide, accept.
 * Returns the final status (r->produce tells whether it would have been produced). */
int api_request_handle(mw_api_resp *r, const mw_api_request *req, const mw_apikeys *keys,
                       int64_t max_body, int max_items, const mw_source *src);

/* 1 when a Content-Type value is application/json (parameters such as charset allowed). */
int api_request_is_json(const char *content_type);

#endif
