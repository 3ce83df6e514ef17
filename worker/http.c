/* http: /metrics, /healthz, /readyz over libmicrohttpd; see http.h. */
#include "http.h"

#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct mw_http {
    struct MHD_Daemon *d;
    mw_metrics *m;
    const char *version;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             char *body, size_t len, int owned) {
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        if (owned) free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **state) {
    (void)version; (void)upload; (void)upload_size; (void)state;
    mw_http *h = cls;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply(c, 405, "text/plain", "method not allowed\n", 19, 0);
    if (strcmp(url, "/metrics") == 0) {
        jsonw w;
        jsonw_init(&w);
        metrics_render(h->m, h->version, &w);
        size_t len = w.len;
        char *body = jsonw_take(&w);
        if (!body) return reply(c, 500, "text/plain", "out of memory\n", 14, 0);
        return reply(c, 200, "text/plain; version=0.0.4; charset=utf-8", body, len, 1);
    }
    if (strcmp(url, "/healthz") == 0) {
        if (metrics_alive(h->m, 60000)) return reply(c, 200, "text/plain", "ok\n", 3, 0);
        return reply(c, 503, "text/plain", "main loop stalled\n", 18, 0);
    }
    if (strcmp(url, "/readyz") == 0) {
        if (metrics_ready(h->m)) return reply(c, 200, "text/plain", "ready\n", 6, 0);
        return reply(c, 503, "text/plain", "not ready\n", 10, 0);
    }
    return reply(c, 404, "text/plain", "not found\n", 10, 0);
}

mw_http *http_start(const char *addr, mw_metrics *m, const char *version, char *errstr,
                    size_t errstr_size) {
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || !colon[1]) {
        snprintf(errstr, errstr_size, "METRICS_ADDR: expected host:port");
        return NULL;
    }
    size_t hl = (size_t)(colon - addr);
    if (hl >= sizeof host) hl = sizeof host - 1;
    memcpy(host, addr, hl);
    host[hl] = '\0';
    if (host[0] == '[' && hl > 1 && host[hl - 1] == ']') { /* [v6]:port */
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int gai = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
    if (gai != 0) {
        snprintf(errstr, errstr_size, "METRICS_ADDR: %s", gai_strerror(gai));
        return NULL;
    }
    mw_http *h = calloc(1, sizeof *h);
    if (!h) {
        freeaddrinfo(res);
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    h->m = m;
    h->version = version;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (res->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, handler, h, MHD_OPTION_SOCK_ADDR, res->ai_addr,
                            MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    freeaddrinfo(res);
    if (!h->d) {
        snprintf(errstr, errstr_size, "METRICS_ADDR: cannot listen on %s", addr);
        free(h);
        return NULL;
    }
    return h;
}

void http_stop(mw_http *h) {
    if (!h) return;
    MHD_stop_daemon(h->d);
    free(h);
}
