/*
 * Unit tests of the lane (worker/lane.c) and the transaction it prepares and applies
 * (worker/txn.c), with the pending queue, partition table and flights they drive: the real
 * modules, with a fake database (tests/unit/fake_db.c) and librdkafka's mock cluster for
 * Kafka (tests/unit/ingest_fixture.c). What must hold: docs/contract.md §6 (nothing lost,
 * nothing applied twice, transient errors retried, data errors isolated to their items,
 * fatal ones stop) and the state machine of lane.h.
 *
 * Partition p belongs to lane p % 2 (two lanes unless a test says otherwise).
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

/* ---- helpers ------------------------------------------------------------------------- */

static const fake_statement *stmt_of(int connection, int nth) {
    for (int i = 0; i < fake_db.n_stmts; i++)
        if (fake_db.stmts[i].connection == connection && nth-- == 0) return &fake_db.stmts[i];
    print_error("no statement %d on connection %d\n", nth, connection);
    fail();
    return NULL;
}

static bool has_event(const char *doc, const char *event_id) {
    char needle[64];
    snprintf(needle, sizeof needle, "\"%s\"", event_id);
    return strstr(doc, needle) != NULL;
}

/* The offsets a statement carries for a partition: expected, next (fails when absent). */
static void expect_offsets(const fake_statement *s, int32_t part, int64_t expected, int64_t next) {
    for (int i = 0; i < s->n; i++) {
        if (s->part[i] != part) continue;
        assert_int_equal(s->expected[i], expected);
        assert_int_equal(s->next[i], next);
        return;
    }
    print_error("partition %d not in the statement\n", (int)part);
    fail();
}

static partition_state *part_state(fixture *fx, int32_t part) {
    partition_state *ps = partitions_find(&fx->ing->partitions, part);
    assert_non_null(ps);
    return ps;
}

/* Every result of eventId delivered exactly once, with error `error`. */
static void expect_result_once(fixture *fx, const char *event_id, const char *error) {
    const fx_delivery *d = NULL;
    char buf[256];
    if (fx_results_for(fx, event_id, &d) != 1) {
        print_error("%s: %d results\n", event_id, fx_results_for(fx, event_id, NULL));
        fail();
    }
    assert_string_equal(fx_result_error(d, buf, sizeof buf), error);
}

static int in_txn_count(fixture *fx) {
    int n = 0;
    for (int i = 0; i < fx->ing->pending.n; i++) n += fx->ing->pending.msgs[i].in_txn;
    return n;
}

/* ---- applied ------------------------------------------------------------------------- */

/* A transaction applied OK: its statement carries its items and its partitions' offsets
 * (expected: what PostgreSQL recorded, next: after the last message); the answer moves the
 * cached offsets and makes the messages a flight; once the results are acknowledged the
 * offsets are stored. The partition's next transaction expects the moved offset without
 * reading it again. */
static void applied_ok_moves_offsets_and_becomes_flight(void **state) {
    (void)state;
    fixture *fx = fx_new(NULL);
    ingest *ing = fx->ing;
    fake_db.pg_next[0] = -1;
    fx_feed_items(fx, 0, "a", 2);
    fx_feed_items(fx, 0, "b", 1);
    fx_feed_items(fx, 2, "c", 1);
    fx_feed_items(fx, 1, "d", 1);
    fx_consume(fx, 4);

    lanes_start_due(ing);
    assert_int_equal(ing->lanes[0].state, LANE_APPLYING);
    assert_int_equal(ing->lanes[1].state, LANE_APPLYING);
    assert_int_equal(in_txn_count(fx), 4);
    assert_int_equal(ing->lanes[0].waiting_items, 0);
    const fake_statement *s0 = stmt_of(0, 0);
    assert_int_equal(s0->kind, FAKE_SEND);
    assert_int_equal(s0->n, 2);
    assert_int_equal(s0->part[0], 0); /* partitions ascending: the lock order */
    assert_int_equal(s0->part[1], 2);
    expect_offsets(s0, 0, -1, 2);
    expect_offsets(s0, 2, -1, 1);
    assert_true(has_event(s0->doc, "a0") && has_event(s0->doc, "a1") && has_event(s0->doc, "b0") &&
                has_event(s0->doc, "c0"));
    assert_false(has_event(s0->doc, "d0"));

    lane_poll(ing, &ing->lanes[0], false);
    assert_int_equal(ing->lanes[0].state, LANE_IDLE);
    assert_int_equal(ing->flights.n, 1);
    assert_int_equal(ing->flights.head->n, 3);
    assert_int_equal(part_state(fx, 0)->pg_next, 2);
    assert_int_equal(part_state(fx, 2)->pg_next, 1);
    assert_int_equal(ing->pending.n, 1); /* d0, lane 1's, still applying */

    lane_poll(ing, &ing->lanes[1], false);
    assert_int_equal(ing->flights.n, 2);
    assert_true(flights_drain(ing, true));
    expect_result_once(fx, "a0", "");
    expect_result_once(fx, "a1", "");
    expect_result_once(fx, "b0", "");
    expect_result_once(fx, "c0", "");
    expect_result_once(fx, "d0", "");
    assert_int_equal(fx_committed(fx, 0), 2);
    assert_int_equal(fx_committed(fx, 2), 1);
    assert_int_equal(fx_committed(fx, 1), 1);
    assert_int_equal(atomic_load(&ing->m->db_transactions), 2);

    int reads = fake_db.n_offsets_read;
    fx_feed_items(fx, 0, "e", 1);
    fx_consume(fx, 1);
    lanes_start_due(ing);
    const fake_statement *s1 = stmt_of(0, 1);
    assert_int_equal(s1->n, 1);
    expect_offsets(s1, 0, 2, 3);
    assert_int_equal(s1->acked[0], 2); /* every result below 2 acknowledged */
    assert_int_equal(fake_db.n_offsets_read, reads);
    assert_int_equal(fake_db.misuse, 0);
    fx_free(fx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(applied_ok_moves_offsets_and_becomes_flight),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
