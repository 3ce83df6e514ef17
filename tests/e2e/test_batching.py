"""How a stream is batched must not change what it does (issue 9, item 4; docs/contract.md
§4): several items of one key in one message or one database transaction give exactly the
state, and the results, of applying them one after the other, also when the database owner
added a constraint that refuses an intermediate state.

The owner's constraint here: no phone number on a closed row. Before schema 3 the happy path
merged a transaction's items per key into one row, so {closed, phone} then {open} stored
open + phone with no error, while one item per transaction refused the first item. Each test
runs the same items under several batchings, each in its own topics and database, at the
same time (one worker each), and compares tables and results; the mixed stream is also
compared with a model that applies the items one by one (a refused item changes nothing)."""

import json
import random
import subprocess
import time
import unittest

import psycopg2
from confluent_kafka.admin import AdminClient, NewTopic

from harness import BIN, BROKERS, E2ECase, ResultsReader, Worker, pg_admin

CONSTRAINT = ("ALTER TABLE customer_metadata ADD CONSTRAINT no_phone_when_closed"
              " CHECK (status IS DISTINCT FROM 'closed' OR phone_number IS NULL)")
FIELDS = ["status", "phoneNumber", "emailAddress", "userId", "addressCountry", "addressState",
          "addressZipcode"]
# Every column but created_at and updated_at; source_topic is checked against the run's topic.
COLUMNS = ("external_customer_id, external_conversation_id, event_id, status, phone_number,"
           " email_address, user_id, address_country, address_state, address_zipcode,"
           " attributes, source_partition, source_offset, source_index, source_topic")
ONE_TXN_PER_MESSAGE = {"TXN_MAX_ITEMS": "1", "TXN_BACKLOG_ITEMS": "1", "DATABASE_CONNECTIONS": "1"}


def item(cust, conv, **fields):
    d = {"externalCustomerId": cust, "externalConversationId": conv}
    d.update(fields)
    return d


class Run:
    """One batching of a stream: its own topics, consumer group, database (with the owner's
    constraint) and worker."""

    def __init__(self, case, tag, extra_env=None):
        self.case = case
        id_ = f"{case.id_}{tag}"
        self.topic, results, dlq = f"in-{id_}", f"res-{id_}", f"dlq-{id_}"
        self.dbname = f"mw_{id_}"
        kafka_admin = AdminClient({"bootstrap.servers": BROKERS})  # alive until the results
        fs = kafka_admin.create_topics(
            [NewTopic(self.topic, case.partitions, 1), NewTopic(results, 3, 1),
             NewTopic(dlq, 1, 1)])
        for f in fs.values():
            f.result(30)
        admin = pg_admin()
        admin.cursor().execute(f'CREATE DATABASE "{self.dbname}"')
        admin.close()
        case.extra_dbs.append(self.dbname)
        self.env = dict(case.env)
        self.env.update({"KAFKA_INPUT_TOPIC": self.topic, "KAFKA_RESULTS_TOPIC": results,
                         "KAFKA_DLQ_TOPIC": dlq, "KAFKA_GROUP_ID": f"grp-{id_}",
                         "LOG_LEVEL": "debug",
                         "DATABASE_URL": case.env["DATABASE_URL"].rsplit("/", 1)[0]
                         + "/" + self.dbname})
        self.env.update(extra_env or {})
        r = subprocess.run([BIN, "migrate"], env=self.env, capture_output=True, timeout=60)
        case.assertEqual(r.returncode, 0, r.stderr.decode())
        self.db = psycopg2.connect(self.env["DATABASE_URL"])
        self.db.autocommit = True
        case.extra_conns.append(self.db)
        with self.db.cursor() as cur:
            cur.execute(CONSTRAINT)
        self.reader = ResultsReader(results)
        case.readers.append(self.reader)
        self.worker = None
        self.n_items = 0

    def produce(self, messages):
        """messages: [(partition, [items])], produced in order, one flush at the end."""
        for p, items in messages:
            self.case.producer.produce(self.topic, json.dumps({"items": items}).encode(),
                                       partition=p)
            self.n_items += len(items)
        self.case.producer.flush(30)

    def start(self):
        self.worker = Worker(self.env, name="batching")
        self.case.workers.append(self.worker)

    def wait(self, timeout=40):
        """Waits for a result of every item produced so far."""
        ok = self.reader.wait_for(self.n_items, timeout)
        self.case.assertTrue(ok, f"{len(self.reader.by_source)} of {self.n_items} results; "
                             "worker log:\n" + self.worker.dump())

    def stop(self):
        self.case.stop_worker(self.worker)
        self.case.assertEqual(self.reader.differing, [])

    def table(self):
        with self.db.cursor() as cur:
            cur.execute(f"SELECT {COLUMNS} FROM customer_metadata")
            rows = cur.fetchall()
        for r in rows:
            self.case.assertEqual(r[-1], self.topic)
        return {(r[0], r[1]): r[2:-1] for r in rows}

    def errors(self):
        """(partition, offset, index) -> the result's error."""
        return {k: r["error"] for k, r in self.reader.by_source.items()}

    def transactions(self):
        """Messages per database transaction, from the worker's debug log."""
        out = []
        for line in self.worker.lines():
            obj = json.loads(line)
            if obj.get("msg") == "batch done":
                out.append(obj["messages"])
        return out


def model(messages):
    """Applies the items one after the other, a refused item changing nothing. messages:
    [(partition, offset, [items])], in an order that keeps each partition's. Returns the
    table (in Run.table's shape) and (partition, offset, index) -> "", "BAD" or "REFUSED"."""
    rows, outcome = {}, {}
    for p, off, items in messages:
        for idx, it in enumerate(items):
            if not isinstance(it.get("status", ""), (str, type(None))):
                outcome[(p, off, idx)] = "BAD"
                continue
            key = (it["externalCustomerId"], it["externalConversationId"])
            old = rows.get(key)
            fields = dict(old["fields"]) if old else dict.fromkeys(FIELDS)
            attrs = old["attrs"] if old else None
            for f in FIELDS:
                if it.get(f) is not None:
                    fields[f] = it[f]
            if it.get("attributes") is not None:
                attrs = dict(attrs or {})
                for a in it["attributes"]:  # within an item the last duplicate name wins
                    if a.get("value") is None:
                        attrs.pop(a["name"], None)
                    else:
                        attrs[a["name"]] = a["value"]
            if fields["status"] == "closed" and fields["phoneNumber"] is not None:
                outcome[(p, off, idx)] = "REFUSED"
                continue
            outcome[(p, off, idx)] = ""
            rows[key] = {"fields": fields, "attrs": attrs, "eid": it["eventId"],
                         "src": (p, off, idx)}
    table = {k: (v["eid"], *(v["fields"][f] for f in FIELDS), v["attrs"], *v["src"])
             for k, v in rows.items()}
    return table, outcome


def mixed_stream(seed=4, partitions=3):
    """A few hundred items in two phases: in each phase a key belongs to one partition (contract
    §4 orders items only within a partition), and from one phase to the next every key moves
    to another partition. Keys repeat within messages and across messages and partitions;
    statuses and phone numbers make the constraint refuse items, and later items fix rows.
    Returns [phase: [(partition, offset, [items])]]."""
    rng = random.Random(seed)
    keys = [(f"cust-{k % 4}", f"conv-{k // 4}") for k in range(12)]
    next_off = [0] * partitions
    phases = []
    for phase in range(2):
        msgs = []
        for m in range(18):
            p = m % partitions
            mine = [k for i, k in enumerate(keys) if (i + phase) % partitions == p]
            items = []
            for i in range(rng.randrange(3, 20)):
                cid, conv = rng.choice(mine)
                it = item(cid, conv, eventId=f"ev-{phase}-{m}-{i}")
                r = rng.random()
                if r < 0.3:
                    it["status"] = "closed"
                elif r < 0.6:
                    it["status"] = rng.choice(["open", "pending"])
                elif r < 0.65:
                    it["status"] = None
                if rng.random() < 0.35:
                    it["phoneNumber"] = f"+1555{phase}{m}{i}"
                if rng.random() < 0.3:
                    it["emailAddress"] = f"m{phase}-{m}-{i}@example.com"
                if rng.random() < 0.2:
                    it["addressZipcode"] = rng.choice([None, f"z{phase}-{m}-{i}"])
                if rng.random() < 0.5:
                    it["attributes"] = [
                        {"name": f"a{rng.randrange(3)}",
                         "value": None if rng.random() < 0.25 else f"v{phase}-{m}-{i}"}
                        for _ in range(rng.randrange(1, 4))]
                elif rng.random() < 0.2:
                    it["attributes"] = None
                if rng.random() < 0.02:
                    it["status"] = 7  # FAIL_BAD_PARAMS: not applied at all
                items.append(it)
            msgs.append((p, next_off[p], items))
            next_off[p] += 1
        phases.append(msgs)
    return phases


class TestBatching(E2ECase):
    partitions = 3

    def setUp(self):
        super().setUp()
        self.extra_dbs, self.extra_conns, self.readers = [], [], []

    def tearDown(self):
        for r in self.readers:
            r.close()
        try:
            super().tearDown()  # kills and checks the workers, drops the main database
        finally:
            for c in self.extra_conns:
                c.close()
            admin = pg_admin()
            for name in self.extra_dbs:
                admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()

    def assert_refused(self, error, where=""):
        self.assertTrue((error or "").startswith("FAIL_DB_REJECTED: ERROR: "),
                        f"{where}: expected a FAIL_DB_REJECTED error, got {error!r}")
        self.assertIn("23514", error)
        self.assertIn("no_phone_when_closed", error)

    def test_refused_item_not_hidden_by_a_later_item_of_its_key(self):
        """The issue's case: {closed, phone} then {open} for one key in ONE message. The first
        item is refused (its state breaks the constraint), the second applies to the row as
        it was: open, no phone."""
        self.query(CONSTRAINT)
        self.produce({"items": [
            item("k", "c", eventId="i0", status="closed", phoneNumber="+1555"),
            item("k", "c", eventId="i1", status="open")]}, partition=0)
        w = self.start_worker()
        res = self.wait_results(2, w, exact_wait=1.0)
        by_index = {r["source"]["index"]: r for r in res}
        self.assert_refused(by_index[0]["error"], "index 0")
        self.assertEqual(by_index[1]["error"], "")
        self.assertTrue(all(r["batch"] == {"itemCount": 2, "errorCount": 1} for r in res), res)
        r = self.rows()[("k", "c")]
        self.assertEqual(r[2:5], ("i1", "open", None))
        self.assertEqual(self.query("SELECT item_index, event_id FROM customer_metadata_rejects"),
                         [(0, "i0")])
        self.stop_worker(w)

    def test_same_items_in_other_messages_or_transactions_same_outcome(self):
        """The same two items in one message or two (same partition), in one transaction or
        one per message: the same table, the same error on the same item."""
        i0 = item("k", "c", eventId="i0", status="closed", phoneNumber="+1555",
                  attributes=[{"name": "a", "value": "1"}])
        i1 = item("k", "c", eventId="i1", status="open", emailAddress="k@example.com")
        variants = {
            "one message": ([[i0, i1]], {}),
            "one message, one transaction per message": ([[i0, i1]], ONE_TXN_PER_MESSAGE),
            "two messages, one transaction": ([[i0], [i1]], {"TXN_MAX_WAIT_MS": "1000"}),
            "two messages, one transaction per message": ([[i0], [i1]], ONE_TXN_PER_MESSAGE),
        }
        runs = {}
        for n, (name, (msgs, env)) in enumerate(variants.items()):
            run = Run(self, f"v{n}", env)
            run.produce([(0, items) for items in msgs])
            run.start()
            runs[name] = run
        outcomes = {}
        for name, run in runs.items():
            run.wait()
            run.stop()
            by_event = {r["eventId"]: r["error"] for r in run.reader.by_source.values()}
            # The table without the source columns (they differ with the split).
            table = {k: v[:-3] for k, v in run.table().items()}
            outcomes[name] = (table, by_event)
            with self.subTest(variant=name):
                self.assert_refused(by_event["i0"], "i0")
                self.assertEqual(by_event["i1"], "")
                self.assertEqual(table, {("k", "c"): ("i1", "open", None, "k@example.com", None,
                                                      None, None, None, None)})
        first = next(iter(outcomes.values()))
        for name, got in outcomes.items():
            self.assertEqual(got, first, name)
        # The batchings did differ (messages per transaction).
        self.assertEqual(runs["one message"].transactions(), [1])
        self.assertEqual(runs["two messages, one transaction"].transactions(), [2])
        self.assertEqual(runs["two messages, one transaction per message"].transactions(), [1, 1])

    def test_mixed_stream_same_outcome_whatever_the_batching(self):
        """A mixed stream of a few hundred items, with default settings (a transaction holds
        many messages, two connections) and with one transaction per message on one
        connection: identical tables (every column) and per-item results, both equal to the
        model that applies the items one by one."""
        phases = mixed_stream(partitions=self.partitions)
        all_msgs = [m for ph in phases for m in ph]
        want_table, want_outcome = model(all_msgs)
        # The stream does exercise the defect: a refused item followed, in its own message,
        # by another item of its key (the merged happy path hid such refusals).
        hidden = sum(1 for p, off, items in all_msgs for i, it in enumerate(items)
                     if want_outcome[(p, off, i)] == "REFUSED"
                     and any((x["externalCustomerId"], x["externalConversationId"])
                             == (it["externalCustomerId"], it["externalConversationId"])
                             for x in items[i + 1:]))
        self.assertGreater(hidden, 10)
        self.assertGreater(list(want_outcome.values()).count("REFUSED"), 30)
        self.assertGreater(list(want_outcome.values()).count(""), 150)

        runs = {"default": Run(self, "d"), "one transaction per message":
                Run(self, "s", ONE_TXN_PER_MESSAGE)}
        for phase, msgs in enumerate(phases):
            for run in runs.values():
                run.produce([(p, items) for p, _, items in msgs])
                if phase == 0:
                    run.start()  # the first phase is all there: default batching gathers it
            for run in runs.values():
                run.wait()
        tables, errors = {}, {}
        for name, run in runs.items():
            run.stop()
            tables[name], errors[name] = run.table(), run.errors()
            with self.subTest(run=name):
                self.assertEqual(len(errors[name]), len(want_outcome))
                for k, want in want_outcome.items():
                    got = errors[name].get(k)
                    if want == "REFUSED":
                        self.assert_refused(got, f"item {k}")
                    elif want == "BAD":
                        self.assertEqual(got, "FAIL_BAD_PARAMS: ERROR: status must be a string")
                    else:
                        self.assertEqual(got, "", k)
                self.assertEqual(tables[name], want_table)
        self.assertEqual(tables["default"], tables["one transaction per message"])
        self.assertEqual(errors["default"], errors["one transaction per message"])
        # The batchings did differ: default settings gathered several messages per
        # transaction, the other ran one per message.
        self.assertGreater(max(runs["default"].transactions()), 1)
        self.assertEqual(set(runs["one transaction per message"].transactions()), {1})

    def test_merged_rows_of_a_worker_older_than_schema_3_still_apply(self):
        # Rolling upgrade: a worker started before `migrate` took the database to schema 3
        # sends merged rows (an array of objects), not generations (an array of arrays).
        doc = json.dumps([{"cid": "old", "conv": "w", "eid": "e1", "status": "open",
                           "aset": {"a": "1"}, "part": 0, "off": 0, "idx": 0}])
        self.query("SELECT customer_metadata_apply('g', 't', '{0}', '{-1}', '{1}', '{-1}', %s::json)",
                   doc)
        self.assertEqual(self.query("SELECT status, attributes FROM customer_metadata"),
                         [("open", {"a": "1"})])
        gens = json.dumps([[{"cid": "old", "conv": "w", "eid": "e2", "status": "closed",
                             "part": 0, "off": 1, "idx": 0}],
                           [{"cid": "old", "conv": "w", "eid": "e3", "phone": "+1",
                             "part": 0, "off": 1, "idx": 1}]])
        self.query("SELECT customer_metadata_apply('g', 't', '{0}', '{1}', '{2}', '{-1}', %s::json)",
                   gens)
        self.assertEqual(self.query("SELECT event_id, status, phone_number FROM customer_metadata"),
                         [("e3", "closed", "+1")])


if __name__ == "__main__":
    unittest.main()
