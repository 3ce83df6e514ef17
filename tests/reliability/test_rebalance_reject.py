"""A rebalance while a statement runs AND PostgreSQL refuses an item of that statement
(issue 9, item 9): the path of worker/txn.c txn_applied() where `st == DB_DATA &&
plan_stale` (lane state applying_revoked: "partitions revoked during the batch").

Deterministic choreography, over 6 partitions, owner constraint no_reject refusing any row
with status 'reject':

 1. Warm-up: worker A (DATABASE_CONNECTIONS=1, TXN_MAX_WAIT_MS long) ingests one message per
    partition, so that every partition has its row in customer_metadata_offsets.
 2. The test holds a row lock (SELECT ... FOR UPDATE) on the offsets row of partition 5, the
    last one A's statement takes: customer_metadata_advance_offsets updates the partitions in
    ascending order before the MERGE, so A's statement locks the rows of partitions 0-4 and
    then waits, before it can meet any refused row. (A lock on a customer row would be met in
    the MERGE's join order, possibly after a refused row: the statement would then fail at
    once instead of waiting.)
 3. Messages on all 6 partitions, each partition with refused items, arrive within A's
    TXN_MAX_WAIT_MS: one transaction covers them all. The test checks that A's statement
    waits on a lock (pg_stat_activity) and holds the offsets rows of partitions 0-4 (a
    SKIP LOCKED probe sees none of them): it does cover all 6 partitions.
 4. Worker B joins the group (cooperative-sticky): A gives up some partitions while its
    statement is blocked; the test waits for A's "partition revoked" and checks the statement
    is still waiting, then rolls its lock back.
 5. A's statement fails with 23514 on a plan whose messages were partly revoked (and freed):
    A must re-plan (the retry "partitions revoked during the batch") and isolate the refused
    items of the partitions it kept; B's statements, which wait behind A's offsets locks until
    A's statement is over, ingest the revoked partitions from the committed offsets.

Checks: A's log shows the retry after the revoke (the path ran), the table equals a model
that applies every valid item one by one in order (a refused item changes nothing), every
item has a result keyed by (partition, offset, index) with the right error and errorCount,
repeated results are identical, the rejects table and the offsets are exact, and both workers
exit 0 on SIGTERM."""

import json
import os
import random
import sys
import time
import unittest

import psycopg2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
from harness import E2ECase, ResultsReader  # noqa: E402
from stream import OPTIONAL, Stream, table_rows  # noqa: E402

LOCKED_PART = 5          # the highest partition: A's statement takes its offsets row last
MSGS_PER_PART = 3
ITEMS_PER_MSG = 6
KEYS_PER_PART = 4
A_WAIT_MS = 4000         # A's TXN_MAX_WAIT_MS: every main message is in A's one transaction
FAST_GROUP = ("-X", "heartbeat.interval.ms=500", "-X", "session.timeout.ms=10000")


def key_of(p, k):
    # Keys are partition-local: docs/contract.md §4 orders items only within a partition, so
    # the final state is then the same whichever worker applies which partition, and when.
    return (f"cust-p{p}-{k}", f"conv-{k % 2}")


def make_messages(seed=9):
    """Returns (warmup, main): lists of (partition, [items]); and the set of refused items'
    (partition, message number within the partition, index) is marked by status 'reject'."""
    rng = random.Random(seed)
    warmup = []
    for p in range(6):
        warmup.append((p, [{"externalCustomerId": key_of(p, k)[0],
                            "externalConversationId": key_of(p, k)[1],
                            "eventId": f"ev-w-{p}-{k}", "status": f"new-{p}-{k}",
                            "attributes": [{"name": "origin", "value": f"w{p}"}]}
                           for k in range(3)]))
    main = []
    for p in range(6):
        for m in range(MSGS_PER_PART):
            items = []
            for i in range(ITEMS_PER_MSG):
                k = rng.randrange(KEYS_PER_PART)
                cid, conv = key_of(p, k)
                it = {"externalCustomerId": cid, "externalConversationId": conv,
                      "eventId": f"ev-{p}-{m}-{i}"}
                # Two refused items per message (indexes 1 and 4): every partition, revoked
                # or kept, has refused items, so both workers take the slow path.
                refuse = i in (1, 4)
                for f in OPTIONAL:
                    r = rng.random()
                    if r < 0.45:
                        it[f] = f"{f[:5]}-{p}-{m}-{i}"
                    elif r < 0.55:
                        it[f] = None
                if refuse:
                    it["status"] = "reject"
                if rng.random() < 0.8:
                    it["attributes"] = [
                        {"name": f"a{rng.randrange(3)}",
                         "value": None if rng.random() < 0.25 else f"v-{p}-{m}-{i}"}
                        for _ in range(rng.randrange(1, 3))]
                items.append(it)
            main.append((p, items))
    return warmup, main


def log_events(worker):
    out = []
    for line in worker.lines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


class TestRebalanceReject(E2ECase):
    partitions = 6

    def wait_until(self, what, fn, timeout, worker):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = fn()
            if v:
                return v
            self.assertIsNone(worker.proc.poll(), f"worker exited while waiting for {what}:\n"
                              + worker.dump())
            time.sleep(0.1)
        self.fail(f"timed out waiting for {what}; worker log:\n" + worker.dump())

    def lock_waiters(self):
        return self.query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'metadata-worker'"
            " AND datname = current_database() AND wait_event_type = 'Lock'"
            " AND position('customer_metadata_apply(' in query) > 0")

    def test_rebalance_during_a_refused_statement(self):
        t_start = time.monotonic()
        self.assertEqual(self.partitions, 6)
        self.query("ALTER TABLE customer_metadata ADD CONSTRAINT no_reject"
                   " CHECK (status IS DISTINCT FROM 'reject')")
        warmup, main = make_messages()
        reader = ResultsReader(self.results_topic)

        # -- 1. warm-up: A ingests one message per partition --
        for p, items in warmup:
            self.producer.produce(self.topic, json.dumps({"items": items}).encode(), partition=p)
        self.producer.flush(30)
        a = self.start_worker(name="A", args=("run", *FAST_GROUP),
                              extra_env={"DATABASE_CONNECTIONS": "1",
                                         "TXN_MAX_WAIT_MS": str(A_WAIT_MS)})
        n_warm = sum(len(items) for _, items in warmup)
        self.assertTrue(reader.wait_for(n_warm, 30), "warm-up results missing:\n" + a.dump())
        offsets = dict(self.query("SELECT partition, next_offset FROM customer_metadata_offsets"
                                  " WHERE consumer_group = %s AND topic = %s", self.group, self.topic))
        self.assertEqual(offsets, {p: 1 for p in range(6)})

        # -- 2. hold the offsets row of the last partition A's statement will take --
        lock = psycopg2.connect(self.env["DATABASE_URL"])
        probe = psycopg2.connect(self.env["DATABASE_URL"])
        try:
            with lock.cursor() as cur:  # psycopg2 opens the transaction (BEGIN) itself
                cur.execute("SELECT partition FROM customer_metadata_offsets WHERE consumer_group = %s"
                            " AND topic = %s AND partition = %s FOR UPDATE",
                            (self.group, self.topic, LOCKED_PART))
                self.assertEqual(cur.fetchall(), [(LOCKED_PART,)])

            # -- 3. the main messages, all within A's TXN_MAX_WAIT_MS --
            t_prod = time.monotonic()
            per_part = {p: 0 for p in range(6)}
            sources = []  # (partition, offset, items)
            for p, items in main:
                self.producer.produce(self.topic, json.dumps({"items": items}).encode(), partition=p)
                per_part[p] += 1
                sources.append((p, per_part[p], items))  # warm-up took offset 0
            self.producer.flush(30)
            produce_s = time.monotonic() - t_prod
            self.assertLess(produce_s, A_WAIT_MS / 2000, "producing took too long for one transaction")

            waiting = self.wait_until("A's statement to wait on the lock", self.lock_waiters,
                                      A_WAIT_MS / 1000 + 15, a)
            self.assertEqual(len(waiting), 1)
            a_pid = waiting[0][0]
            # A's statement holds the offsets rows of every other partition: one transaction
            # covers all 6 partitions.
            with probe.cursor() as cur:
                cur.execute("SELECT partition FROM customer_metadata_offsets WHERE consumer_group = %s"
                            " AND topic = %s FOR UPDATE SKIP LOCKED", (self.group, self.topic))
                free = sorted(r[0] for r in cur.fetchall())
            probe.rollback()
            self.assertEqual(free, [], "A's blocked statement does not cover every partition")

            # -- 4. B joins: A gives up partitions while its statement waits --
            t_join = time.monotonic()
            b = self.start_worker(name="B", args=("run", *FAST_GROUP),
                                  extra_env={"DATABASE_CONNECTIONS": "1"})

            def revoked():
                return sorted(e["partition"] for e in log_events(a) if e.get("msg") == "partition revoked")
            moved = self.wait_until("A to revoke partitions", revoked, 30, a)
            time.sleep(0.3)  # the callback logs every revoked partition at once; be sure
            moved = revoked()
            rebalance_s = time.monotonic() - t_join
            still = [r[0] for r in self.lock_waiters()]
            self.assertIn(a_pid, still, "A's statement was no longer in flight at the revoke")
            self.assertTrue(0 < len(moved) < 6, f"revoked {moved}")
        finally:
            # -- 5. release: A's statement meets the refused rows (23514) --
            lock.rollback()
            lock.close()
            probe.close()

        # -- every item has its result --
        n_items = n_warm + sum(len(items) for _, items in main)
        t_rel = time.monotonic()
        done = reader.wait_for(n_items, 40)
        drain_s = time.monotonic() - t_rel
        reader.poll(1.5)  # late repeats, if any
        self.assertTrue(done, f"{len(reader.by_source)} of {n_items} results;\nA:\n{a.dump()}\nB:\n{b.dump()}")
        rc_b, stop_b = self.stop_worker(b)
        rc_a, stop_a = self.stop_worker(a)
        reader.poll(0.5)

        # -- the path ran: revoke, then the retry of a refused statement, then isolation --
        ev_a = log_events(a)
        i_revoke = next(i for i, e in enumerate(ev_a) if e.get("msg") == "partition revoked")
        retries = [i for i, e in enumerate(ev_a) if e.get("msg") == "retrying"
                   and e.get("error") == "partitions revoked during the batch"]
        self.assertTrue(retries, "A did not re-plan after the revoke:\n" + a.dump())
        self.assertGreater(retries[0], i_revoke)
        isolated_a = [e for e in ev_a[retries[0]:]
                      if e.get("msg", "").startswith("PostgreSQL refused an item")]
        self.assertTrue(isolated_a, "A did not isolate the refused items after re-planning")
        kept = sorted(set(range(6)) - set(moved))
        kept_items = sum(len(items) for p, _, items in sources if p in kept)
        self.assertEqual(isolated_a[0].get("items"), kept_items,
                         "A's re-planned transaction is not exactly its kept partitions' items")
        ev_b = log_events(b)
        b_first = []
        for e in ev_b:
            if e.get("msg") == "partition revoked":
                break
            if e.get("msg") == "partition assigned":
                b_first.append(e["partition"])
                # From the group's committed offset: after the warm-up, before the batch.
                self.assertEqual((e["offset"], e["pg_next_offset"]), (1, 1), e)
        self.assertEqual(sorted(b_first), moved, "B did not take exactly the revoked partitions")
        self.assertTrue(any(e.get("msg", "").startswith("PostgreSQL refused an item") for e in ev_b),
                        "B did not isolate the refused items of the revoked partitions")
        for w, ev in (("A", ev_a), ("B", ev_b)):
            errs = [e for e in ev if e.get("level") == "error"]
            self.assertEqual(errs, [], f"{w} logged errors")

        # -- the model: every valid item one by one in order; a refused one changes nothing --
        state, refused = {}, set()
        for p, items in warmup:
            for it in items:
                Stream.apply(state, it)
        for p, off, items in sources:
            for i, it in enumerate(items):
                if it.get("status") == "reject":
                    refused.add((p, off, i))
                else:
                    Stream.apply(state, it)
        expected = {k: tuple(v["fields"][f] for f in OPTIONAL) + (v["attributes"],)
                    for k, v in state.items()}
        rows = table_rows(self.query)
        wrong = {k: (rows.get(k), expected.get(k)) for k in set(rows) | set(expected)
                 if rows.get(k) != expected.get(k)}
        self.assertEqual(wrong, {}, "table differs from the model (got, want)")

        # -- results: one per item, the right error, identical repeats --
        want = {(p, 0, i): ("", it["eventId"], 0) for p, items in warmup for i, it in enumerate(items)}
        for p, off, items in sources:
            n_ref = sum(1 for it in items if it.get("status") == "reject")
            for i, it in enumerate(items):
                want[(p, off, i)] = ("reject" if (p, off, i) in refused else "", it["eventId"], n_ref)
        self.assertEqual(set(reader.by_source), set(want))
        bad = []
        for k, (kind, eid, n_err) in want.items():
            r = reader.by_source[k]
            err = r["error"]
            ok = r["eventId"] == eid and r["batch"]["errorCount"] == n_err
            if kind:
                ok &= err.startswith("FAIL_DB_REJECTED:") and "23514" in err and "no_reject" in err
            else:
                ok &= err == ""
            if not ok:
                bad.append((k, kind, r))
        self.assertEqual(bad[:3], [], f"{len(bad)} wrong results")
        self.assertEqual(reader.differing[:2], [], "repeated results differ")

        # -- the rejects table and the offsets are exact --
        rej = {(r[0], r[1], r[2]) for r in self.query(
            "SELECT partition, \"offset\", item_index FROM customer_metadata_rejects"
            " WHERE consumer_group = %s AND topic = %s", self.group, self.topic)}
        self.assertEqual(rej, refused)
        offsets = dict(self.query("SELECT partition, next_offset FROM customer_metadata_offsets"
                                  " WHERE consumer_group = %s AND topic = %s", self.group, self.topic))
        self.assertEqual(offsets, {p: 1 + MSGS_PER_PART for p in range(6)})
        reader.close()

        print(f"\n  rebalance+reject: {n_items} items ({len(refused)} refused) in "
              f"{len(warmup) + len(main)} messages over 6 partitions; partitions moved A->B "
              f"{moved} (A kept {kept}, B took {sorted(b_first)}) {rebalance_s:.1f}s after B "
              f"started; A retried {len(retries)}x with 'partitions revoked during the batch', "
              f"then isolated {isolated_a[0].get('items')} items; {len(rows)} rows exact; "
              f"results {reader.total} for {len(reader.by_source)} items, {reader.repeats} "
              f"repeated ({len(reader.differing)} differing); drained in {drain_s:.1f}s; "
              f"SIGTERM exits A {rc_a} ({stop_a:.1f}s) B {rc_b} ({stop_b:.1f}s); "
              f"total {time.monotonic() - t_start:.1f}s", end=" ")


if __name__ == "__main__":
    unittest.main()
