/*
 * http: the HTTP endpoint on METRICS_ADDR (libmicrohttpd, its own thread): /metrics
 * (Prometheus text), /healthz, /readyz, answered by the probes of the subcommand that runs
 * (`run`: metrics.h's; `api`: api.c's), which must be safe to call from that thread.
 * Also the pieces api.c shares: address resolution, the poller, the fd-share cap and
 * libmicrohttpd's rate-limited JSON logger.
 * Bounded against floods (epoll; total, per-client-address and idle-time limits, see http.c);
 * libmicrohttpd's own messages go to the JSON log with source=libmicrohttpd.
 */
#ifndef MW_HTTP_H
#define MW_HTTP_H

#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <time.h>

#include "../common/jsonw.h"

typedef struct mw_http mw_http;

typedef struct mw_http_probes {
    void (*render)(void *cls, jsonw *out); /* /metrics body */
    int (*healthy)(void *cls);             /* /healthz: 200 or 503 */
    int (*ready)(void *cls);               /* /readyz: 200 or 503 */
    void *cls;
} mw_http_probes;

/* Listens on addr ("host:port", "[v6]:port" or ":port"). NULL with errstr on failure. */
mw_http *http_start(const char *addr, const mw_http_probes *probes, char *errstr,
                    size_t errstr_size);
void http_stop(mw_http *h);

/* Resolves addr for listening; errors are prefixed by `setting` (e.g. "API_ADDR"). The
 * caller frees *res with freeaddrinfo. */
int http_resolve(const char *addr, const char *setting, struct addrinfo **res, char *errstr,
                 size_t errstr_size) __attribute__((warn_unused_result));
/* MHD_USE_* flags of the best internal poller (epoll, else poll, else select). */
unsigned http_poll_flags(const char **poller);
/* want, but never more than 1/fd_share of the soft RLIMIT_NOFILE. */
unsigned http_connection_limit(unsigned want, unsigned fd_share);

/* libmicrohttpd's logger (MHD_OPTION_EXTERNAL_LOGGER, cls = an http_log): JSON lines with
 * source=libmicrohttpd, at most a burst per window (a flood is no log flood). */
typedef struct http_log {
    pthread_mutex_t mu;
    time_t window;
    unsigned count;
    unsigned long dropped;
} http_log;
void http_log_init(http_log *l);
void http_log_term(http_log *l);
void http_mhd_log(void *cls, const char *fmt, va_list ap);

#endif
