/* http: /metrics, /healthz, /readyz over libmicrohttpd; see http.h. */
#include "http.h"

#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include "../common/log.h"

/*
 * Limits: the endpoint serves probes and scrapes, a handful of short requests at a
 * time, and must stay reachable while someone floods it.
 *
 * HTTP_MAX_CONNECTIONS: kubelet probes (liveness, readiness: one connection each per period)
 * plus one or two Prometheus scrapers plus a human with curl need well under 10 at once; 64
 * leaves room for all that many times over, yet is only 64 fds and at most 64 x 32 KiB of
 * connection memory. It is far below the usual soft RLIMIT_NOFILE (1024 in many containers),
 * so a flood can never take the fds librdkafka (sockets per broker, wake-up pipes) and libpq
 * need; http_start also caps it at a quarter of the actual soft limit (HTTP_FD_SHARE).
 *
 * HTTP_MAX_PER_IP: one source address (one attacker, one misbehaving client) can hold at most
 * 8 of the 64 slots, so filling the endpoint takes at least 8 distinct addresses; 8 is still
 * above what the kubelet (which probes from the node's address) ever opens at once.
 *
 * HTTP_IDLE_TIMEOUT_S: probes and scrapers send their whole request at once, so a connection
 * that sends nothing for 3 s is dead or hostile; closing it frees its slot well within a
 * probe period (10 s by default). A keep-alive scraper just reconnects.
 * libmicrohttpd (0.9.75) has only this idle timeout, no limit on the total time to receive a
 * request: a client that sends one byte every < 3 s holds its slot indefinitely. The per-IP
 * limit bounds that to 8 slots per address; many addresses together can still fill the 64.
 *
 * HTTP_MEMORY_PER_CONN: libmicrohttpd's per-connection pool (its default, made explicit):
 * the request line and headers must fit in it, so a connection's memory is bounded; probe
 * and scrape requests are a few hundred bytes.
 *
 * HTTP_LOG_BURST per HTTP_LOG_WINDOW_S: libmicrohttpd logs one line per refused connection;
 * a flood must not turn into a log flood. Beyond the burst, lines are counted and the count
 * is logged once the window has passed.
 */
#define HTTP_MAX_CONNECTIONS 64u
#define HTTP_MAX_PER_IP 8u
#define HTTP_IDLE_TIMEOUT_S 3u
#define HTTP_FD_SHARE 4u
#define HTTP_MEMORY_PER_CONN ((size_t)32 * 1024)
#define HTTP_LOG_BURST 20u
#define HTTP_LOG_WINDOW_S 10

struct mw_http {
    struct MHD_Daemon *d;
    mw_http_probes probes;
    http_log log;
};

void http_log_init(http_log *l) {
    memset(l, 0, sizeof *l);
    pthread_mutex_init(&l->mu, NULL);
    l->window = -HTTP_LOG_WINDOW_S;
}

static void log_dropped(http_log *l) {
    if (l->dropped)
        log_write(LOG_WARN, "libmicrohttpd messages suppressed", LF_S("source", "libmicrohttpd"),
                  LF_I("count", l->dropped), LF_I("window_s", HTTP_LOG_WINDOW_S), LF_END);
    l->dropped = 0;
}

void http_log_term(http_log *l) {
    pthread_mutex_lock(&l->mu);
    log_dropped(l);
    pthread_mutex_unlock(&l->mu);
    pthread_mutex_destroy(&l->mu);
}

/* MHD_OPTION_EXTERNAL_LOGGER: libmicrohttpd's messages as JSON lines, never raw stderr. */
void http_mhd_log(void *cls, const char *fmt, va_list ap) {
    http_log *l = cls;
    char buf[512];
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    if (n < 0) snprintf(buf, sizeof buf, "(unformattable message)");
    size_t len = strlen(buf);
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
        buf[--len] = '\0';
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    pthread_mutex_lock(&l->mu);
    if (ts.tv_sec - l->window >= HTTP_LOG_WINDOW_S) {
        log_dropped(l);
        l->window = ts.tv_sec;
        l->count = 0;
    }
    if (l->count < HTTP_LOG_BURST) {
        l->count++;
        log_write(LOG_WARN, buf, LF_S("source", "libmicrohttpd"), LF_END);
    } else {
        l->dropped++;
    }
    pthread_mutex_unlock(&l->mu);
}

unsigned http_connection_limit(unsigned want, unsigned fd_share) {
    unsigned lim = want;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur / fd_share < lim)
        lim = rl.rlim_cur / fd_share ? (unsigned)(rl.rlim_cur / fd_share) : 1u;
    return lim;
}

unsigned http_poll_flags(const char **poller) {
    /* epoll (else poll): no FD_SETSIZE ceiling on descriptor numbers, unlike select. */
    *poller = "epoll";
    if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES)
        return MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    *poller = "poll";
    if (MHD_is_feature_supported(MHD_FEATURE_POLL) == MHD_YES)
        return MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    *poller = "select";
    return MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
}

int http_resolve(const char *addr, const char *setting, struct addrinfo **res, char *errstr,
                 size_t errstr_size) {
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || !colon[1]) {
        snprintf(errstr, errstr_size, "%s: expected host:port", setting);
        return -1;
    }
    size_t hl = (size_t)(colon - addr);
    if (hl >= sizeof host) hl = sizeof host - 1;
    memcpy(host, addr, hl);
    host[hl] = '\0';
    if (host[0] == '[' && hl > 1 && host[hl - 1] == ']') { /* [v6]:port */
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int gai = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, res);
    if (gai != 0) {
        snprintf(errstr, errstr_size, "%s: %s", setting, gai_strerror(gai));
        return -1;
    }
    return 0;
}

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
        h->probes.render(h->probes.cls, &w);
        size_t len = w.len;
        char *body = jsonw_take(&w);
        if (!body) return reply(c, 500, "text/plain", "out of memory\n", 14, 0);
        return reply(c, 200, "text/plain; version=0.0.4; charset=utf-8", body, len, 1);
    }
    if (strcmp(url, "/healthz") == 0) {
        if (h->probes.healthy(h->probes.cls)) return reply(c, 200, "text/plain", "ok\n", 3, 0);
        return reply(c, 503, "text/plain", "main loop stalled\n", 18, 0);
    }
    if (strcmp(url, "/readyz") == 0) {
        if (h->probes.ready(h->probes.cls)) return reply(c, 200, "text/plain", "ready\n", 6, 0);
        return reply(c, 503, "text/plain", "not ready\n", 10, 0);
    }
    return reply(c, 404, "text/plain", "not found\n", 10, 0);
}

mw_http *http_start(const char *addr, const mw_http_probes *probes, char *errstr,
                    size_t errstr_size) {
    struct addrinfo *res = NULL;
    if (http_resolve(addr, "METRICS_ADDR", &res, errstr, errstr_size)) return NULL;
    mw_http *h = calloc(1, sizeof *h);
    if (!h) {
        freeaddrinfo(res);
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    h->probes = *probes;
    http_log_init(&h->log);
    const char *poller;
    unsigned flags = http_poll_flags(&poller);
    if (res->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    unsigned max_conn = http_connection_limit(HTTP_MAX_CONNECTIONS, HTTP_FD_SHARE);
    unsigned per_ip = HTTP_MAX_PER_IP;
    if (per_ip > max_conn / 2) per_ip = max_conn / 2 ? max_conn / 2 : 1u;
    /* The logger goes first so that even start-up messages are JSON. */
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, handler, h,
                            MHD_OPTION_EXTERNAL_LOGGER, http_mhd_log, &h->log,
                            MHD_OPTION_SOCK_ADDR, res->ai_addr,
                            MHD_OPTION_CONNECTION_LIMIT, max_conn,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
                            MHD_OPTION_CONNECTION_TIMEOUT, HTTP_IDLE_TIMEOUT_S,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, HTTP_MEMORY_PER_CONN,
                            MHD_OPTION_END);
    freeaddrinfo(res);
    if (!h->d) {
        snprintf(errstr, errstr_size, "METRICS_ADDR: cannot listen on %s", addr);
        http_log_term(&h->log);
        free(h);
        return NULL;
    }
    log_write(LOG_INFO, "http limits", LF_S("poller", poller), LF_I("max_connections", max_conn),
              LF_I("max_connections_per_ip", per_ip), LF_I("idle_timeout_s", HTTP_IDLE_TIMEOUT_S),
              LF_END);
    return h;
}

void http_stop(mw_http *h) {
    if (!h) return;
    MHD_stop_daemon(h->d);
    http_log_term(&h->log);
    free(h);
}
