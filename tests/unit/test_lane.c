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

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../common/log.h"
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
    assert_int_equal(in_txn_count(fx), 1); /* lane 0's messages left for a flight */
    assert_int_equal(part_state(fx, 0)->pg_next, 2);
    assert_int_equal(part_state(fx, 2)->pg_next, 1);
    assert_int_equal(ing->pending.n, 1); /* d0, lane 1's, still applying */

    lane_poll(ing, &ing->lanes[1], false);
    assert_int_equal(ing->pending.n, 0);
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

/* While a statement runs, the lane gathers the next transaction; PostgreSQL's answer makes
 * the first a flight and sends the next at once (pipeline), expecting the offsets the first
 * recorded. The flight holds the first transaction's messages only. */
static void answer_sends_next_transaction_at_once(void **state) {
    (void)state;
    fixture *fx = fx_new(&(fx_opts){.n_lanes = 1});
    ingest *ing = fx->ing;
    mw_lane *lane = &ing->lanes[0];
    fake_db.pg_next[0] = 5; /* recorded by an earlier run: offsets 0-4 are replays */
    for (int i = 0; i < 5; i++) fx_feed_items(fx, 0, "old", 1);
    fx_feed_items(fx, 0, "a", 1);
    fx_consume(fx, 6);
    lanes_start_due(ing);
    assert_int_equal(lane->state, LANE_APPLYING);
    expect_offsets(stmt_of(0, 0), 0, 5, 6);

    fx_feed_items(fx, 0, "b", 2);
    fx_consume(fx, 1);
    assert_int_equal(lane->waiting_items, 2);
    lane_poll(ing, lane, false);
    assert_int_equal(lane->state, LANE_APPLYING); /* the next transaction, sent */
    assert_int_equal(ing->pending.n, 1); /* b, the next transaction's */
    assert_true(ing->pending.msgs[0].in_txn);
    const fake_statement *next = stmt_of(0, 1);
    assert_int_equal(next->kind, FAKE_SEND);
    expect_offsets(next, 0, 6, 7);
    assert_true(has_event(next->doc, "b0") && has_event(next->doc, "b1"));
    assert_false(has_event(next->doc, "a0"));
    assert_int_equal(fake_db.n_offsets_read, 1); /* read once, then moved by the answers */

    lane_poll(ing, lane, false);
    assert_int_equal(lane->state, LANE_IDLE);
    assert_true(flights_drain(ing, true));
    expect_result_once(fx, "a0", "");
    expect_result_once(fx, "b0", "");
    expect_result_once(fx, "b1", "");
    assert_int_equal(fx_results_for(fx, "old0", NULL), 5); /* replays: results only */
    assert_int_equal(fx_committed(fx, 0), 7);
    assert_int_equal(fake_db.misuse, 0);
    fx_free(fx);
}

/* A replayed message (below the offset PostgreSQL recorded) is not applied again: its
 * results are rebuilt with the rejects PostgreSQL recorded for it. */
static void replay_reports_recorded_rejects_without_applying(void **state) {
    (void)state;
    fixture *fx = fx_new(&(fx_opts){.n_lanes = 1});
    ingest *ing = fx->ing;
    fake_db.pg_next[0] = 1;
    fake_db.replay_rejects[fake_db.n_replay_rejects++] =
        (fake_reject){0, 0, 1, "FAIL_DB: ERROR: value rejected by a rule of the table"};
    fx_feed_items(fx, 0, "r", 2);
    fx_feed_items(fx, 0, "n", 1);
    fx_consume(fx, 2);
    lanes_start_due(ing);
    const fake_statement *s = stmt_of(0, 0);
    assert_false(has_event(s->doc, "r0") || has_event(s->doc, "r1"));
    assert_true(has_event(s->doc, "n0"));
    expect_offsets(s, 0, 1, 2);
    lane_poll(ing, &ing->lanes[0], false);
    assert_int_equal(fake_db.read_rejects_calls, 1);
    assert_true(flights_drain(ing, true));
    expect_result_once(fx, "r0", "");
    expect_result_once(fx, "r1", "FAIL_DB: ERROR: value rejected by a rule of the table");
    expect_result_once(fx, "n0", "");
    assert_int_equal(atomic_load(&ing->m->replayed_messages), 1);
    assert_int_equal(fx_committed(fx, 0), 2);
    fx_free(fx);
}

/* ---- PostgreSQL failing -------------------------------------------------------------- */

/* A transient error is retried (after a backoff, synchronously) with the same items and the
 * offsets read again; the transaction's messages become one flight, each result once. */
typedef struct {
    const char *error;
    enum mw_retry_reason reason;
} transient_case;

static const transient_case deadlock = {"40P01: deadlock detected", RR_DEADLOCK};
static const transient_case admin_shutdown = {
    "57P01: terminating connection due to administrator command", RR_OTHER};
static const transient_case connection_lost = {"server closed the connection unexpectedly",
                                               RR_CONNECTION};

static void transient_is_retried(void **state) {
    const char *error = ((const transient_case *)*state)->error;
    enum mw_retry_reason reason = ((const transient_case *)*state)->reason;
    fixture *fx = fx_new(NULL);
    ingest *ing = fx->ing;
    mw_lane *lane = &ing->lanes[0];
    fx_feed_items(fx, 0, "a", 2);
    fx_feed_items(fx, 2, "c", 1);
    fx_consume(fx, 2);
    lanes_start_due(ing);
    assert_int_equal(lane->state, LANE_APPLYING);
    int reads = fake_db.n_offsets_read;
    fake_db.pg_next[0] = -1;
    fake_db_then(DB_TRANSIENT, error);
    lane_poll(ing, lane, false);

    assert_int_equal(lane->state, LANE_IDLE);
    assert_int_equal(fake_db.n_stmts, 2);
    const fake_statement *first = stmt_of(0, 0), *retry = stmt_of(0, 1);
    assert_int_equal(retry->kind, FAKE_APPLY);
    assert_string_equal(retry->doc, first->doc);
    assert_int_equal(retry->n, first->n);
    expect_offsets(retry, 0, -1, 1);
    expect_offsets(retry, 2, -1, 1);
    assert_int_equal(fake_db.n_offsets_read, 2 * reads); /* forgotten, read again */
    for (int r = 0; r < RR_COUNT; r++)
        assert_int_equal(atomic_load(&ing->m->db_retries[r]), r == (int)reason);
    assert_int_equal(atomic_load(&ing->m->db_errors[DB_TRANSIENT]), 1);
    assert_int_equal(atomic_load(&ing->m->db_transactions), 1);
    assert_false(ing->fatal);

    assert_int_equal(ing->pending.n, 0); /* in a flight, not lost, not pending twice */
    assert_true(flights_drain(ing, true));
    expect_result_once(fx, "a0", "");
    expect_result_once(fx, "a1", "");
    expect_result_once(fx, "c0", "");
    assert_int_equal(fx_committed(fx, 0), 1);
    assert_int_equal(fx_committed(fx, 2), 1);
    assert_int_equal(fake_db.misuse, 0);
    fx_free(fx);
}

/* MW001 (merged rows sent to a table that stopped being plain) switches to generations and
 * retries at once: no backoff, no retry counted as a deadlock or duplicate. */
static void mw001_switches_to_generations_at_once(void **state) {
    (void)state;
    fixture *fx = fx_new(NULL);
    ingest *ing = fx->ing;
    mw_lane *lane = &ing->lanes[0];
    fake_db.plain = 1;
    fx_feed_items(fx, 0, "a", 2);
    fx_consume(fx, 1);
    lanes_start_due(ing);
    assert_true(lane->merged);
    assert_int_equal(ing->plain, 1);
    assert_int_equal(fake_db.plain_calls, 1);
    fake_db_then(DB_TRANSIENT, "MW001: customer_metadata is not plain any more");
    fx->cfg.retry_max_ms = 2000; /* a backoff would wait 50-100 ms */
    int64_t t0 = now_ms();
    lane_poll(ing, lane, false);
    int64_t took = now_ms() - t0;

    assert_int_equal(lane->state, LANE_IDLE);
    assert_int_equal(ing->plain, 0);
    assert_false(lane->merged);
    const fake_statement *merged = stmt_of(0, 0), *gens = stmt_of(0, 1);
    assert_int_equal(gens->kind, FAKE_APPLY);
    assert_true(strncmp(merged->doc, "[{", 2) == 0); /* one record per key */
    assert_true(strncmp(gens->doc, "[[", 2) == 0);   /* generations */
    assert_true(has_event(gens->doc, "a0") && has_event(gens->doc, "a1"));
    assert_int_equal(fake_db.plain_calls, 1); /* not asked again: the error said so */
    for (int r = 0; r < RR_COUNT; r++) assert_int_equal(atomic_load(&ing->m->db_retries[r]), 0);
    assert_int_equal(atomic_load(&ing->m->db_errors[DB_TRANSIENT]), 1);
    assert_true(took < 50);
    assert_int_equal(ing->pending.n, 0);
    assert_true(flights_drain(ing, true));
    expect_result_once(fx, "a0", "");
    expect_result_once(fx, "a1", "");
    fx_free(fx);
}

/* A data error: the transaction goes item by item (the isolated document, same offsets);
 * the refused item gets its error in its result, the others apply; the offsets move. */
static void data_error_isolates_refused_items(void **state) {
    (void)state;
    fixture *fx = fx_new(NULL);
    ingest *ing = fx->ing;
    mw_lane *lane = &ing->lanes[0];
    int64_t a = fx_feed_items(fx, 0, "a", 2);
    fx_feed_items(fx, 0, "b", 1);
    fx_consume(fx, 2);
    lanes_start_due(ing);
    fake_db_then(DB_DATA, "23514: new row violates check constraint \"phone_format\"");
    fake_db.rejects[fake_db.n_rejects++] =
        (fake_reject){0, a, 1, "FAIL_DB: ERROR: new row violates check constraint \"phone_format\""};
    lane_poll(ing, lane, false);

    assert_int_equal(lane->state, LANE_IDLE);
    const fake_statement *isolated = stmt_of(0, 1);
    assert_int_equal(isolated->kind, FAKE_ISOLATED);
    assert_true(has_event(isolated->doc, "a0") && has_event(isolated->doc, "a1") &&
                has_event(isolated->doc, "b0"));
    expect_offsets(isolated, 0, -1, 2);
    assert_int_equal(atomic_load(&ing->m->db_errors[DB_DATA]), 1);
    assert_int_equal(part_state(fx, 0)->pg_next, 2);
    assert_true(flights_drain(ing, true));
    expect_result_once(fx, "a0", "");
    expect_result_once(fx, "a1", "FAIL_DB: ERROR: new row violates check constraint \"phone_format\"");
    expect_result_once(fx, "b0", "");
    assert_int_equal(atomic_load(&ing->m->items[OUT_DB_REJECTED]), 1);
    assert_int_equal(atomic_load(&ing->m->items[OUT_OK]), 2);
    assert_int_equal(fx_committed(fx, 0), 2);
    fx_free(fx);
}

/* A fatal error stops the worker: nothing becomes a flight, no offset is stored, the lane's
 * messages are dropped (consumed again after the restart); the other lane's stay. */
static void fatal_error_stops_without_storing(void **state) {
    (void)state;
    fixture *fx = fx_new(NULL);
    ingest *ing = fx->ing;
    mw_lane *lane = &ing->lanes[0];
    fx_feed_items(fx, 0, "a", 1);
    fx_feed_items(fx, 1, "d", 1);
    fx_consume(fx, 2);
    lanes_start_due(ing);
    assert_int_equal(ing->lanes[1].state, LANE_APPLYING);
    fake_db_then(DB_FATAL, "42501: permission denied for table customer_metadata");
    lane_poll(ing, lane, false);

    assert_true(ing->fatal);
    assert_int_equal(lane->state, LANE_IDLE);
    assert_int_equal(ing->flights.n, 0);
    assert_int_equal(ing->pending.n, 1);
    assert_int_equal(ing->pending.msgs[0].rkm->partition, 1);
    assert_int_equal(atomic_load(&ing->m->db_errors[DB_FATAL]), 1);
    assert_int_equal(fake_db.n_stmts, 2); /* not retried */
    assert_int_equal(fx_results_for(fx, "a0", NULL), 0);
    assert_int_equal(fx_committed(fx, 0), -1);
    fx_free(fx);
}

/* ---- revocation ---------------------------------------------------------------------- */

static void revoke_partition(fixture *fx, int32_t part) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, fx->in, part);
    pending_drop_partitions(fx->ing, l);
    rd_kafka_topic_partition_list_destroy(l);
}

/* Partition 0 revoked while the lane's statement (partitions 0 and 2) runs: the lane is
 * APPLYING_REVOKED; once answered, only partition 2's messages become a flight: partition
 * 0's get no result and no stored offset from this worker (their next owner replays them). */
static void revoked_while_applying_reports_only_kept(void **state) {
    (void)state;
    fixture *fx = fx_new(NULL);
    ingest *ing = fx->ing;
    mw_lane *lane = &ing->lanes[0];
    fx_feed_items(fx, 0, "a", 2);
    fx_feed_items(fx, 2, "c", 1);
    fx_consume(fx, 2);
    lanes_start_due(ing);
    fake_db.hold = true;
    lane_poll(ing, lane, false);
    assert_int_equal(lane->state, LANE_APPLYING); /* not answered yet */

    revoke_partition(fx, 0);
    assert_int_equal(lane->state, LANE_APPLYING_REVOKED);
    assert_int_equal(ing->pending.n, 1);
    fake_db.hold = false;
    lane_poll(ing, lane, false);
    assert_int_equal(lane->state, LANE_IDLE);
    assert_int_equal(ing->pending.n, 0);
    assert_true(flights_drain(ing, true));
    assert_int_equal(fx_results_for(fx, "a0", NULL), 0);
    assert_int_equal(fx_results_for(fx, "a1", NULL), 0);
    expect_result_once(fx, "c0", "");
    assert_int_equal(fx_committed(fx, 2), 1);
    assert_int_equal(fx_committed(fx, 0), -1);
    fx_free(fx);
}

/* The same with a data error: the plan points at the revoked (freed) messages, so the lane
 * plans again (a retry) instead of isolating, and the retry carries partition 2 only. */
static void revoked_then_data_error_plans_again(void **state) {
    (void)state;
    fixture *fx = fx_new(NULL);
    ingest *ing = fx->ing;
    mw_lane *lane = &ing->lanes[0];
    fx_feed_items(fx, 0, "a", 2);
    fx_feed_items(fx, 2, "c", 1);
    fx_consume(fx, 2);
    lanes_start_due(ing);
    fake_db.hold = true;
    lane_poll(ing, lane, false);
    revoke_partition(fx, 0);
    fake_db.hold = false;
    fake_db_then(DB_DATA, "23514: new row violates check constraint \"phone_format\"");
    lane_poll(ing, lane, false);

    assert_int_equal(lane->state, LANE_IDLE);
    assert_int_equal(fake_db_count(FAKE_ISOLATED), 0);
    const fake_statement *retry = stmt_of(0, 1);
    assert_int_equal(retry->kind, FAKE_APPLY);
    assert_int_equal(retry->n, 1);
    expect_offsets(retry, 2, -1, 1);
    assert_true(has_event(retry->doc, "c0"));
    assert_false(has_event(retry->doc, "a0") || has_event(retry->doc, "a1"));
    assert_int_equal(atomic_load(&ing->m->db_errors[DB_DATA]), 0);
    assert_true(flights_drain(ing, true));
    expect_result_once(fx, "c0", "");
    assert_int_equal(fx_results_for(fx, "a0", NULL), 0);
    fx_free(fx);
}

/* ---- the state machine --------------------------------------------------------------- */

static const char *const state_names[] = {"IDLE", "PREPARING", "APPLYING", "APPLYING_REVOKED"};

/* Runs lane_set_state(from → to) in a child process; true when it aborted, with the
 * log line saying why. */
static bool transition_aborts(enum lane_state from, enum lane_state to) {
    int out[2];
    assert_int_equal(pipe(out), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGABRT, SIG_DFL); /* not cmocka's handler: the child must really abort */
        dup2(out[1], STDERR_FILENO);
        close(out[0]);
        mw_lane lane = {.id = 3, .state = from};
        lane_set_state(&lane, to);
        _exit(lane.state == to ? 0 : 2);
    }
    close(out[1]);
    char log[1024] = "";
    size_t n = 0;
    ssize_t r;
    while (n < sizeof log - 1 && (r = read(out[0], log + n, sizeof log - 1 - n)) > 0) n += (size_t)r;
    log[n] = '\0';
    close(out[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return false;
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT) {
        print_error("%s -> %s: neither done nor aborted (status %d)\n", state_names[from],
                    state_names[to], status);
        fail();
    }
    assert_non_null(strstr(log, "impossible lane state change"));
    assert_non_null(strstr(log, "\"connection\":3"));
    return true;
}

/* Every change of lane.h's diagram is made; every other one aborts the worker (a bug) with
 * a log line, in a child process here. */
static void only_the_diagrams_transitions_are_allowed(void **state) {
    (void)state;
    log_set_level(LOG_ERROR);
    static const bool legal[4][4] = {
        [LANE_IDLE] = {[LANE_PREPARING] = true},
        [LANE_PREPARING] = {[LANE_APPLYING] = true, [LANE_IDLE] = true},
        [LANE_APPLYING] = {[LANE_APPLYING_REVOKED] = true, [LANE_PREPARING] = true},
        [LANE_APPLYING_REVOKED] = {[LANE_PREPARING] = true},
    };
    for (int from = 0; from < 4; from++) {
        for (int to = 0; to < 4; to++) {
            bool aborted = transition_aborts((enum lane_state)from, (enum lane_state)to);
            if (aborted == legal[from][to]) {
                print_error("%s -> %s: %s\n", state_names[from], state_names[to],
                            aborted ? "refused" : "allowed");
                fail();
            }
        }
    }
}

/* lane_revoked only marks a lane whose statement runs; a preparing lane plans again anyway. */
static void revoked_marks_only_an_applying_lane(void **state) {
    (void)state;
    mw_lane lane = {.state = LANE_APPLYING};
    lane_revoked(&lane);
    assert_int_equal(lane.state, LANE_APPLYING_REVOKED);
    assert_true(lane_applying(&lane));
    lane_revoked(&lane);
    assert_int_equal(lane.state, LANE_APPLYING_REVOKED);
    lane = (mw_lane){.state = LANE_PREPARING};
    lane_revoked(&lane);
    assert_int_equal(lane.state, LANE_PREPARING);
    assert_false(lane_applying(&lane));
    lane = (mw_lane){.state = LANE_IDLE};
    lane_revoked(&lane);
    assert_int_equal(lane.state, LANE_IDLE);
}

/* ---- transaction size ---------------------------------------------------------------- */

/* A lane waits for TXN_MAX_ITEMS items (or TXN_MAX_WAIT_MS); a full transaction makes the
 * lane "behind": while its statement runs it may gather up to TXN_BACKLOG_ITEMS; a
 * transaction that is not full brings the cap back to TXN_MAX_ITEMS. */
static void backlog_cap_grows_when_behind_only(void **state) {
    (void)state;
    fixture *fx = fx_new(&(fx_opts){.n_lanes = 1, .txn_max_items = 3, .txn_backlog_items = 8,
                                    .txn_max_wait_ms = 60000});
    ingest *ing = fx->ing;
    mw_lane *lane = &ing->lanes[0];
    assert_int_equal(lane_txn_cap(ing, lane), 3);
    fx_feed_items(fx, 0, "a", 2);
    fx_consume(fx, 1);
    lanes_start_due(ing);
    assert_int_equal(lane->state, LANE_IDLE); /* 2 items, not due before 60 s */
    fx_feed_items(fx, 0, "b", 2);
    fx_consume(fx, 1);
    lanes_start_due(ing);
    assert_int_equal(lane->state, LANE_APPLYING);
    assert_int_equal(lane->txn_items, 4);
    assert_true(lane->behind);
    assert_int_equal(lane_txn_cap(ing, lane), 8);

    fx_feed_items(fx, 0, "c", 1);
    fx_consume(fx, 1);
    lane_poll(ing, lane, false);
    assert_int_equal(lane->state, LANE_IDLE); /* 1 item waiting: not due */
    assert_int_equal(lane->waiting_items, 1);
    assert_int_equal(lane_txn_cap(ing, lane), 8); /* still behind until a transaction isn't full */
    fx->cfg.txn_max_wait_ms = 0;
    lanes_start_due(ing);
    assert_int_equal(lane->state, LANE_APPLYING);
    assert_int_equal(lane->txn_items, 1);
    assert_false(lane->behind);
    assert_int_equal(lane_txn_cap(ing, lane), 3);
    lane_poll(ing, lane, false);

    /* A backlog setting below TXN_MAX_ITEMS never shrinks the cap. */
    fx->cfg.txn_backlog_items = 2;
    lane->behind = true;
    assert_int_equal(lane_txn_cap(ing, lane), 3);
    assert_true(flights_drain(ing, true));
    assert_int_equal(fx_committed(fx, 0), 3);
    fx_free(fx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(applied_ok_moves_offsets_and_becomes_flight),
        cmocka_unit_test(answer_sends_next_transaction_at_once),
        cmocka_unit_test(replay_reports_recorded_rejects_without_applying),
        {"deadlock_is_retried", transient_is_retried, NULL, NULL, (void *)&deadlock},
        {"admin_shutdown_is_retried", transient_is_retried, NULL, NULL, (void *)&admin_shutdown},
        {"connection_lost_is_retried", transient_is_retried, NULL, NULL, (void *)&connection_lost},
        cmocka_unit_test(mw001_switches_to_generations_at_once),
        cmocka_unit_test(data_error_isolates_refused_items),
        cmocka_unit_test(fatal_error_stops_without_storing),
        cmocka_unit_test(revoked_while_applying_reports_only_kept),
        cmocka_unit_test(revoked_then_data_error_plans_again),
        cmocka_unit_test(only_the_diagrams_transitions_are_allowed),
        cmocka_unit_test(revoked_marks_only_an_applying_lane),
        cmocka_unit_test(backlog_cap_grows_when_behind_only),
    };
    return cmocka_run_group_tests(tests, fx_cluster_up, fx_cluster_down);
}
