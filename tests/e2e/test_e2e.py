"""End-to-end tests of `metadata-worker run` against the real Kafka broker and PostgreSQL
of the test harness (issue 2, point 7)."""

import json
import os
import signal
import time
import unittest

from jsonschema import Draft202012Validator

from harness import EXAMPLE, ROOT, E2ECase

with open(os.path.join(ROOT, "schemas", "result.schema.json")) as _f:
    RESULT_SCHEMA = json.load(_f)
Draft202012Validator.check_schema(RESULT_SCHEMA)
RESULT_VALIDATOR = Draft202012Validator(RESULT_SCHEMA)


def item(cust, conv, **fields):
    d = {"externalCustomerId": cust, "externalConversationId": conv}
    d.update(fields)
    return d


class TestIngest(E2ECase):

    def assert_results_valid(self, results):
        """Every result message the worker wrote is valid by schemas/result.schema.json."""
        self.assertTrue(results)
        for r in results:
            errors = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                      for e in RESULT_VALIDATOR.iter_errors(r)]
            self.assertEqual(errors, [], f"result message not valid by result.schema.json: {r}")

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
        self.assert_results_valid(res)
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
        """Good items are ingested; bad ones get the exact errors of docs/contract.md §3."""
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
        self.assert_results_valid(res)
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
        self.assert_results_valid(res)
        bad = [r for r in res if r["error"].startswith("FAIL_BAD_REQUEST: ERROR: ")]
        self.assertEqual(len(bad), 1, res)
        self.assertEqual(bad[0]["source"], {"topic": self.topic, "partition": 0, "offset": 0, "index": 0})
        # The one result of a message that is not a batch (result.schema.json's description).
        self.assertIsNone(bad[0]["externalCustomerId"])
        self.assertIsNone(bad[0]["externalConversationId"])
        self.assertEqual(bad[0]["batch"], {"itemCount": 0, "errorCount": 1})
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
        """DATABASE_CONNECTIONS (default 2; then 3): partition p is applied on connection
        p mod N, so transactions run side by side; per partition, items still apply in order.

        Which partitions a transaction applied is read two ways. From the worker's log: a
        message of partition p holds sizes[p] items (1, 20, 400), so the "items" of a
        "batch done" line spell out how many messages of each partition it applied, and the
        line names its connection. From PostgreSQL: a test trigger records, for every offsets
        row a transaction moves, the transaction and its backend. Each transaction's
        partitions must satisfy p mod N == its connection, each backend must serve one
        residue, and both views must list the same transactions."""
        sizes = (1, 20, 400)  # at most 4 messages per partition in a transaction: unambiguous
        self.query("CREATE TABLE test_offset_moves (grp text, part integer, pid integer,"
                   " xid bigint)")
        self.query("CREATE FUNCTION test_record_move() RETURNS trigger LANGUAGE plpgsql AS $$"
                   " BEGIN INSERT INTO test_offset_moves VALUES (NEW.consumer_group,"
                   " NEW.partition, pg_backend_pid(), txid_current()); RETURN NEW; END $$")
        self.query("CREATE TRIGGER test_record_move AFTER INSERT OR UPDATE ON"
                   " customer_metadata_offsets FOR EACH ROW EXECUTE FUNCTION test_record_move()")
        for m in range(12):
            p = m % 3
            self.produce({"items": [item(f"c{p}", f"k{i}", status=f"s{m}")
                                    for i in range(sizes[p])]}, partition=p)
        per_run = 4 * sum(sizes)

        def partitions_of(t):
            x = t["items"]
            counts = (x % 20, x % 400 // 20, x // 400)
            self.assertEqual(sum(counts), t["messages"], t)
            self.assertTrue(all(c <= 4 for c in counts), t)
            return counts

        for run, n in enumerate((None, 3)):
            env = {"LOG_LEVEL": "debug"}
            if n:
                env.update({"DATABASE_CONNECTIONS": str(n), "KAFKA_GROUP_ID": self.group + "-3"})
            n = n or 2
            w = self.start_worker(env, name=f"worker{run}")
            self.wait_results((run + 1) * per_run, w)
            self.stop_worker(w)
            # The log's view: each transaction's connection and partitions.
            log_txns = []
            applied = [0, 0, 0]
            for t in (json.loads(l) for l in w.lines() if '"batch done"' in l):
                counts = partitions_of(t)
                parts = sorted(p for p in range(3) if counts[p])
                for p in range(3):
                    applied[p] += counts[p]
                bad = [p for p in parts if p % n != t["connection"]]
                self.assertEqual(bad, [], f"N={n}: connection {t['connection']} applied "
                                          f"partitions {parts}:\n" + w.dump())
                log_txns.append((t["connection"], parts))
            self.assertEqual(applied, [4, 4, 4], w.dump())
            self.assertEqual({c for c, _ in log_txns}, set(range(n)), w.dump())
            # PostgreSQL's view: transaction -> its backend and partitions.
            db_txns = self.query("SELECT pid, array_agg(part) FROM test_offset_moves"
                                 " WHERE grp = %s GROUP BY xid, pid", env.get("KAFKA_GROUP_ID",
                                                                             self.group))
            residues = {}
            for pid, parts in db_txns:
                self.assertEqual(len({p % n for p in parts}), 1, f"N={n}: one transaction "
                                 f"applied partitions {sorted(parts)}")
                residues.setdefault(pid, set()).update(p % n for p in parts)
            self.assertTrue(all(len(r) == 1 for r in residues.values()),
                            f"N={n}: a backend applied partitions of several connections: {residues}")
            self.assertEqual(len(residues), n, residues)
            self.assertEqual(sorted(parts for _, parts in log_txns),
                             sorted(sorted(set(parts)) for _, parts in db_txns))
            print(f"\n  N={n}: {len(log_txns)} transactions on {len(residues)} backends,"
                  f" (connection, partitions): {sorted(log_txns)}", end=" ")
            rows = self.rows()
            self.assertEqual(len(rows), sum(sizes))
            # The last message of each partition wins: messages 9, 10 and 11.
            for p in range(3):
                self.assertEqual({rows[(f"c{p}", f"k{i}")][3] for i in range(sizes[p])},
                                 {f"s{9 + p}"})

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
        """The happy path runs one statement per database transaction, not per item or per
        message (docs/benchmarks.md, Performance): 1,000 items in 20 messages give one apply
        statement per connection that had work (1-2), and besides them only the worker's fixed
        statements: the schema check, one offsets read per assigned partition and the idle
        ping (every 2 s), the read of whether the table is plain (schema 4: at the first
        transaction, then every 30 s), and per connection the session's statement_timeout
        (read, and set when the session has none: a silent server is noticed) -- 8-10
        statements in all. TXN_MAX_WAIT_MS is 1 s so that a lane
        whose partitions' messages arrive in two fetches still makes one transaction: the
        count then depends on the design, not on timing."""
        self.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        self.query("SELECT pg_stat_statements_reset()")
        n_msgs, per = 20, 50
        for m in range(n_msgs):
            self.produce({"items": [item(f"c{m}-{i}", "v", status="s",
                                         attributes=[{"name": "n", "value": str(i)}])
                                    for i in range(per)]})
        t0 = time.monotonic()
        w = self.start_worker({"LOG_LEVEL": "debug", "TXN_MAX_WAIT_MS": "1000"})
        res = self.wait_results(n_msgs * per, w)
        self.stop_worker(w)
        lifetime = time.monotonic() - t0
        stats = [(q, c) for q, c in self.query(
            "SELECT query, calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
            " WHERE d.datname = current_database()") if "pg_stat_statements" not in q]
        kinds = {"apply": "customer_metadata_apply(", "schema": "FROM metadata_worker_schema",
                 "offsets": "FROM customer_metadata_offsets", "ping": "SELECT $1",
                 "plain": "customer_metadata_plain()", "session": "FROM pg_settings WHERE name"}
        calls = dict.fromkeys(kinds, 0)
        other = []
        for q, c in stats:
            kind = next((k for k, text in kinds.items() if text in q), None)
            if kind:
                calls[kind] += c
            else:
                other.append((q, c))
        total = sum(c for _, c in stats)
        # DATABASE_CONNECTIONS is 2: partition p is applied on connection p mod 2.
        connections = {r["source"]["partition"] % 2 for r in res}
        transactions = [json.loads(l) for l in w.lines() if '"batch done"' in l]
        print(f"\n  {n_msgs * per} items in {n_msgs} messages on partitions "
              f"{sorted({r['source']['partition'] for r in res})}: {calls['apply']} apply "
              f"statements, {total} statements in all ({calls}) ", end=" ")
        self.assertEqual(other, [], stats)
        self.assertEqual(calls["apply"], len(connections), stats)
        self.assertEqual(len(transactions), calls["apply"], w.dump())
        self.assertEqual(sum(t["items"] for t in transactions), n_msgs * per)
        self.assertEqual(calls["schema"], 1, stats)
        self.assertEqual(calls["plain"], 1, stats)
        self.assertLessEqual(calls["session"], 2, stats)  # once per connection (2)
        self.assertEqual(calls["offsets"], self.partitions, stats)  # once each, at assignment
        self.assertLessEqual(calls["ping"], 1 + int(lifetime / 2), stats)
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
        self.assertEqual(len(res), 4)
        self.assert_results_valid(res)
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
        self.assert_results_valid(res2)
        # The results topic now holds each item's result twice (the results topic has several
        # partitions, so the order in which they are read says nothing): by source, the two
        # are identical and equal to the first run's.
        by_source = {}
        for r in res2:
            s = r["source"]
            by_source.setdefault((s["partition"], s["offset"], s["index"]), []).append(r)
        self.assertEqual(sorted(by_source), [(0, 0, i) for i in range(4)])
        for k, rs in by_source.items():
            self.assertEqual(len(rs), 2, rs)
            self.assertEqual(rs[0], rs[1], f"the replayed result of {k} differs")
            self.assertEqual(rs[0], by_index[k[2]], f"the result of {k} differs from the first run's")
        self.assertEqual(self.query("SELECT updated_at FROM customer_metadata"), before)
        self.stop_worker(w2)


if __name__ == "__main__":
    unittest.main()
