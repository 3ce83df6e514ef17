"""End-to-end tests of `metadata-worker run` against the real Kafka broker and PostgreSQL
of the test harness (issue 2, point 7)."""

import json
import os
import signal
import time
import unittest

from harness import EXAMPLE, E2ECase


def item(cust, conv, **fields):
    d = {"externalCustomerId": cust, "externalConversationId": conv}
    d.update(fields)
    return d


class TestIngest(E2ECase):

    def assert_json_logs(self, worker):
        for line in worker.lines():
            obj = json.loads(line)  # every log line is one JSON object
            for k in ("time", "level", "msg"):
                self.assertIn(k, obj, line)

    def test_api_example_verbatim(self):
        """The API's example request gives 5 rows and 5 success results."""
        with open(EXAMPLE, "rb") as f:
            self.produce(f.read())
        w = self.start_worker()
        res = self.wait_results(5, w, exact_wait=1.0)
        self.assertEqual(len(res), 5)
        self.assertTrue(all(r["error"] == "" for r in res), res)
        self.assertTrue(all(r["batch"] == {"itemCount": 5, "errorCount": 0} for r in res), res)
        self.assertEqual(sorted(r["source"]["index"] for r in res), [0, 1, 2, 3, 4])
        ids = {r["eventId"] for r in res}
        self.assertIn("eventId-1938", ids)
        self.assertIn("eventId-1331", ids)
        rows = self.rows()
        self.assertEqual(len(rows), 5)
        r = rows[("555.555.0100-jdoe@example.com", "id-509")]
        self.assertEqual(r[2:10], ("eventId-1938", "new", "(555)555-0100", "jdoe@example.com",
                                   "user908038", "United-States", "New-York", "10001"))
        self.assertEqual(r[10], {"attr1_name": "attr1_value", "attr2_name": "attr2_value"})
        r = rows[("zdoe@example.com", "id-69229")]
        self.assertEqual(r[3:11], (None,) * 8)
        # Generated eventIds are stored and match the results.
        gen = {r["eventId"] for r in res if r["externalCustomerId"] == "zdoe@example.com"}
        self.assertEqual(gen, {r[2]})
        self.stop_worker(w)
        self.assert_json_logs(w)

    def test_mixed_batch(self):
        """Good items are ingested; bad ones get the exact errors of SPEC §3."""
        batch = {"items": [
            item("c1", "v1", status="ok"),
            item("  ", "v2"),
            item("c3", "v3", phoneNumber="1" * 33),
            7,
            item("c5", "v5", status=5),
            item("c6", None, eventId="e6"),
            item("c7", "v7", attributes=[{"name": "a", "value": 1}]),
            item("é" * 256, "v8"),
            item("é" * 257, "v9"),
        ]}
        self.produce(batch)
        w = self.start_worker()
        res = self.wait_results(9, w, exact_wait=1.0)
        by_index = {r["source"]["index"]: r for r in res}
        self.assertEqual(len(by_index), 9)
        want = {
            0: "",
            1: "FAIL_BAD_PARAMS: ERROR: externalCustomerId cannot be blank",
            2: "FAIL_BAD_PARAMS: ERROR: phoneNumber exceeds maximum length of 32",
            3: "FAIL_BAD_PARAMS: ERROR: item must be an object",
            4: "FAIL_BAD_PARAMS: ERROR: status must be a string",
            5: "FAIL_BAD_PARAMS: ERROR: externalConversationId cannot be blank",
            6: "FAIL_BAD_PARAMS: ERROR: attributes[0].value must be a string or null",
            7: "",
            8: "FAIL_BAD_PARAMS: ERROR: externalCustomerId exceeds maximum length of 256",
        }
        self.assertEqual({i: r["error"] for i, r in by_index.items()}, want)
        self.assertEqual(by_index[5]["eventId"], "e6")
        self.assertTrue(all(r["batch"] == {"itemCount": 9, "errorCount": 7} for r in res))
        self.assertEqual(set(self.rows()), {("c1", "v1"), ("é" * 256, "v8")})
        self.stop_worker(w)

    def test_same_key_merges_in_order(self):
        """Two items for one key in one batch give the state of applying them in turn."""
        self.produce({"items": [
            item("k", "c", eventId="first", status="new", phoneNumber="111",
                 attributes=[{"name": "a", "value": "1"}, {"name": "b", "value": "2"}]),
            item("k", "c", eventId="second", emailAddress="k@example.com", phoneNumber=None,
                 attributes=[{"name": "b", "value": None}, {"name": "c", "value": "3"},
                             {"name": "c", "value": "4"}]),
        ]})
        w = self.start_worker()
        self.wait_results(2, w)
        r = self.rows()[("k", "c")]
        self.assertEqual(r[2:6], ("second", "new", "111", "k@example.com"))
        self.assertEqual(r[10], {"a": "1", "c": "4"})
        # A later message merges into the stored row the same way.
        self.produce({"items": [item("k", "c", eventId="third", status="old",
                                     attributes=[{"name": "a", "value": None}])]})
        self.wait_results(3, w)
        time.sleep(0.5)
        r = self.rows()[("k", "c")]
        self.assertEqual(r[2:6], ("third", "old", "111", "k@example.com"))
        self.assertEqual(r[10], {"c": "4"})
        self.stop_worker(w)

    def test_bad_message_dead_lettered_partition_moves_on(self):
        """A non-JSON message goes to the DLQ with a FAIL_BAD_REQUEST result, and the next
        message of its partition is still ingested."""
        self.produce(b"\x00not json at all\xff", partition=0, key=b"k1")
        self.produce({"items": [item("after", "bad")]}, partition=0)
        w = self.start_worker()
        res = self.wait_results(2, w, exact_wait=1.0)
        self.assertEqual(len(res), 2)
        bad = [r for r in res if r["error"].startswith("FAIL_BAD_REQUEST: ERROR: ")]
        self.assertEqual(len(bad), 1, res)
        self.assertEqual(bad[0]["source"], {"topic": self.topic, "partition": 0, "offset": 0, "index": 0})
        self.assertIn("UTF-8", bad[0]["error"])
        self.assertIn(("after", "bad"), self.rows())
        dlq = self.consume_all(self.dlq_topic, 1)
        self.assertEqual(len(dlq), 1)
        m = dlq[0]
        self.assertEqual(m.value(), b"\x00not json at all\xff")
        self.assertEqual(m.key(), b"k1")
        h = {k: v.decode() for k, v in m.headers()}
        self.assertEqual(h["dlq.source.topic"], self.topic)
        self.assertEqual(h["dlq.source.partition"], "0")
        self.assertEqual(h["dlq.source.offset"], "0")
        self.assertEqual(h["dlq.error"], bad[0]["error"])
        self.stop_worker(w)

    def test_restart_resumes_without_reapplying_or_skipping(self):
        """A worker stopped cleanly and started again continues exactly where it stopped."""
        for p in range(3):
            self.produce({"items": [item(f"c{p}-{i}", "conv", status="v1") for i in range(20)]},
                         partition=p)
        w = self.start_worker()
        self.wait_results(60, w)
        self.stop_worker(w)
        offsets = dict(self.query("SELECT partition, next_offset FROM customer_metadata_offsets"))
        self.assertEqual(offsets, {0: 1, 1: 1, 2: 1})
        for p in range(3):
            self.produce({"items": [item(f"c{p}-{i}", "conv", status="v2") for i in range(10)]
                          + [item(f"new{p}-{i}", "conv") for i in range(5)]}, partition=p)
        w2 = self.start_worker(name="worker2")
        res = self.wait_results(105, w2, exact_wait=3.0)
        # Exactly one result per item: nothing was consumed twice.
        self.assertEqual(len(res), 105)
        self.assertEqual(len({(r["source"]["partition"], r["source"]["offset"], r["source"]["index"])
                              for r in res}), 105)
        rows = self.rows()
        self.assertEqual(len(rows), 75)
        self.assertEqual(sum(1 for r in rows.values() if r[3] == "v2"), 30)
        offsets = dict(self.query("SELECT partition, next_offset FROM customer_metadata_offsets"))
        self.assertEqual(offsets, {0: 2, 1: 2, 2: 2})
        self.stop_worker(w2)

    def test_partitions_applied_on_their_own_connections(self):
        """DATABASE_CONNECTIONS (default 2): partition p is applied on connection p mod 2, so
        two transactions run side by side; per partition, items still apply in order."""
        for m in range(12):
            p = m % 3
            self.produce({"items": [item(f"c{p}", f"k{i}", status=f"s{m}") for i in range(10)]},
                         partition=p)
        w = self.start_worker({"LOG_LEVEL": "debug"})
        self.wait_results(120, w)
        self.stop_worker(w)
        used = {json.loads(l)["connection"] for l in w.lines()
                if l.startswith("{") and '"batch done"' in l}
        self.assertEqual(used, {0, 1}, w.dump())
        rows = self.rows()
        self.assertEqual(len(rows), 30)
        # The last message of each partition wins: messages 9, 10 and 11.
        for p in range(3):
            self.assertEqual(rows[(f"c{p}", "k0")][3], f"s{9 + p}")

    def test_shared_keys_across_connections_never_deadlock(self):
        """Two connections writing the same keys, listed in opposite orders by their
        partitions, wait for each other's row locks but never deadlock: the rows of a
        transaction go to PostgreSQL in key order."""
        # A table large enough for PostgreSQL to look each row up by the primary key: the
        # MERGE then locks rows in the order the document lists them.
        self.query("INSERT INTO customer_metadata (external_customer_id, external_conversation_id,"
                   " event_id, source_topic, source_partition, source_offset, source_index)"
                   " SELECT 'shared', 'k' || lpad(i::text, 6, '0'), 'e', 't', 0, 0, 0"
                   " FROM generate_series(0, 199999) i")
        self.query("ANALYZE customer_metadata")
        keys = [f"k{i * 80:06d}" for i in range(2500)]
        for m in range(12):
            order = keys if m % 2 == 0 else keys[::-1]
            self.produce({"items": [item("shared", k, status=f"m{m}") for k in order]},
                         partition=m % 2)
        w = self.start_worker({"LOG_LEVEL": "debug"})
        self.wait_results(12 * 2500, w)
        self.stop_worker(w)
        deadlocks = [l for l in w.lines() if "40P01" in l or "deadlock" in l]
        self.assertEqual(deadlocks, [], "\n".join(deadlocks[:3]))
        rows = self.rows()
        self.assertEqual(len(rows), 200000)
        # Each written row holds the last message of one partition or the other.
        self.assertTrue(all(rows[("shared", k)][3] in ("m10", "m11") for k in keys))

    def test_no_statement_per_item(self):
        """The happy path runs one statement per database transaction, not per item."""
        self.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        self.query("SELECT pg_stat_statements_reset()")
        n_msgs, per = 20, 50
        for m in range(n_msgs):
            self.produce({"items": [item(f"c{m}-{i}", "v", status="s",
                                         attributes=[{"name": "n", "value": str(i)}])
                                    for i in range(per)]})
        w = self.start_worker()
        self.wait_results(n_msgs * per, w)
        self.stop_worker(w)
        stats = self.query(
            "SELECT query, calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
            " WHERE d.datname = current_database()")
        applies = sum(c for q, c in stats if "customer_metadata_apply" in q)
        total = sum(c for q, c in stats if "pg_stat_statements" not in q)
        print(f"\n  {n_msgs * per} items in {n_msgs} messages: {applies} apply statements, "
              f"{total} statements in all", end=" ")
        self.assertGreaterEqual(applies, 1)
        self.assertLessEqual(applies, n_msgs)
        self.assertLess(total, n_msgs + 10, stats)
        self.assertEqual(self.query("SELECT count(*) FROM customer_metadata")[0][0], n_msgs * per)

    def test_database_reject_is_isolated_and_replayed_identically(self):
        """An item PostgreSQL refuses gets its own error; the rest of the batch is ingested;
        a replay of the message gives identical results and applies nothing twice."""
        self.query("ALTER TABLE customer_metadata ADD CONSTRAINT test_no_forbidden"
                   " CHECK (status IS DISTINCT FROM 'forbidden')")
        self.produce({"items": [item("a", "1", status="ok"), item("b", "2", status="forbidden"),
                                item("a", "1", userId="u"), item("c", "3", status=7)]}, partition=0)
        w = self.start_worker()
        res = self.wait_results(4, w, exact_wait=1.0)
        by_index = {r["source"]["index"]: r for r in res}
        self.assertEqual(by_index[0]["error"], "")
        self.assertTrue(by_index[1]["error"].startswith("FAIL_DB_REJECTED: ERROR: "), by_index[1])
        self.assertIn("23514", by_index[1]["error"])
        self.assertEqual(by_index[2]["error"], "")
        self.assertEqual(by_index[3]["error"], "FAIL_BAD_PARAMS: ERROR: status must be a string")
        self.assertTrue(all(r["batch"]["errorCount"] == 2 for r in res))
        rows = self.rows()
        self.assertEqual(set(rows), {("a", "1")})
        self.assertEqual(rows[("a", "1")][3], "ok")
        self.assertEqual(rows[("a", "1")][6], "u")
        self.stop_worker(w)
        before = self.query("SELECT updated_at FROM customer_metadata")
        # Rewind the group's committed offset: the message is consumed again.
        from confluent_kafka import Consumer, TopicPartition
        from harness import BROKERS
        c = Consumer({"bootstrap.servers": BROKERS, "group.id": self.group})
        c.commit(offsets=[TopicPartition(self.topic, 0, 0)], asynchronous=False)
        c.close()
        w2 = self.start_worker(name="worker2")
        res2 = self.wait_results(8, w2, exact_wait=1.0)
        self.assertEqual(len(res2), 8)
        first = sorted(json.dumps(r, sort_keys=True) for r in res2[:4])
        again = sorted(json.dumps(r, sort_keys=True) for r in res2[4:])
        self.assertEqual(sorted(json.dumps(r, sort_keys=True) for r in res), first)
        self.assertEqual(first, again)
        self.assertEqual(self.query("SELECT updated_at FROM customer_metadata"), before)
        self.stop_worker(w2)


if __name__ == "__main__":
    unittest.main()
