/*
 * ingest_fixture: a real ingest on librdkafka's mock cluster and the fake database; see
 * ingest_fixture.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ingest_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "../../common/log.h"
#include "fake_db.h"

/* librdkafka 2.0.2's mock cluster thread can miss the wake-up of an operation that arrives
 * while it finishes the previous one, and then sleeps up to a second: each operation is
 * followed by a short pause, so that the next one finds the thread waiting. */
static void mock_settle(void) {
    struct timespec ts = {0, 5 * 1000000L};
    nanosleep(&ts, NULL);
}

#define MOCK(call) do { assert_int_equal((call), 0); mock_settle(); } while (0)

/* The fixture whose producer serves delivery reports (one at a time: tests run in turn). */
static fixture *current;

static void conf_set(rd_kafka_conf_t *c, const char *name, const char *value) {
    char e[256];
    if (rd_kafka_conf_set(c, name, value, e, sizeof e) != RD_KAFKA_CONF_OK) {
        print_error("%s: %s\n", name, e);
        fail();
    }
}

static rd_kafka_conf_t *client_conf(fixture *fx) {
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    conf_set(c, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(fx->mc));
    conf_set(c, "log_level", "3"); /* errors only: injected failures are the point */
    /* MW_TEST_KAFKA_DEBUG=broker,msg,cgrp,… shows what librdkafka does. */
    if (getenv("MW_TEST_KAFKA_DEBUG")) {
        conf_set(c, "debug", getenv("MW_TEST_KAFKA_DEBUG"));
        conf_set(c, "log_level", "7");
    }
    return c;
}

static rd_kafka_t *client_new(rd_kafka_type_t type, rd_kafka_conf_t *c) {
    char e[512];
    rd_kafka_t *rk = rd_kafka_new(type, c, e, sizeof e);
    if (!rk) {
        print_error("rd_kafka_new: %s\n", e);
        fail();
    }
    return rk;
}

static void header(const rd_kafka_message_t *m, const char *name, char *out, size_t size) {
    rd_kafka_headers_t *h = NULL;
    const void *v;
    size_t n;
    out[0] = '\0';
    if (rd_kafka_message_headers(m, &h) || !h) return;
    if (rd_kafka_header_get_last(h, name, &v, &n)) return;
    snprintf(out, size, "%.*s", (int)n, (const char *)v);
}

/* The producer's delivery report callback: records the report, then the worker's own. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    fixture *fx = current;
    if (fx->n_dr == fx->cap_dr) {
        fx->cap_dr = fx->cap_dr ? fx->cap_dr * 2 : 64;
        fx->dr = realloc(fx->dr, (size_t)fx->cap_dr * sizeof *fx->dr);
        assert_non_null(fx->dr);
    }
    fx_delivery *d = &fx->dr[fx->n_dr++];
    memset(d, 0, sizeof *d);
    snprintf(d->topic, sizeof d->topic, "%s", rd_kafka_topic_name(m->rkt));
    d->err = m->err;
    d->len = m->len;
    d->value = malloc(m->len + 1);
    assert_non_null(d->value);
    if (m->len) memcpy(d->value, m->payload, m->len);
    d->value[m->len] = '\0';
    header(m, "dlq.value.truncated", d->truncated, sizeof d->truncated);
    header(m, "dlq.value.bytes", d->bytes, sizeof d->bytes);
    header(m, "dlq.error", d->dlq_error, sizeof d->dlq_error);
    flight_on_delivery(rk, m, opaque);
}

/* Asks for the topics' metadata at once: librdkafka otherwise learns of a topic first
 * produced to only at its next 1 s metadata timer, a second per test. */
static void warm_up(rd_kafka_t *rk, const char *const *topics) {
    for (int i = 0; topics[i]; i++) {
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topics[i], NULL);
        const struct rd_kafka_metadata *md = NULL;
        assert_int_equal(rd_kafka_metadata(rk, 0, rkt, &md, 5000), 0);
        rd_kafka_metadata_destroy(md);
        rd_kafka_topic_destroy(rkt);
    }
}

/* One cluster for all the tests of a program: destroying one takes up to a second with
 * librdkafka 2.0.2 (its threads miss a wake-up, as above). */
static rd_kafka_t *cluster_host;
static rd_kafka_mock_cluster_t *cluster;
static int n_fixtures;

int fx_cluster_up(void **state) {
    (void)state;
    rd_kafka_conf_t *hc = rd_kafka_conf_new();
    conf_set(hc, "log_level", "3");
    cluster_host = client_new(RD_KAFKA_PRODUCER, hc);
    cluster = rd_kafka_mock_cluster_new(cluster_host, 2);
    assert_non_null(cluster);
    mock_settle();
    return 0;
}

int fx_cluster_down(void **state) {
    (void)state;
    mock_settle(); /* the clients' disconnections are served first */
    rd_kafka_mock_cluster_destroy(cluster);
    rd_kafka_destroy(cluster_host);
    cluster = NULL;
    return 0;
}

void fx_mock(fixture *fx, int32_t broker, rd_kafka_resp_err_t err, int rtt_ms, int count) {
    for (int i = 0; i < count; i++)
        MOCK(rd_kafka_mock_broker_push_request_error_rtts(fx->mc, broker, FX_PRODUCE, 1, err, rtt_ms));
}

static void on_fed(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    *(int64_t *)m->_private = m->err ? -1 : m->offset;
}

fixture *fx_new(const fx_opts *o) {
    static const fx_opts defaults = {0};
    if (!o) o = &defaults;
    log_set_level(LOG_ERROR);
    fake_db_reset();
    fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    current = fx;

    /* This test's topics and group: the cluster outlives the test. */
    assert_non_null(cluster);
    fx->mc = cluster;
    fx->n = ++n_fixtures;
    snprintf(fx->in, sizeof fx->in, "in.%d", fx->n);
    snprintf(fx->results, sizeof fx->results, "results.%d", fx->n);
    snprintf(fx->dlq, sizeof fx->dlq, "dlq.%d", fx->n);
    snprintf(fx->group, sizeof fx->group, "group.%d", fx->n);
    MOCK(rd_kafka_mock_topic_create(fx->mc, fx->in, 4, 1));
    MOCK(rd_kafka_mock_topic_create(fx->mc, fx->results, 1, 1));
    MOCK(rd_kafka_mock_topic_create(fx->mc, fx->dlq, 1, 1));
    for (int p = 0; p < 4; p++)
        MOCK(rd_kafka_mock_partition_set_leader(fx->mc, fx->in, p, FX_BROKER_RESULTS));
    MOCK(rd_kafka_mock_partition_set_leader(fx->mc, fx->results, 0, FX_BROKER_RESULTS));
    MOCK(rd_kafka_mock_partition_set_leader(fx->mc, fx->dlq, 0, FX_BROKER_DLQ));

    rd_kafka_conf_t *fc = client_conf(fx);
    conf_set(fc, "linger.ms", "0");
    rd_kafka_conf_set_dr_msg_cb(fc, on_fed);
    fx->feeder = client_new(RD_KAFKA_PRODUCER, fc);
    warm_up(fx->feeder, (const char *const[]){fx->in, NULL});

    int n_lanes = o->n_lanes ? o->n_lanes : 2;
    int max_items = o->txn_max_items ? o->txn_max_items : 1000;
    fx->run = 1;
    fx->cfg = (mw_config){
        .kafka_brokers = (char *)rd_kafka_mock_cluster_bootstraps(fx->mc),
        .group_id = fx->group,
        .input_topic = fx->in,
        .results_topic = fx->results,
        .dlq_topic = fx->dlq,
        .log_level = LOG_ERROR,
        .max_batch_items = 10000,
        .txn_max_items = max_items,
        .txn_backlog_items = o->txn_backlog_items ? o->txn_backlog_items : max_items,
        .txn_max_wait_ms = o->txn_max_wait_ms,
        .shutdown_timeout_ms = 3000,
        .retry_max_ms = 20, /* backoffs of 10-20 ms: retries are quick */
        .db_connections = n_lanes,
        .healthz_stall_ms = 60000,
    };

    /* As ingest_run and setup do. */
    ingest *ing = fx->ing = calloc(1, sizeof *ing);
    assert_non_null(ing);
    ing->cfg = &fx->cfg;
    ing->run = &fx->run;
    ing->plain = -1;
    jsonw_init(&ing->out);
    ing->n_lanes = n_lanes;
    for (int l = 0; l < n_lanes; l++) assert_int_equal(lane_init(&ing->lanes[l], l, &fx->cfg), 0);
    ing->m = metrics_new();
    assert_non_null(ing->m);

    rd_kafka_conf_t *pc = client_conf(fx);
    conf_set(pc, "acks", "all");
    conf_set(pc, "linger.ms", "0");
    conf_set(pc, "message.send.max.retries", "0");
    if (o->message_max_bytes) conf_set(pc, "message.max.bytes", o->message_max_bytes);
    rd_kafka_conf_set_dr_msg_cb(pc, on_delivery);
    rd_kafka_conf_set_opaque(pc, ing);
    ing->producer = client_new(RD_KAFKA_PRODUCER, pc);
    warm_up(ing->producer, (const char *const[]){fx->results, fx->dlq, NULL});

    rd_kafka_conf_t *cc = client_conf(fx);
    conf_set(cc, "group.id", fx->cfg.group_id);
    conf_set(cc, "enable.auto.commit", "false");
    conf_set(cc, "enable.auto.offset.store", "false");
    conf_set(cc, "auto.offset.reset", "earliest");
    conf_set(cc, "fetch.wait.max.ms", "10");
    conf_set(cc, "fetch.error.backoff.ms", "10");
    rd_kafka_conf_set_opaque(cc, ing);
    ing->consumer = client_new(RD_KAFKA_CONSUMER, cc);
    rd_kafka_poll_set_consumer(ing->consumer);
    rd_kafka_topic_partition_list_t *a = rd_kafka_topic_partition_list_new(4);
    for (int p = 0; p < 4; p++)
        rd_kafka_topic_partition_list_add(a, fx->in, p)->offset = 0; /* BEGINNING would wait 500 ms for a ListOffsets */
    assert_int_equal(rd_kafka_assign(ing->consumer, a), 0);
    rd_kafka_topic_partition_list_destroy(a);
    return fx;
}

void fx_free(fixture *fx) {
    ingest *ing = fx->ing;
    /* As teardown does: purged deliveries are reported while their flights exist. */
    rd_kafka_purge(ing->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(ing->producer, 2000);
    flights_free(&ing->flights);
    pending_free(&ing->pending);
    rd_kafka_consumer_close(ing->consumer);
    rd_kafka_destroy(ing->consumer);
    rd_kafka_destroy(ing->producer);
    partitions_free(&ing->partitions);
    for (int l = 0; l < ing->n_lanes; l++) lane_term(&ing->lanes[l]);
    jsonw_free(&ing->out);
    metrics_destroy(ing->m);
    free(ing);
    rd_kafka_destroy(fx->feeder);
    /* No injected error may be left for the next test. */
    for (int b = 1; b <= 2; b++) {
        size_t cnt = 0; /* left as is when the broker never had an error pushed */
        assert_int_equal(rd_kafka_mock_broker_error_stack_cnt(fx->mc, b, FX_PRODUCE, &cnt), 0);
        assert_int_equal(cnt, 0);
    }
    for (int i = 0; i < fx->n_dr; i++) free(fx->dr[i].value);
    free(fx->dr);
    free(fx);
    current = NULL;
    fake_db_reset();
}


int64_t fx_feed(fixture *fx, int32_t part, const char *value, size_t len) {
    int64_t off = -2;
    assert_int_equal(rd_kafka_producev(fx->feeder, RD_KAFKA_V_TOPIC(fx->in), RD_KAFKA_V_PARTITION(part),
                                       RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_OPAQUE(&off),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
    assert_int_equal(rd_kafka_flush(fx->feeder, 5000), 0); /* serves on_fed */
    assert_true(off >= 0);
    return off;
}

int64_t fx_feed_items(fixture *fx, int32_t part, const char *prefix, int n) {
    size_t cap = 64 + (size_t)n * 160, len = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    len += (size_t)snprintf(s + len, cap - len, "{\"items\":[");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len,
                                "%s{\"externalConversationId\":\"conv-%s%d\",\"externalCustomerId\":"
                                "\"cust-%s%d\",\"eventId\":\"%s%d\",\"status\":\"active\"}",
                                i ? "," : "", prefix, i, prefix, i, prefix, i);
    len += (size_t)snprintf(s + len, cap - len, "]}");
    int64_t off = fx_feed(fx, part, s, len);
    free(s);
    return off;
}

void fx_consume(fixture *fx, int n) {
    int got = 0;
    int64_t end = now_ms() + 5000;
    while (got < n && now_ms() < end) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(fx->ing->consumer, 20);
        if (!rkm) continue;
        if (rkm->err) {
            rd_kafka_message_destroy(rkm);
            continue;
        }
        pending_consume(fx->ing, rkm);
        got++;
    }
    assert_int_equal(got, n);
}

void fx_serve_until(fixture *fx, bool (*until)(fixture *fx)) {
    int64_t end = now_ms() + 5000;
    while (!until(fx) && now_ms() < end) rd_kafka_poll(fx->ing->producer, 10);
    assert_true(until(fx));
}

int64_t fx_committed(fixture *fx, int32_t part) {
    rd_kafka_resp_err_t e = rd_kafka_commit(fx->ing->consumer, NULL, 0);
    assert_true(e == RD_KAFKA_RESP_ERR_NO_ERROR || e == RD_KAFKA_RESP_ERR__NO_OFFSET);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, fx->in, part);
    assert_int_equal(rd_kafka_committed(fx->ing->consumer, l, 5000), 0);
    int64_t off = l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    return off < 0 ? -1 : off;
}

static bool result_event_is(const fx_delivery *d, const char *event_id) {
    json_object *o = json_tokener_parse(d->value), *v;
    bool is = o && json_object_object_get_ex(o, "eventId", &v) &&
              strcmp(json_object_get_string(v), event_id) == 0;
    json_object_put(o);
    return is;
}

int fx_results_for(fixture *fx, const char *event_id, const fx_delivery **last) {
    int n = 0;
    for (int i = 0; i < fx->n_dr; i++) {
        const fx_delivery *d = &fx->dr[i];
        if (d->err || strcmp(d->topic, fx->results) != 0 || !result_event_is(d, event_id)) continue;
        n++;
        if (last) *last = d;
    }
    return n;
}

int fx_count(fixture *fx, const char *topic, rd_kafka_resp_err_t err) {
    int n = 0;
    for (int i = 0; i < fx->n_dr; i++) n += fx->dr[i].err == err && strcmp(fx->dr[i].topic, topic) == 0;
    return n;
}

const char *fx_result_error(const fx_delivery *d, char *buf, size_t size) {
    json_object *o = json_tokener_parse(d->value), *v;
    assert_non_null(o);
    assert_true(json_object_object_get_ex(o, "error", &v));
    snprintf(buf, size, "%s", json_object_get_string(v));
    json_object_put(o);
    return buf;
}

void fx_mark_txn(fixture *fx, mw_lane *lane) {
    ingest *ing = fx->ing;
    for (int i = 0; i < ing->pending.n; i++) {
        pending_msg *m = &ing->pending.msgs[i];
        if (lane_of(ing, m->rkm->partition) == lane) m->in_txn = true;
    }
    pending_recount(ing);
}
