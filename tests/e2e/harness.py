"""Helpers for the end-to-end tests: a real Kafka broker and PostgreSQL started by
tests/harness/stack.sh (their addresses come from its env file), one set of topics and one
database per test, and the worker binary under test (MW_BIN) run as a child process.

Run with Debian's /usr/bin/python3 (python3-confluent-kafka, python3-psycopg2)."""

import json
import os
import socket
import signal
import subprocess
import tempfile
import time
import unittest
import uuid

import psycopg2
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("MW_BIN", os.path.join(ROOT, "build", "metadata-worker"))
BROKERS = os.environ.get("KAFKA_BROKERS")
EXAMPLE = os.path.join(ROOT, "schemas", "example-request.json")


def stack(cmd):
    """Runs tests/harness/stack.sh CMD (kafka-stop, kafka-start, pg-stop, pg-start) on the
    stack the suite runs against (MW_STACK_DIR, from the stack's env file)."""
    subprocess.run(["bash", os.path.join(ROOT, "tests", "harness", "stack.sh"), cmd,
                    os.environ.get("MW_STACK_DIR")], check=True, timeout=120)


def pg_admin():
    conn = psycopg2.connect(dbname="postgres")
    conn.autocommit = True
    return conn


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Worker:
    """One metadata-worker process; its JSON log lines are kept in a file."""

    def __init__(self, env, args=("run",), name="worker"):
        self.log = tempfile.NamedTemporaryFile(prefix=f"mw-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([BIN, *args], env=env, stdout=subprocess.DEVNULL,
                                     stderr=self.log)
        self.stopped_by = None  # the signal stop() sent, None while the test sent none

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Sends sig and waits; returns the exit status and the seconds taken. A worker that
        had already exited gets no signal: its own exit status is returned (so a SIGKILL
        that finds a worker dead by itself returns that status, not -9)."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.stopped_by = sig
        rc = self.proc.wait(timeout=timeout)
        return rc, time.monotonic() - t0

    def lines(self):
        with open(self.log.name, "rb") as f:
            return f.read().decode("utf-8", "replace").splitlines()

    def dump(self):
        return "\n".join(self.lines()[-60:])


class ResultsReader:
    """Follows a results topic from the beginning; keeps one value per item source
    (partition, offset, index) and counts repeats and repeats that differ. With keep_times,
    also every result's (create time in s since the epoch, as the worker's producer stamped
    it, source partition), in arrival order: when a worker produced results, whatever the
    reader's own lag."""

    def __init__(self, topic, keep_times=False):
        self.c = Consumer({"bootstrap.servers": BROKERS, "group.id": f"reader-{uuid.uuid4().hex}",
                           "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.c.subscribe([topic])
        self.by_source = {}
        self.total = 0
        self.repeats = 0
        self.differing = []
        self.times = [] if keep_times else None

    def poll(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for m in self.c.consume(1000, 0.2):
                if m.error():
                    continue
                r = json.loads(m.value())
                s = r["source"]
                k = (s["partition"], s["offset"], s["index"])
                if self.times is not None:
                    self.times.append((m.timestamp()[1] / 1000.0, s["partition"]))
                self.total += 1
                if k in self.by_source:
                    self.repeats += 1
                    if self.by_source[k] != r:
                        self.differing.append((self.by_source[k], r))
                else:
                    self.by_source[k] = r

    def wait_assigned(self, timeout=30):
        """Polls until the reader has its partitions (a consumer group's first join takes
        a few seconds), so that counts read afterwards are current."""
        end = time.monotonic() + timeout
        while not self.c.assignment() and time.monotonic() < end:
            self.poll(0.2)
        return bool(self.c.assignment())

    def wait_for(self, n, timeout):
        end = time.monotonic() + timeout
        while len(self.by_source) < n and time.monotonic() < end:
            self.poll(0.5)
        return len(self.by_source) >= n

    def close(self):
        self.c.close()


class E2ECase(unittest.TestCase):
    """Gives each test its own topics, consumer group and database."""

    partitions = 3
    replication = 1  # of the test's topics (3 against tests/reliability/kcluster.py's cluster)

    def setUp(self):
        if not BROKERS:
            self.fail("KAFKA_BROKERS is not set: run through tests/run-all.sh (it starts the stack)")
        self.id_ = uuid.uuid4().hex[:10]
        self.topic = f"in-{self.id_}"
        self.results_topic = f"res-{self.id_}"
        self.dlq_topic = f"dlq-{self.id_}"
        self.group = f"grp-{self.id_}"
        self.dbname = f"mw_{self.id_}"
        admin = AdminClient({"bootstrap.servers": BROKERS})
        r = self.replication
        fs = admin.create_topics([NewTopic(self.topic, self.partitions, r,
                                           config={"max.message.bytes": "4194304"}),
                                  NewTopic(self.results_topic, 3, r),
                                  NewTopic(self.dlq_topic, 1, r)])
        for f in fs.values():
            f.result(30)
        admin_db = pg_admin()
        admin_db.cursor().execute(f'CREATE DATABASE "{self.dbname}"')
        admin_db.close()
        self.env = dict(os.environ)
        self.env.update({
            "KAFKA_BROKERS": BROKERS, "KAFKA_GROUP_ID": self.group,
            "KAFKA_INPUT_TOPIC": self.topic, "KAFKA_RESULTS_TOPIC": self.results_topic,
            "KAFKA_DLQ_TOPIC": self.dlq_topic, "LOG_LEVEL": "info",
            "DATABASE_URL": "postgresql://%s@%s:%s/%s" % (
                os.environ.get("PGUSER", "postgres"), os.environ.get("PGHOST", "127.0.0.1"),
                os.environ.get("PGPORT", "5432"), self.dbname),
        })
        self.workers = []
        self.producer = Producer({"bootstrap.servers": BROKERS, "enable.idempotence": True,
                                  "message.max.bytes": 4000000})
        self.migrate()
        self.db = psycopg2.connect(self.env["DATABASE_URL"])
        self.db.autocommit = True

    def tearDown(self):
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
        # Under the sanitizer build, any report fails the test (the worker's stderr); in
        # every build, each line the worker wrote must be one JSON object (docs/contract.md §7).
        for w in self.workers:
            bad = [l for l in w.lines() if "Sanitizer" in l or "runtime error:" in l]
            self.assertEqual(bad, [], "sanitizer report:\n" + w.dump())
            for line in w.lines():
                try:
                    obj = json.loads(line)
                    ok = isinstance(obj, dict) and {"time", "level", "msg"} <= obj.keys()
                except ValueError:
                    ok = False
                self.assertTrue(ok, "log line is not a JSON object with time, level, msg: " + line)
        self.db.close()
        admin_db = pg_admin()
        admin_db.cursor().execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
        admin_db.close()

    # -- worker --
    def migrate(self):
        r = subprocess.run([BIN, "migrate"], env=self.env, capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr.decode())

    def start_worker(self, extra_env=None, name="worker", args=("run",)):
        env = dict(self.env)
        env.update(extra_env or {})
        w = Worker(env, args=args, name=name)
        self.workers.append(w)
        return w

    def stop_worker(self, w, sig=signal.SIGTERM):
        rc, secs = w.stop(sig)
        if sig == signal.SIGTERM:
            self.assertEqual(rc, 0, "worker did not exit 0 on SIGTERM:\n" + w.dump())
        return rc, secs

    # -- kafka --
    def produce(self, value, partition=None, key=None):
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        if isinstance(value, str):
            value = value.encode()
        kw = {"key": key}
        if partition is not None:
            kw["partition"] = partition
        self.producer.produce(self.topic, value, **kw)
        self.producer.flush(30)

    def consume_all(self, topic, expected, timeout=60, exact_wait=0.0):
        """Reads topic from the beginning until `expected` messages arrived (then waits
        exact_wait more seconds for unexpected extra ones) or timeout."""
        c = Consumer({"bootstrap.servers": BROKERS, "group.id": f"reader-{uuid.uuid4().hex}",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([topic])
        out = []
        deadline = time.monotonic() + timeout
        extra_until = None
        try:
            while time.monotonic() < deadline:
                m = c.poll(0.2)
                if m is not None and not m.error():
                    out.append(m)
                if len(out) >= expected:
                    if extra_until is None:
                        extra_until = time.monotonic() + exact_wait
                    if time.monotonic() >= extra_until:
                        break
        finally:
            c.close()
        return out

    def results(self, expected, timeout=60, exact_wait=0.0):
        msgs = self.consume_all(self.results_topic, expected, timeout, exact_wait)
        return [json.loads(m.value()) for m in msgs]

    def wait_results(self, expected, worker, timeout=60, exact_wait=0.0):
        res = self.results(expected, timeout, exact_wait)
        self.assertGreaterEqual(len(res), expected,
                                f"only {len(res)} of {expected} results; worker log:\n" + worker.dump())
        return res

    # -- postgres --
    def query(self, sql, *args):
        for attempt in range(30):
            try:
                with self.db.cursor() as cur:
                    cur.execute(sql, args)
                    return cur.fetchall() if cur.description else None
            except psycopg2.OperationalError:
                # The fault tests stop PostgreSQL: reconnect once it is back.
                if attempt == 29:
                    raise
                time.sleep(1)
                try:
                    self.db.close()
                    self.db = psycopg2.connect(self.env["DATABASE_URL"])
                    self.db.autocommit = True
                except psycopg2.OperationalError:
                    pass

    def rows(self):
        cols = ("external_customer_id, external_conversation_id, event_id, status, phone_number, "
                "email_address, user_id, address_country, address_state, address_zipcode, attributes")
        return {(r[0], r[1]): r for r in self.query(f"SELECT {cols} FROM customer_metadata")}
