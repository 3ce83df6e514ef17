/*
 * http: the worker's HTTP endpoint on METRICS_ADDR (libmicrohttpd, its own thread):
 * /metrics (Prometheus text), /healthz (the main loop turns), /readyz (connected to Kafka
 * and PostgreSQL). Reads only the atomics of mw_metrics.
 * Bounded against floods (epoll; total, per-client-address and idle-time limits, see http.c);
 * libmicrohttpd's own messages go to the JSON log with source=libmicrohttpd.
 */
#ifndef MW_HTTP_H
#define MW_HTTP_H

#include <stddef.h>

#include "metrics.h"

typedef struct mw_http mw_http;

/* Listens on addr ("host:port", "[v6]:port" or ":port"). NULL with errstr on failure. */
mw_http *http_start(const char *addr, mw_metrics *m, const char *version, char *errstr,
                    size_t errstr_size);
void http_stop(mw_http *h);

#endif
