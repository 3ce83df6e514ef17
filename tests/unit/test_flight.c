/*
 * Unit tests of flights (worker/flight.c): results and dead letters in flight to Kafka,
 * delivery reports, and when an input offset is stored. The real modules, with librdkafka's
 * mock cluster as Kafka and errors injected on its brokers (tests/unit/ingest_fixture.c);
 * the database is not involved (flights start after the commit). What must hold:
 * docs/contract.md §5 (what a refusal from Kafka means) and §6 (an offset is committed only
 * after every result and dead letter of its message is acknowledged).
 *
 * Partition p belongs to lane p % 2; the results topic is led by broker 1, the dead-letter
 * topic by broker 2.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_db.h"
#include "ingest_fixture.h"

#define BIG_BYTES 100000 /* a bad message larger than DLQ_PREFIX_BYTES */

/* ---- helpers ------------------------------------------------------------------------- */

/* The lane's pending messages as one committed transaction, its flight produced (what
 * lane_deliver does once PostgreSQL answered). */
static flight *fly(fixture *fx, int lane) {
    fx_mark_txn(fx, &fx->ing->lanes[lane]);
    flight *f = flight_take(fx->ing, &fx->ing->lanes[lane]);
    assert_non_null(f);
    flight_produce(fx->ing, f);
    return f;
}

static flight *head(fixture *fx) { return fx->ing->flights.head; }

static bool head_reported(fixture *fx) { return head(fx) && head(fx)->inflight == 0; }

/* The head flight (A) waits for its dead letter only; the next (B) is acknowledged. */
static bool only_dead_letter_left(fixture *fx) {
    flight *a = head(fx);
    return a && a->next && a->inflight == 1 && a->next->inflight == 0 &&
           fx_count(fx, fx->results, RD_KAFKA_RESP_ERR_NO_ERROR) == 4;
}

/* The n-th delivery report of a topic. */
static const fx_delivery *report(fixture *fx, const char *topic, int nth) {
    for (int i = 0; i < fx->n_dr; i++)
        if (strcmp(fx->dr[i].topic, topic) == 0 && nth-- == 0) return &fx->dr[i];
    print_error("no delivery report %d of %s\n", nth, topic);
    fail();
    return NULL;
}

static int report_index(fixture *fx, const fx_delivery *d) { return (int)(d - fx->dr); }

/* Every successful result delivery for eventId has the same value (repeats are identical). */
static void expect_identical_repeats(fixture *fx, const char *event_id, int min) {
    const fx_delivery *last = NULL;
    int n = fx_results_for(fx, event_id, &last);
    assert_true(n >= min);
    for (int i = 0; i < fx->n_dr; i++) {
        const fx_delivery *d = &fx->dr[i];
        if (d->err || strcmp(d->topic, fx->results) != 0 || !strstr(d->value, event_id)) continue;
        assert_string_equal(d->value, last->value);
    }
}

static char *big_bad_message(void) {
    char *s = malloc(BIG_BYTES);
    assert_non_null(s);
    memset(s, 'x', BIG_BYTES); /* not JSON: a bad request */
    return s;
}

/* ---- order and offsets --------------------------------------------------------------- */

/* Flight A (partition 0: a bad message and a batch) is taken before flight B (partition 1).
 * B's results are acknowledged while A's dead letter is still in flight (broker 2 answers
 * after 800 ms): nothing is stored, neither A's offsets (a delivery missing) nor B's (an
 * earlier flight is not complete). Once A's dead letter is acknowledged both complete, in
 * order, and both partitions' offsets are stored (and their acknowledged offsets moved). */
static void offsets_stored_after_every_earlier_delivery(void **state) {
    (void)state;
    fixture *fx = fx_new(NULL);
    ingest *ing = fx->ing;
    partition_state *p0 = partitions_add(&ing->partitions, 0), *p1 = NULL;
    assert_non_null(p0);
    fx_feed(fx, 0, "not json", 8);
    fx_feed_items(fx, 0, "a", 2);
    fx_feed_items(fx, 1, "b", 1);
    fx_consume(fx, 3);
    p1 = partitions_add(&ing->partitions, 1);
    p0 = partitions_find(&ing->partitions, 0);
    fx_mock(fx, FX_BROKER_DLQ, RD_KAFKA_RESP_ERR_NO_ERROR, 800, 1);
    flight *a = fly(fx, 0), *b = fly(fx, 1);
    assert_ptr_equal(head(fx), a);
    assert_ptr_equal(a->next, b);
    assert_int_equal(a->inflight, 4); /* dead letter + its result + 2 results */
    assert_int_equal(b->inflight, 1);

    fx_serve_until(fx, only_dead_letter_left);
    assert_false(flights_drain(ing, false));
    assert_int_equal(ing->flights.n, 2);
    assert_int_equal(fx_committed(fx, 0), -1);
    assert_int_equal(fx_committed(fx, 1), -1);
    assert_int_equal(p0->acked, -1);
    assert_int_equal(p1->acked, -1);
    assert_int_equal(atomic_load(&ing->m->items[OUT_OK]), 0); /* outcomes not counted yet */

    assert_true(flights_drain(ing, true));
    assert_int_equal(ing->flights.n, 0);
    const fx_delivery *dead = report(fx, fx->dlq, 0);
    assert_int_equal(dead->err, RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_true(report_index(fx, dead) > report_index(fx, report(fx, fx->results, 3)));
    assert_int_equal(fx_committed(fx, 0), 2);
    assert_int_equal(fx_committed(fx, 1), 1);
    assert_int_equal(p0->acked, 2);
    assert_int_equal(p1->acked, 1);
    assert_int_equal(atomic_load(&ing->m->items[OUT_OK]), 3);
    assert_int_equal(atomic_load(&ing->m->dead_letters), 1);
    assert_int_equal(atomic_load(&ing->m->results_produced), 4);
    fx_free(fx);
}

/* ---- produce failures ---------------------------------------------------------------- */

/* Kafka unreachable (too few in-sync replicas): the delivery fails, no offset is stored
 * while the flight waits for its backoff, then the whole flight is produced again (identical
 * repeats) and its offsets are stored once every result is acknowledged. */
static void unreachable_kafka_produces_flight_again(void **state) {
    (void)state;
    fixture *fx = fx_new(NULL);
    ingest *ing = fx->ing;
    fx_feed_items(fx, 0, "a", 2);
    fx_consume(fx, 1);
    fx_mock(fx, FX_BROKER_RESULTS, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, 0, 1);
    flight *f = fly(fx, 0);
    fx_serve_until(fx, head_reported);
    assert_true(f->failed >= 1);
    assert_int_equal(f->attempts, 1);
    assert_true(fx_count(fx, fx->results, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS) >= 1);

    assert_false(flights_drain(ing, false)); /* the backoff starts: not produced yet */
    assert_int_equal(ing->flights.n, 1);
    assert_true(f->retry_at_ms > 0);
    assert_int_equal(fx_committed(fx, 0), -1);
    assert_false(ing->fatal);

    assert_true(flights_drain(ing, true));
    assert_false(ing->fatal);
    expect_identical_repeats(fx, "a0", 1);
    expect_identical_repeats(fx, "a1", 1);
    assert_true(fx_count(fx, fx->results, RD_KAFKA_RESP_ERR_NO_ERROR) >= 2);
    assert_int_equal(fx_committed(fx, 0), 1);
    fx_free(fx);
}

/* Kafka refusing a dead letter as too large (the broker's answer): the flight goes again
 * with the value cut to its first 64 KiB, then, refused again, empty; the last two carry
 * dlq.value.truncated and dlq.value.bytes. The message's result and offset follow. */
static void oversized_dead_letter_cut_to_prefix_then_empty(void **state) {
    (void)state;
    fixture *fx = fx_new(NULL);
    ingest *ing = fx->ing;
    char *big = big_bad_message();
    fx_feed(fx, 0, big, BIG_BYTES);
    free(big);
    fx_consume(fx, 1);
    fx_mock(fx, FX_BROKER_DLQ, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, 0, 2);
    fly(fx, 0);
    assert_true(flights_drain(ing, true));
    assert_false(ing->fatal);

    assert_int_equal(fx_count(fx, fx->dlq, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE), 2);
    assert_int_equal(fx_count(fx, fx->dlq, RD_KAFKA_RESP_ERR_NO_ERROR), 1);
    const fx_delivery *whole = report(fx, fx->dlq, 0), *prefix = report(fx, fx->dlq, 1),
                      *empty = report(fx, fx->dlq, 2);
    assert_int_equal(whole->len, BIG_BYTES);
    assert_string_equal(whole->truncated, "");
    assert_int_equal(prefix->len, DLQ_PREFIX_BYTES);
    assert_string_equal(prefix->truncated, "prefix");
    assert_string_equal(prefix->bytes, "100000");
    assert_int_equal(empty->err, RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(empty->len, 0);
    assert_string_equal(empty->truncated, "empty");
    assert_string_equal(empty->bytes, "100000");
    if (strncmp(empty->dlq_error, "FAIL_BAD_REQUEST: ERROR: message is not valid JSON", 50) != 0) {
        print_error("dlq.error: %s\n", empty->dlq_error);
        fail();
    }
    assert_true(fx_count(fx, fx->results, RD_KAFKA_RESP_ERR_NO_ERROR) >= 1);
    assert_int_equal(fx_committed(fx, 0), 1);
    fx_free(fx);
}

/* The producer refusing a dead letter itself (message.max.bytes): cut at once, no failed
 * delivery, no repeat of the flight. */
static void dead_letter_cut_by_producer(const char *max_bytes, size_t want_len, const char *want_cut) {
    fixture *fx = fx_new(&(fx_opts){.message_max_bytes = max_bytes});
    ingest *ing = fx->ing;
    char *big = big_bad_message();
    fx_feed(fx, 0, big, BIG_BYTES);
    free(big);
    fx_consume(fx, 1);
    fly(fx, 0);
    assert_true(flights_drain(ing, true));
    assert_false(ing->fatal);
    assert_int_equal(fx_count(fx, fx->dlq, RD_KAFKA_RESP_ERR_NO_ERROR), 1);
    assert_int_equal(fx_count(fx, fx->results, RD_KAFKA_RESP_ERR_NO_ERROR), 1);
    const fx_delivery *d = report(fx, fx->dlq, 0);
    assert_int_equal(d->len, want_len);
    assert_string_equal(d->truncated, want_cut);
    assert_string_equal(d->bytes, "100000");
    assert_int_equal(fx_committed(fx, 0), 1);
    fx_free(fx);
}

static void dead_letter_cut_to_prefix_by_producer(void **state) {
    (void)state;
    dead_letter_cut_by_producer("70000", DLQ_PREFIX_BYTES, "prefix");
}

static void dead_letter_cut_to_empty_by_producer(void **state) {
    (void)state;
    dead_letter_cut_by_producer("1000", 0, "empty");
}

/* A permanent refusal (no right to write the results topic) is a configuration error: the
 * worker stops (fatal), the flight is not produced again and no offset is stored. */
static void permanent_refusal_stops_without_storing(void **state) {
    (void)state;
    fixture *fx = fx_new(NULL);
    ingest *ing = fx->ing;
    fx_feed_items(fx, 0, "a", 1);
    fx_consume(fx, 1);
    fx_mock(fx, FX_BROKER_RESULTS, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, 0, 1);
    fly(fx, 0);
    fx_serve_until(fx, head_reported);
    assert_true(ing->fatal); /* at the delivery report, before any attempt to produce again */
    assert_false(flights_drain(ing, true));
    assert_true(ing->fatal);
    assert_int_equal(ing->flights.n, 1);
    assert_int_equal(fx_count(fx, fx->results, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED), 1);
    assert_int_equal(fx_count(fx, fx->results, RD_KAFKA_RESP_ERR_NO_ERROR), 0);
    assert_int_equal(atomic_load(&ing->m->results_failed), 1);
    assert_false(flights_drain(ing, false)); /* still not completed, not produced again */
    assert_int_equal(fx->n_dr, 1);
    assert_int_equal(fx_committed(fx, 0), -1);
    fx_free(fx);
}

/* A result larger than the producer accepts is a configuration error too (not cut). */
static void result_too_large_stops_without_storing(void **state) {
    (void)state;
    fixture *fx = fx_new(&(fx_opts){.message_max_bytes = "1000"});
    ingest *ing = fx->ing;
    char msg[1200];
    int n = snprintf(msg, sizeof msg,
                     "{\"items\":[{\"externalConversationId\":\"%0256d\",\"externalCustomerId\":"
                     "\"%0256d\",\"eventId\":\"%0256d\"}]}",
                     1, 2, 3);
    fx_feed(fx, 0, msg, (size_t)n);
    fx_consume(fx, 1);
    fly(fx, 0);
    assert_true(ing->fatal);
    assert_false(flights_drain(ing, true));
    assert_int_equal(fx->n_dr, 0);
    assert_int_equal(fx_committed(fx, 0), -1);
    fx_free(fx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(offsets_stored_after_every_earlier_delivery),
        cmocka_unit_test(unreachable_kafka_produces_flight_again),
        cmocka_unit_test(oversized_dead_letter_cut_to_prefix_then_empty),
        cmocka_unit_test(dead_letter_cut_to_prefix_by_producer),
        cmocka_unit_test(dead_letter_cut_to_empty_by_producer),
        cmocka_unit_test(permanent_refusal_stops_without_storing),
        cmocka_unit_test(result_too_large_stops_without_storing),
    };
    return cmocka_run_group_tests(tests, fx_cluster_up, fx_cluster_down);
}
