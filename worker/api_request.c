/* api_request: the pure part of the API's request handling; see api_request.h. */
#include "api_request.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "result.h"

void api_request_init(mw_api_resp *r) {
    memset(r, 0, sizeof *r);
    jsonw_init(&r->body);
}

void api_request_free(mw_api_resp *r) { jsonw_free(&r->body); }

int api_request_error(mw_api_resp *r, int status, const char *message) {
    jsonw_reset(&r->body);
    jsonw_raw(&r->body, "{");
    jsonw_key(&r->body, "error");
    jsonw_str(&r->body, message);
    jsonw_raw(&r->body, "}");
    return r->status = status;
}

/* Content-Type application/json, parameters (charset) allowed. A missing Content-Type is
 * refused too: the API's clients (its curl example) always send it. */
int api_request_is_json(const char *ct) {
    if (!ct) return 0;
    while (*ct == ' ' || *ct == '\t') ct++;
    size_t n = strlen("application/json");
    if (strncasecmp(ct, "application/json", n) != 0) return 0;
    char next = ct[n];
    return next == '\0' || next == ';' || next == ' ' || next == '\t';
}

int api_request_head(mw_api_resp *r, const char *method, const char *path, api_header_fn header,
                     void *header_ctx, const mw_apikeys *keys, int64_t max_body) {
    if (strcmp(path, API_ROUTE) != 0) return api_request_error(r, 404, "not found");
    if (strcmp(method, "POST") != 0) return api_request_error(r, 405, "method not allowed");
    const char *id = header(header_ctx, "asapp-api-id");
    const char *secret = header(header_ctx, "asapp-api-secret");
    const char *client = apikeys_check(keys, id, secret, secret ? strlen(secret) : 0);
    /* One body for a wrong id, a wrong secret and none: nothing tells which. */
    if (!client) return api_request_error(r, 401, "unauthorized");
    snprintf(r->client, sizeof r->client, "%s", client);
    if (!api_request_is_json(header(header_ctx, "Content-Type")))
        return api_request_error(r, 415, "Content-Type must be application/json");
    const char *cl = header(header_ctx, "Content-Length");
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        /* Refused before a byte of the body is read (no 100 Continue either). */
        if (errno || *end || max_body < 0 || n > (unsigned long long)max_body)
            return api_request_error(r, 413, "request body too large");
        r->has_length = true;
        r->declared_len = n;
    }
    return 0;
}

int api_request_body(mw_api_resp *r, size_t have, size_t n, int64_t max_body) {
    if (max_body < 0 || n > (uint64_t)max_body || have > (uint64_t)max_body - n)
        return api_request_error(r, 413, "request body too large");
    return 0;
}

int api_request_decide(mw_api_resp *r, mw_batch *b, const char *body, size_t len,
                       const char *topic, int max_items) {
    mw_source src = {topic, 0, 0};
    if (batch_decode(b, body ? body : "", len, &src, max_items) != 0)
        return api_request_error(r, 500, "out of memory");
    r->items = b->n_items;
    if (b->bad_request || b->invalid_count == b->n_items) {
        jsonw_reset(&r->body);
        result_response(&r->body, b);
        batch_free(b);
        if (r->body.oom) return api_request_error(r, 500, "out of memory");
        return r->status = 400;
    }
    r->produce = true;
    return 0;
}

int api_request_accept(mw_api_resp *r, mw_batch *b, const mw_source *src) {
    batch_set_source(b, src);
    r->items = b->n_items;
    jsonw_reset(&r->body);
    result_response(&r->body, b);
    batch_free(b);
    if (r->body.oom) return api_request_error(r, 500, "out of memory");
    return r->status = 200;
}

int api_request_handle(mw_api_resp *r, const mw_api_request *req, const mw_apikeys *keys,
                       int64_t max_body, int max_items, const mw_source *src) {
    int s = api_request_head(r, req->method, req->path, req->header, req->header_ctx, keys,
                             max_body);
    if (!s) s = api_request_body(r, 0, req->body_len, max_body);
    mw_batch b;
    if (!s) s = api_request_decide(r, &b, req->body, req->body_len, src->topic, max_items);
    if (!s) s = api_request_accept(r, &b, src);
    return s;
}
