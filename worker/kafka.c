/* kafka: librdkafka client construction; see kafka.h. */
#include "kafka.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "../common/log.h"

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    /* syslog levels: 0-3 error, 4 warning, 5-6 info, 7 debug */
    enum log_level l = level <= 3 ? LOG_ERROR : level == 4 ? LOG_WARN : level <= 6 ? LOG_INFO : LOG_DEBUG;
    log_write(l, buf, LF_S("source", "librdkafka"), LF_S("client", rd_kafka_name(rk)),
              LF_S("facility", fac), LF_END);
}

/* The first configuration error error_cb saw (kafka_refused): 0 none, 1 being written, 2 set. */
static atomic_int refused_state;
static char refused_msg[256];
static char refused_error[64];
static char refused_reason[512];

const char *kafka_refusal(rd_kafka_resp_err_t err, const char *reason) {
    if (!reason) reason = "";
    /* The broker's certificate did not verify against ssl.ca.location (or its name does not
     * match the address): librdkafka reports it as __SSL ("SSL handshake failed: ...
     * certificate verify failed", or "Failed to verify broker certificate" after the
     * handshake); matched on the text whatever the code. Other __SSL failures are not
     * fatal: a reset during a handshake (a broker going down) is one too. */
    if (strstr(reason, "certificate verify failed") ||
        strstr(reason, "Failed to verify broker certificate") ||
        strstr(reason, "Broker did not provide a certificate"))
        return "the Kafka broker's TLS certificate is not trusted: stopping (check ssl.ca.location,"
               " and that the certificate names the address in KAFKA_BROKERS)";
    /* The broker refused the credentials or the mechanism, or the client cannot run its SASL
     * mechanism. Not a refusal: an exchange cut short by the transport (a broker going down
     * mid-handshake is reported as __AUTHENTICATION with a local error's text, "Local: ...",
     * or "Disconnected", or a failed SaslAuthenticate request). */
    if (err == RD_KAFKA_RESP_ERR__AUTHENTICATION && !strstr(reason, "Local: ") &&
        !strstr(reason, "Disconnected") && !strstr(reason, "SaslAuthenticateRequest failed"))
        return "Kafka refused the worker's SASL credentials: stopping (check sasl.username,"
               " sasl.password and sasl.mechanisms)";
    return NULL;
}

bool kafka_refused(const char **msg, const char **error, const char **reason) {
    if (atomic_load(&refused_state) != 2) return false;
    *msg = refused_msg;
    *error = refused_error;
    *reason = refused_reason;
    return true;
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    (void)opaque;
    const char *refusal = kafka_refusal((rd_kafka_resp_err_t)err, reason);
    if (refusal) {
        /* Recorded for the loop that polls (it logs it once and stops with exit 1): a
         * configuration error is not retried for ever (docs/design.md). */
        int none = 0;
        if (atomic_compare_exchange_strong(&refused_state, &none, 1)) {
            snprintf(refused_msg, sizeof refused_msg, "%s", refusal);
            snprintf(refused_error, sizeof refused_error, "%s",
                     rd_kafka_err2name((rd_kafka_resp_err_t)err));
            snprintf(refused_reason, sizeof refused_reason, "%s", reason ? reason : "");
            atomic_store(&refused_state, 2);
        }
        return;
    }
    /* Most errors are informational: librdkafka recovers by itself (docs/contract.md §6). */
    enum log_level l = err == RD_KAFKA_RESP_ERR__FATAL ? LOG_ERROR : LOG_WARN;
    log_write(l, "kafka client error", LF_S("client", rd_kafka_name(rk)),
              LF_S("error", rd_kafka_err2name((rd_kafka_resp_err_t)err)), LF_S("reason", reason),
              LF_END);
}

static int set(rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr,
               size_t errstr_size) {
    char e[256];
    if (rd_kafka_conf_set(conf, name, value, e, sizeof e) != RD_KAFKA_CONF_OK) {
        /* The value is not echoed: it may be a secret. */
        snprintf(errstr, errstr_size, "Kafka property %s: %s", name, e);
        return -1;
    }
    return 0;
}

/* Both clients. */
static const char *const common_defaults[] = {
    /* How soon a broker that went away is tried again. librdkafka waits between connection
     * attempts from reconnect.backoff.ms (100 ms) doubling up to this cap, 10 s by default:
     * after an outage of a few seconds each client tries the broker only every ~10 s and
     * finds it back up to 10 s late. The consumer's fetch connection waited so (and the
     * producer's, when results were queued): ingestion resumed 2.5-8 s after a restarted
     * broker answered (tests/reliability/test_broker_restart.py); with a 1 s cap, 0.2-1.2 s.
     * Safe: it paces only the attempts to a broker already unreachable (one refused connect
     * a second per client is nothing, and librdkafka still spreads them by -25% jitter); no
     * failure is detected sooner (socket, request and session timeouts are unchanged), so a
     * short hiccup cannot make the worker flap; idempotence, acks=all and the offsets stored
     * are untouched: queued and in-flight results are sent again on the new connection with
     * their sequence numbers, as before. */
    "reconnect.backoff.max.ms", "1000",
    /* How soon a silent broker is noticed (docs/operations.md, "Silent networks"): a request
     * with no answer for socket.timeout.ms fails, and (socket.max.fails=1) its connection is
     * closed and made again. The consumer fetches all the time (fetch.wait.max.ms 50), so a
     * broker or path that goes silent, whether it drops packets or keeps acknowledging
     * them (a proxy), shows up as a timed-out fetch 20 s later (librdkafka's default, 60 s,
     * is past our 30 s target); a new connection into the silence fails its setup within
     * socket.connection.setup.timeout.ms (30 s) and is retried every second. Produce
     * requests keep the producer's own request.timeout.ms (30 s: acks=all may wait on
     * replicas). Safe: a broker answers these requests in milliseconds (the long waits of
     * JoinGroup and SyncGroup have timeouts of their own); a timed-out request is retried on
     * the new connection (idempotent producer; fetches and commits are repeatable). Group
     * membership is not at stake: the coordinator keeps it for session.timeout.ms (45 s)
     * without heartbeats, so a 30 s silence is survived if the connection is back within
     * ~15 s of its end. TCP keepalives are asked for too (the OS's timers: they only close
     * what a timeout would). */
    "socket.timeout.ms", "20000",
    "socket.keepalive.enable", "true",
    NULL};

static rd_kafka_conf_t *base_conf(const mw_config *cfg, void *opaque, const char *const *defaults,
                                  char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_opaque(conf, opaque);
    if (set(conf, "bootstrap.servers", cfg->kafka_brokers, errstr, errstr_size) ||
        set(conf, "client.id", "metadata-worker", errstr, errstr_size))
        goto fail;
    for (int i = 0; common_defaults[i]; i += 2)
        if (set(conf, common_defaults[i], common_defaults[i + 1], errstr, errstr_size)) goto fail;
    for (int i = 0; defaults[i]; i += 2)
        if (set(conf, defaults[i], defaults[i + 1], errstr, errstr_size)) goto fail;
    for (int i = 0; i < cfg->n_props; i++)
        if (set(conf, cfg->prop_names[i], cfg->prop_values[i], errstr, errstr_size)) goto fail;
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

rd_kafka_t *kafka_consumer_new(const mw_config *cfg, kafka_rebalance_fn rebalance,
                               kafka_stats_fn stats, void *opaque, char *errstr,
                               size_t errstr_size) {
    static const char *const defaults[] = {
        "partition.assignment.strategy", "cooperative-sticky",
        /* Offsets are stored only after a message's rows are in PostgreSQL and its results
         * acknowledged; librdkafka commits what is stored. */
        "enable.auto.commit", "true",
        "enable.auto.offset.store", "false",
        "auto.commit.interval.ms", "1000",
        "auto.offset.reset", "earliest",
        /* Bounded prefetch keeps memory flat with a large backlog (a message larger than
         * these limits is still fetched, alone). Once the queue is over this limit,
         * librdkafka 2.0 looks at it again only about once a second (fetch.queue.backoff.ms
         * came in 2.1): the queue must hold a second of work, or the worker starves for
         * part of every second (docs/benchmarks.md, "A prefetch that does not starve"). */
        "queued.max.messages.kbytes", "32768",
        "fetch.max.bytes", "8388608",
        "fetch.wait.max.ms", "50",
        /* Group membership through a broker restart. librdkafka gives its membership up when
         * no heartbeat has succeeded for session.timeout.ms, counted from the last success
         * before the outage to the first one after the broker has loaded the group again; a
         * 20 s broker stop keeps it away 25-30 s. A worker that lost its membership rejoins
         * as a new member, and the restarted broker, which reloaded the old member, holds
         * that join until the old member's session expires: ingestion then resumes only a
         * session timeout after the broker is back, and re-reads what was not committed.
         * 45 s (librdkafka's and the Java client's default) keeps the membership through a
         * stop of up to ~35 s (tests/reliability/test_broker_restart.py); a 1 s heartbeat
         * trims up to 2 s off each end of the count and notices a rebalance sooner.
         * Safe: no failure is detected sooner, so nothing can flap; a worker that dies
         * without leaving (SIGKILL, lost host) has its partitions taken over after 45 s
         * instead of 30 (SIGTERM leaves the group at once, and -X session.timeout.ms still
         * overrides; with KAFKA_GROUP_INSTANCE_ID, below, a restart under the same name takes
         * them back at once, but SIGTERM no longer leaves); one heartbeat a second is nothing
         * for the coordinator. */
        "session.timeout.ms", "45000",
        "heartbeat.interval.ms", "1000",
        "max.poll.interval.ms", "300000",
        "statistics.interval.ms", "2000",
        NULL};
    rd_kafka_conf_t *conf = base_conf(cfg, opaque, defaults, errstr, errstr_size);
    if (!conf) return NULL;
    /* Static membership (KIP-345) when KAFKA_GROUP_INSTANCE_ID is set: a worker killed and
     * started again under the same name within session.timeout.ms is taken back by the
     * coordinator as the same member, with its partitions, and without a rebalance, instead
     * of its partitions standing still until the dead member's session expires (45 s, above).
     * Unset, `-X group.instance.id=…` (set by base_conf) still applies; both set, the setting
     * wins, as KAFKA_GROUP_ID does over -X group.id. */
    if (set(conf, "group.id", cfg->group_id, errstr, errstr_size) ||
        (cfg->group_instance_id &&
         set(conf, "group.instance.id", cfg->group_instance_id, errstr, errstr_size))) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_rebalance_cb(conf, rebalance);
    if (stats) rd_kafka_conf_set_stats_cb(conf, stats);
    char e[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof e);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(errstr, errstr_size, "cannot create the Kafka consumer: %s", e);
        return NULL;
    }
    /* conf is now owned, and freed, by rk. */
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

/* A producer with the common settings, then defaults (name, value, …, NULL), then -X. */
static rd_kafka_t *producer_new(const mw_config *cfg, const char *const *defaults, kafka_dr_fn dr,
                                void *opaque, char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf = base_conf(cfg, opaque, defaults, errstr, errstr_size);
    if (!conf) return NULL;
    rd_kafka_conf_set_dr_msg_cb(conf, dr);
    char e[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(errstr, errstr_size, "cannot create the Kafka producer: %s", e);
        return NULL;
    }
    /* conf is now owned, and freed, by rk. */
    return rk;
}

rd_kafka_t *kafka_producer_new(const mw_config *cfg, kafka_dr_fn dr, void *opaque,
                               char *errstr, size_t errstr_size) {
    static const char *const defaults[] = {
        "enable.idempotence", "true",
        "acks", "all",
        "linger.ms", "5",
        "partitioner", "murmur2_random", /* the Java client's: same key, same partition */
        "message.timeout.ms", "120000",
        NULL};
    return producer_new(cfg, defaults, dr, opaque, errstr, errstr_size);
}

rd_kafka_t *kafka_api_producer_new(const mw_config *cfg, kafka_dr_fn dr, void *opaque,
                                   int queue_kbytes, char *errstr, size_t errstr_size) {
    char timeout[16], max_bytes[16], kbytes[16];
    snprintf(timeout, sizeof timeout, "%d", cfg->api_produce_timeout_ms);
    /* The body plus key, headers and record overhead. */
    snprintf(max_bytes, sizeof max_bytes, "%d", cfg->api_max_body_bytes + 65536);
    snprintf(kbytes, sizeof kbytes, "%d", queue_kbytes);
    const char *const defaults[] = {
        "enable.idempotence", "true",
        "acks", "all",
        /* A request waits for its confirmation: batching longer than a few ms adds latency. */
        "linger.ms", "2",
        "partitioner", "murmur2_random", /* same key (client id), same partition: ordered */
        "message.timeout.ms", timeout,
        "message.max.bytes", max_bytes,
        "queue.buffering.max.kbytes", kbytes,
        NULL};
    return producer_new(cfg, defaults, dr, opaque, errstr, errstr_size);
}
