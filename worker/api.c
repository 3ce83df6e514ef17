/* api: the HTTP API in front of the input topic; see api.h and docs/contract.md §8. */
#include "api.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "../common/jsonw.h"
#include "../common/log.h"
#include "api_request.h"
#include "apikeys.h"
#include "batch.h"
#include "http.h"
#include "kafka.h"
#include "metrics.h"

#ifndef MW_VERSION
#define MW_VERSION "dev"
#endif

/*
 * Limits (the METRICS_ADDR endpoint's reasoning in http.c, scaled for clients that keep
 * connections open and send bodies):
 * API_MAX_CONNECTIONS: 512 keep-alive clients at once, at most half the soft fd limit
 * (librdkafka needs its own). API_MAX_PER_IP: one address can hold a quarter of them; a
 * load balancer in front counts as one address, so this is not lower.
 * API_IDLE_TIMEOUT_S: a connection silent this long (no header, no body byte, no next
 * request) is closed; libmicrohttpd has no separate header timeout. A request waiting for
 * Kafka is suspended and not timed out: Kafka's own timeout answers it.
 * API_MEMORY_PER_CONN: request line and headers must fit. Bodies are held outside it, all
 * together at most the buffer budget (max(64 MiB, 4 bodies)): beyond it, 503.
 */
#define API_MAX_CONNECTIONS 512u
#define API_MAX_PER_IP 128u
#define API_FD_SHARE 2u
#define API_IDLE_TIMEOUT_S 15u
#define API_MEMORY_PER_CONN ((size_t)32 * 1024)
#define API_BUFFER_BUDGET_MIN ((int64_t)64 * 1024 * 1024)
#define API_PROBE_INTERVAL_MS 2000
/* Retry-After of a 503: a full queue drains within a second; Kafka unreachable, longer. */
#define API_RETRY_BUSY_S "1"
#define API_RETRY_DOWN_S "5"

typedef struct api {
    const mw_config *cfg;
    rd_kafka_t *rk;
    rd_kafka_topic_t *probe_topic;
    struct MHD_Daemon *d;
    http_log log;
    mw_http *metrics_http;
    mw_api_metrics *m;
    pthread_mutex_t keys_mu; /* guards keys (swapped on SIGHUP) and their token buckets */
    mw_apikeys *keys;
    int64_t budget;          /* most bytes of bodies held at once */
    atomic_int draining;     /* SIGTERM seen: answers say Connection: close */
    pthread_t probe;
    pthread_mutex_t probe_mu;
    pthread_cond_t probe_cv;
    int probe_stop;
} api;

/* A request's life. Every transition goes through req_set. */
enum req_state {
    REQ_READING,   /* headers accepted, body arriving (libmicrohttpd's thread) */
    REQ_PRODUCING, /* connection suspended, message in librdkafka's queue */
    REQ_DELIVERED, /* delivery report recorded, connection resumed: answer from it */
    REQ_ANSWERED,  /* a response is queued; any more body is discarded */
};

typedef struct req {
    enum req_state state;
    api *a;
    struct MHD_Connection *c;
    char id[37];                        /* request id: X-Request-Id, Kafka header */
    char client[APIKEYS_ID_MAX + 1];    /* "" until authenticated */
    char *body;
    size_t len, cap;
    int64_t reserved;                   /* bytes of a->budget this request holds */
    int64_t t0_ms;
    int status, items;
    rd_kafka_resp_err_t err;            /* the delivery report's */
    int32_t partition;
    int64_t offset;
    mw_batch batch;                     /* the decoded body, from decide to accept */
    bool has_batch;
} req;

static void req_set(req *r, enum req_state to) {
    static const char *const names[] = {"reading", "producing", "delivered", "answered"};
    int ok = (r->state == REQ_READING && to != REQ_DELIVERED) ||
             (r->state == REQ_PRODUCING && to == REQ_DELIVERED) ||
             (r->state == REQ_DELIVERED && to == REQ_ANSWERED);
    if (!ok) {
        log_write(LOG_ERROR, "impossible request transition", LF_S("from", names[r->state]),
                  LF_S("to", names[to]), LF_S("request_id", r->id), LF_END);
        abort();
    }
    r->state = to;
}

/* ---- budget of buffered bodies ---- */

static int reserve(req *r, int64_t n) {
    api *a = r->a;
    int64_t cur = atomic_fetch_add(&a->m->buffered_bytes, n);
    if (cur + n > a->budget) {
        atomic_fetch_sub(&a->m->buffered_bytes, n);
        return -1;
    }
    r->reserved += n;
    return 0;
}

static int grow(req *r, size_t need) {
    if (need <= r->cap) return 0;
    size_t cap = r->cap ? r->cap : 16384;
    while (cap < need) cap *= 2;
    size_t max = (size_t)r->a->cfg->api_max_body_bytes;
    if (cap > max) cap = max;
    if (cap < need) return -1;
    if (reserve(r, (int64_t)(cap - r->cap))) return -1;
    char *b = realloc(r->body, cap);
    if (!b) return -1;
    r->body = b;
    r->cap = cap;
    return 0;
}

/* ---- answers ---- */

static enum MHD_Result answer(req *r, unsigned status, jsonw *w, const char *retry_after) {
    size_t len = w->len;
    char *body = jsonw_take(w);
    if (!body) return MHD_NO;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "X-Request-Id", r->id);
    if (status == 405) MHD_add_response_header(resp, "Allow", "POST");
    if (retry_after) MHD_add_response_header(resp, "Retry-After", retry_after);
    if (atomic_load(&r->a->draining)) MHD_add_response_header(resp, "Connection", "close");
    r->status = (int)status;
    req_set(r, REQ_ANSWERED);
    enum MHD_Result ret = MHD_queue_response(r->c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Errors other than a batch's: {"error": "<message>"} (api_request_error's). */
static enum MHD_Result answer_error(req *r, unsigned status, const char *message,
                                    const char *retry_after) {
    mw_api_resp p;
    api_request_init(&p);
    api_request_error(&p, (int)status, message);
    enum MHD_Result ret = answer(r, status, &p.body, retry_after);
    api_request_free(&p);
    return ret;
}

/* An answer decided by api_request_* (p->status set), then released. */
static enum MHD_Result answer_resp(req *r, mw_api_resp *p) {
    enum MHD_Result ret = answer(r, (unsigned)p->status, &p->body, NULL);
    api_request_free(p);
    return ret;
}

/* ---- request phases: the decisions are api_request_*'s (shared with the fuzz target) ---- */

static const char *mhd_header(void *ctx, const char *name) {
    return MHD_lookup_connection_value(ctx, MHD_HEADER_KIND, name);
}

/* The first call, headers complete: route, method, credentials, type, declared size. */
static enum MHD_Result on_headers(req *r, const char *url, const char *method) {
    api *a = r->a;
    mw_api_resp p;
    api_request_init(&p);
    pthread_mutex_lock(&a->keys_mu);
    int status = api_request_head(&p, method, url, mhd_header, r->c, a->keys,
                                  a->cfg->api_max_body_bytes);
    pthread_mutex_unlock(&a->keys_mu);
    snprintf(r->client, sizeof r->client, "%s", p.client);
    if (status) return answer_resp(r, &p);
    uint64_t n = p.has_length ? p.declared_len : 0;
    api_request_free(&p);
    if (n && grow(r, (size_t)n)) return answer_error(r, 503, "server busy", API_RETRY_BUSY_S);
    return MHD_YES;
}

static enum MHD_Result on_body(req *r, const char *data, size_t *size) {
    size_t n = *size;
    *size = 0;
    mw_api_resp p;
    api_request_init(&p);
    if (api_request_body(&p, r->len, n, r->a->cfg->api_max_body_bytes))
        return answer_resp(r, &p);
    api_request_free(&p);
    if (grow(r, r->len + n)) return answer_error(r, 503, "server busy", API_RETRY_BUSY_S);
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return MHD_YES;
}

/* The whole body is in: decode as `validate` does, refuse or hand it to Kafka. */
static enum MHD_Result on_complete(req *r) {
    api *a = r->a;
    const mw_config *cfg = a->cfg;
    mw_api_resp p;
    api_request_init(&p);
    int status = api_request_decide(&p, &r->batch, r->body, r->len, cfg->input_topic,
                                    cfg->max_batch_items);
    r->items = p.items;
    if (status) return answer_resp(r, &p); /* 400: not a batch or no valid item */
    r->has_batch = true;
    api_request_free(&p);
    pthread_mutex_lock(&a->keys_mu);
    int wait_s = apikeys_take(a->keys, r->client, cfg->api_rate_limit, r->items, metrics_now_ms());
    pthread_mutex_unlock(&a->keys_mu);
    if (wait_s) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", wait_s);
        return answer_error(r, 429, "rate limit exceeded", ra);
    }
    /* Suspended before the message exists, so its delivery report always finds the
     * connection suspended. The value is not copied: the body stays ours until then. */
    req_set(r, REQ_PRODUCING);
    MHD_suspend_connection(r->c);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        a->rk, RD_KAFKA_V_TOPIC(cfg->input_topic), RD_KAFKA_V_KEY(r->client, strlen(r->client)),
        RD_KAFKA_V_VALUE(r->body, r->len), RD_KAFKA_V_MSGFLAGS(0),
        RD_KAFKA_V_HEADER("api.client.id", r->client, -1),
        RD_KAFKA_V_HEADER("api.request.id", r->id, -1), RD_KAFKA_V_OPAQUE(r), RD_KAFKA_V_END);
    if (err) { /* no delivery report will come: answer from here */
        r->err = err;
        req_set(r, REQ_DELIVERED);
        MHD_resume_connection(r->c);
    }
    return MHD_YES;
}

/* Resumed: Kafka confirmed the message (or failed it). */
static enum MHD_Result on_delivered(req *r) {
    api *a = r->a;
    switch (r->err) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
        break;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
        return answer_error(r, 413, "request body larger than the input topic accepts", NULL);
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
        return answer_error(r, 503, "server busy", API_RETRY_BUSY_S);
    default:
        log_write(LOG_WARN, "Kafka did not confirm a request", LF_S("request_id", r->id),
                  LF_S("error", rd_kafka_err2name(r->err)), LF_END);
        return answer_error(r, 503, "Kafka unavailable", API_RETRY_DOWN_S);
    }
    /* The decoded body moved to the message Kafka holds: generated eventIds are those `run`
     * uses (decoding once: the second decode was half of this thread's time). */
    mw_source src = {a->cfg->input_topic, r->partition, r->offset};
    mw_api_resp p;
    api_request_init(&p);
    r->has_batch = false;
    if (api_request_accept(&p, &r->batch, &src) == 200) {
        atomic_fetch_add(&a->m->items_accepted, (unsigned long long)p.items);
        atomic_fetch_add(&a->m->bytes_accepted, (unsigned long long)r->len);
    }
    return answer_resp(r, &p);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **state) {
    (void)version;
    api *a = cls;
    req *r = *state;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->a = a;
        r->c = c;
        r->t0_ms = metrics_now_ms();
        uuid_t u;
        uuid_generate_random(u);
        uuid_unparse_lower(u, r->id);
        *state = r;
        atomic_fetch_add(&a->m->in_flight, 1);
        return on_headers(r, url, method);
    }
    switch (r->state) {
    case REQ_READING:
        return *upload_size ? on_body(r, upload, upload_size) : on_complete(r);
    case REQ_PRODUCING:
        return MHD_YES;
    case REQ_DELIVERED:
        return on_delivered(r);
    case REQ_ANSWERED:
        *upload_size = 0; /* the rest of a refused body */
        return MHD_YES;
    }
    return MHD_NO;
}

/* MHD_OPTION_NOTIFY_COMPLETED: the access-log line, the metrics; frees the request. */
static void on_completed(void *cls, struct MHD_Connection *c, void **state,
                         enum MHD_RequestTerminationCode toe) {
    (void)c;
    api *a = cls;
    req *r = *state;
    if (!r) return;
    *state = NULL;
    int64_t ms = metrics_now_ms() - r->t0_ms;
    log_write(LOG_INFO, "request", LF_S("request_id", r->id), LF_S("client", r->client),
              LF_I("status", r->status), LF_I("items", r->items), LF_I("bytes", r->len),
              LF_I("ms", ms),
              LF_S("completed", toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "yes" : "no"), LF_END);
    metrics_api_count(a->m, r->status);
    metrics_observe(&a->m->latency, (double)ms / 1000.0);
    atomic_fetch_sub(&a->m->buffered_bytes, r->reserved);
    atomic_fetch_sub(&a->m->in_flight, 1);
    if (r->has_batch) batch_free(&r->batch);
    free(r->body);
    free(r);
}

/* ---- Kafka ---- */

/* Runs in api_run's thread (rd_kafka_poll). Records and resumes; the answer is written by
 * libmicrohttpd's thread. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk; (void)opaque;
    req *r = m->_private;
    r->err = m->err;
    r->partition = m->partition;
    r->offset = m->offset;
    req_set(r, REQ_DELIVERED);
    MHD_resume_connection(r->c);
}

/* /readyz: a metadata request for the input topic answered, and the topic exists. */
static void *probe_main(void *arg) {
    api *a = arg;
    pthread_mutex_lock(&a->probe_mu);
    while (!a->probe_stop) {
        pthread_mutex_unlock(&a->probe_mu);
        const struct rd_kafka_metadata *md = NULL;
        int up = 0;
        if (rd_kafka_metadata(a->rk, 0, a->probe_topic, &md, API_PROBE_INTERVAL_MS) == 0) {
            up = md->topic_cnt == 1 && md->topics[0].err == 0;
            rd_kafka_metadata_destroy(md);
        }
        if (atomic_exchange(&a->m->kafka_up, up) != up)
            log_write(up ? LOG_INFO : LOG_WARN, up ? "Kafka reachable" : "Kafka unreachable",
                      LF_S("topic", a->cfg->input_topic), LF_END);
        pthread_mutex_lock(&a->probe_mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += API_PROBE_INTERVAL_MS / 1000;
        if (!a->probe_stop) pthread_cond_timedwait(&a->probe_cv, &a->probe_mu, &ts);
    }
    pthread_mutex_unlock(&a->probe_mu);
    return NULL;
}

/* ---- keys ---- */

static void reload_keys(api *a) {
    char err[512];
    mw_apikeys *k = apikeys_load(a->cfg->api_keys_file, err, sizeof err);
    if (!k) {
        log_write(LOG_ERROR, "API_KEYS_FILE not reloaded: the keys in use are kept",
                  LF_S("error", err), LF_END);
        return;
    }
    pthread_mutex_lock(&a->keys_mu);
    apikeys_carry_buckets(k, a->keys);
    mw_apikeys *old = a->keys;
    a->keys = k;
    pthread_mutex_unlock(&a->keys_mu);
    apikeys_free(old);
    atomic_store(&a->m->keys_loaded, apikeys_count(k));
    log_write(LOG_INFO, "API_KEYS_FILE reloaded", LF_I("clients", apikeys_count(k)), LF_END);
}

/* ---- METRICS_ADDR ---- */

static void probe_render(void *cls, jsonw *out) { metrics_api_render(cls, MW_VERSION, out); }
static int probe_healthy(void *cls) { (void)cls; return 1; }
static int probe_ready(void *cls) { return metrics_api_ready(cls); }

/* ---- run ---- */

static char *read_file(const char *path, const char *setting, char *errstr, size_t errstr_size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(errstr, errstr_size, "%s: %s: %s", setting, path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 4097) {
            char *b = realloc(buf, cap = cap ? cap * 2 : 8192);
            if (!b) break;
            buf = b;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f) || !buf;
    fclose(f);
    if (bad) {
        free(buf);
        snprintf(errstr, errstr_size, "%s: %s: cannot read", setting, path);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

static int start_daemon(api *a, char **tls, char *errstr, size_t errstr_size) {
    const mw_config *cfg = a->cfg;
    struct addrinfo *res = NULL;
    if (http_resolve(cfg->api_addr, "API_ADDR", &res, errstr, errstr_size)) return -1;
    const char *poller;
    unsigned flags = http_poll_flags(&poller) | MHD_ALLOW_SUSPEND_RESUME;
    if (res->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    if (tls[0]) flags |= MHD_USE_TLS;
    unsigned max_conn = http_connection_limit(API_MAX_CONNECTIONS, API_FD_SHARE);
    unsigned per_ip = API_MAX_PER_IP < max_conn ? API_MAX_PER_IP : max_conn;
    struct MHD_OptionItem tls_opts[] = {
        {tls[0] ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, tls[0]},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, tls[1]},
        {MHD_OPTION_END, 0, NULL}};
    a->d = MHD_start_daemon(flags, 0, NULL, NULL, handler, a,
                            MHD_OPTION_EXTERNAL_LOGGER, http_mhd_log, &a->log,
                            MHD_OPTION_SOCK_ADDR, res->ai_addr,
                            MHD_OPTION_CONNECTION_LIMIT, max_conn,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
                            MHD_OPTION_CONNECTION_TIMEOUT, API_IDLE_TIMEOUT_S,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, API_MEMORY_PER_CONN,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, a,
                            MHD_OPTION_ARRAY, tls_opts,
                            MHD_OPTION_END);
    freeaddrinfo(res);
    if (!a->d) {
        snprintf(errstr, errstr_size, "API_ADDR: cannot listen on %s%s", cfg->api_addr,
                 tls[0] ? " (or the TLS certificate and key were refused)" : "");
        return -1;
    }
    log_write(LOG_INFO, "serving the API", LF_S("addr", cfg->api_addr),
              LF_S("route", API_ROUTE), LF_S("tls", tls[0] ? "yes" : "no"),
              LF_S("poller", poller), LF_I("max_connections", max_conn),
              LF_I("max_connections_per_ip", per_ip), LF_I("idle_timeout_s", API_IDLE_TIMEOUT_S),
              LF_I("max_body_bytes", cfg->api_max_body_bytes),
              LF_I("buffer_budget_bytes", a->budget), LF_END);
    return 0;
}

/* SIGTERM: stop accepting, let the requests in hand finish, then stop. */
static void drain(api *a) {
    atomic_store(&a->draining, 1);
    MHD_socket ls = MHD_quiesce_daemon(a->d);
    if (ls != MHD_INVALID_SOCKET) close(ls);
    int64_t deadline = metrics_now_ms() + a->cfg->shutdown_timeout_ms;
    log_write(LOG_INFO, "stopping: finishing the requests in hand",
              LF_I("in_flight", atomic_load(&a->m->in_flight)), LF_END);
    while (atomic_load(&a->m->in_flight) > 0 && metrics_now_ms() < deadline)
        rd_kafka_poll(a->rk, 50);
    /* Past the deadline: fail what librdkafka still holds (503), so no request stays
     * suspended when libmicrohttpd stops. */
    rd_kafka_purge(a->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    int64_t grace = metrics_now_ms() + 1000;
    while (atomic_load(&a->m->in_flight) > 0 && metrics_now_ms() < grace)
        rd_kafka_poll(a->rk, 50);
}

int api_run(const mw_config *cfg, volatile sig_atomic_t *run, volatile sig_atomic_t *reload) {
    char err[512];
    int rc = 2; /* a configuration error (keys, TLS files) until Kafka is set up */
    char *tls[2] = {NULL, NULL};
    api *a = calloc(1, sizeof *a);
    if (!a) {
        log_write(LOG_ERROR, "out of memory", LF_END);
        return 1;
    }
    a->cfg = cfg;
    pthread_mutex_init(&a->keys_mu, NULL);
    pthread_mutex_init(&a->probe_mu, NULL);
    pthread_cond_init(&a->probe_cv, NULL);
    http_log_init(&a->log);
    int probe_started = 0;
    a->m = metrics_api_new();
    if (!a->m) {
        snprintf(err, sizeof err, "out of memory");
        goto done;
    }
    if (!cfg->api_keys_file) {
        snprintf(err, sizeof err, "API_KEYS_FILE is required (no unauthenticated mode); "
                                  "make a key with: metadata-worker api-key ID");
        goto done;
    }
    if (!(a->keys = apikeys_load(cfg->api_keys_file, err, sizeof err))) goto done;
    if (apikeys_count(a->keys) == 0) {
        snprintf(err, sizeof err, "%s: no client defined", cfg->api_keys_file);
        goto done;
    }
    atomic_store(&a->m->keys_loaded, apikeys_count(a->keys));
    if (!cfg->api_tls_cert != !cfg->api_tls_key) {
        snprintf(err, sizeof err, "API_TLS_CERT and API_TLS_KEY go together");
        goto done;
    }
    if (cfg->api_tls_cert &&
        (!(tls[0] = read_file(cfg->api_tls_cert, "API_TLS_CERT", err, sizeof err)) ||
         !(tls[1] = read_file(cfg->api_tls_key, "API_TLS_KEY", err, sizeof err))))
        goto done;
    rc = 1;
    a->budget = (int64_t)cfg->api_max_body_bytes * 4;
    if (a->budget < API_BUFFER_BUDGET_MIN) a->budget = API_BUFFER_BUDGET_MIN;
    a->rk = kafka_api_producer_new(cfg, on_delivery, a, (int)(a->budget / 1024), err, sizeof err);
    if (!a->rk) goto done;
    a->probe_topic = rd_kafka_topic_new(a->rk, cfg->input_topic, NULL);
    if (!a->probe_topic || pthread_create(&a->probe, NULL, probe_main, a) != 0) {
        snprintf(err, sizeof err, "cannot start the Kafka probe");
        goto done;
    }
    probe_started = 1;
    if (cfg->metrics_addr) {
        const mw_http_probes probes = {probe_render, probe_healthy, probe_ready, a->m};
        if (!(a->metrics_http = http_start(cfg->metrics_addr, &probes, err, sizeof err))) goto done;
        log_write(LOG_INFO, "serving /metrics, /healthz, /readyz", LF_S("addr", cfg->metrics_addr),
                  LF_END);
    }
    if (start_daemon(a, tls, err, sizeof err)) goto done;

    while (*run) {
        rd_kafka_poll(a->rk, 100);
        if (*reload) {
            *reload = 0;
            reload_keys(a);
        }
        const char *refused, *rerror, *reason;
        if (kafka_refused(&refused, &rerror, &reason)) {
            /* Wrong SASL credentials or an untrusted broker certificate: a configuration
             * error, not retried for ever (docs/design.md). */
            log_write(LOG_ERROR, refused, LF_S("error", rerror), LF_S("reason", reason), LF_END);
            break;
        }
        rd_kafka_resp_err_t fe = rd_kafka_fatal_error(a->rk, err, sizeof err);
        if (fe) { /* the idempotent producer cannot go on: stop, a supervisor restarts us */
            log_write(LOG_ERROR, "fatal Kafka producer error", LF_S("error", err), LF_END);
            break;
        }
    }
    rc = *run ? 1 : 0;
    drain(a);
    err[0] = '\0';
done:
    if (rc && err[0]) log_write(LOG_ERROR, err, LF_END);
    if (a->d) MHD_stop_daemon(a->d);
    http_stop(a->metrics_http);
    if (probe_started) {
        pthread_mutex_lock(&a->probe_mu);
        a->probe_stop = 1;
        pthread_cond_signal(&a->probe_cv);
        pthread_mutex_unlock(&a->probe_mu);
        pthread_join(a->probe, NULL);
    }
    if (a->probe_topic) rd_kafka_topic_destroy(a->probe_topic);
    if (a->rk) {
        rd_kafka_flush(a->rk, 1000);
        rd_kafka_destroy(a->rk);
    }
    if (rc == 0) log_write(LOG_INFO, "stopped", LF_END);
    apikeys_free(a->keys);
    metrics_api_destroy(a->m);
    http_log_term(&a->log);
    pthread_cond_destroy(&a->probe_cv);
    pthread_mutex_destroy(&a->probe_mu);
    pthread_mutex_destroy(&a->keys_mu);
    free(tls[0]);
    free(tls[1]);
    free(a);
    return rc;
}

int api_key_command(const char *id) {
    char secret[APIKEYS_SECRET_LEN + 1], line[256], err[256];
    if (apikeys_new_secret(id, secret, line, sizeof line, err, sizeof err) != 0) {
        fprintf(stderr, "metadata-worker api-key: %s\n", err);
        return 2;
    }
    printf("asapp-api-id: %s\nasapp-api-secret: %s\n"
           "# Add this line to API_KEYS_FILE, then send SIGHUP to `metadata-worker api`.\n"
           "# The secret is shown only now and stored nowhere; the file holds its hash.\n"
           "%s\n", id, secret, line);
    return 0;
}
