"""PostgreSQL failing over (issue 13, item 3). The worker reaches PostgreSQL through a
multi-host DATABASE_URL (target_session_attrs=read-write) naming a primary and its streaming
standby (tests/reliability/pgcluster.py: pg_basebackup -R, asynchronous). Mid-stream the
standby falls behind (its WAL receiver stopped), the primary is SIGKILLed, the standby promoted:
the transactions lost with the old primary took their offsets with them, and the worker, seeing
its partitions' recorded offsets go back, consumes those messages again and re-applies exactly
them. Then a primary that turns read-only for 10 s: writes are refused with 25006 and retried,
never taken for data errors. Both end with FaultBase.finish: the table of a clean run, every
result, repeats identical. Each prints its figures (docs/benchmarks.md, Reliability)."""

import datetime
import json
import os
import sys
import time
import unittest

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pgcluster import PgCluster  # noqa: E402
from test_faults import FaultBase  # noqa: E402
from harness import ResultsReader  # noqa: E402
from stream import Stream  # noqa: E402


def log_time(line):
    """A worker log line's time, in s since the epoch."""
    t = json.loads(line)["time"]
    return datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


class PgFailoverTests(FaultBase):
    def setUp(self):
        super().setUp()  # topics, and a database on the suite's server (unused)
        self.cl = PgCluster()
        try:
            self.cl.start_primary()
            self.cl.query(self.cl.p1, f'CREATE DATABASE "{self.dbname}"')
            self.env["DATABASE_URL"] = self.cl.url(self.cl.p1, self.dbname)
            self.migrate()
        except Exception:
            self.cl.stop()
            raise
        self.db.close()
        self.db = psycopg2.connect(self.env["DATABASE_URL"])
        self.db.autocommit = True

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            self.cl.stop()

    def test_1_failover_to_a_standby_that_lacks_the_last_commits(self):
        cl = self.cl
        cl.make_standby()  # after migrate: the schema and the database are on both
        self.env["DATABASE_URL"] = cl.multi_url(self.dbname)
        self.db.close()
        self.db = psycopg2.connect(self.env["DATABASE_URL"])
        self.db.autocommit = True
        stream = Stream(30_000, self.partitions, seed=31)
        reader = ResultsReader(self.results_topic, keep_times=True)
        self.assertTrue(reader.wait_assigned(), "the results reader got no partition")
        producer = self.start_stream(stream, 20)
        w = self.start_worker({"LOG_LEVEL": "debug"})
        time.sleep(7)
        cl.detach_standby()
        time.sleep(1.5)  # the primary commits on; the standby gets none of it
        last_replayed = cl.query(cl.p2, "SELECT extract(epoch FROM pg_last_xact_replay_timestamp())")[0][0]
        primary_next = cl.query(cl.p1, "SELECT coalesce(sum(next_offset), 0) FROM customer_metadata_offsets",
                                self.dbname)[0][0]
        t_kill, kill_wall = time.monotonic(), time.time()
        children = cl.kill_primary()
        time.sleep(2)  # an operator's (or a failover manager's) delay
        standby_next = cl.query(cl.p2, "SELECT coalesce(sum(next_offset), 0) FROM customer_metadata_offsets",
                                self.dbname)[0][0]
        cl.promote()
        t_promoted, promote_wall = time.monotonic(), time.time()
        self.assertIsNone(w.proc.poll(), "the worker exited at the failover:\n" + w.dump())
        # Results flowing again: the first result the worker produced after the promotion
        # (none can come between the kill and the promotion: nothing commits).
        end = time.monotonic() + 60
        first = None
        while first is None and time.monotonic() < end:
            reader.poll(0.5)
            after = [t for t, _ in reader.times if t >= promote_wall]
            first = min(after) if after else None
        self.assertIsNotNone(first, "no result after the promotion:\n" + w.dump())
        self.finish(stream, producer, reader, [w], "postgres failover",
                    kill_to_promote_s=round(t_promoted - t_kill, 1),
                    kill_to_results_s=round(first - kill_wall, 1),
                    promote_to_results_s=round(first - promote_wall, 1))
        lines = w.lines()
        rewinds = [json.loads(l) for l in lines if "PostgreSQL lost committed transactions" in l]
        lost_msgs = sum(r["messages_lost"] for r in rewinds)
        lost_txns = sum(1 for l in lines if '"batch done"' in l
                        and float(last_replayed) < log_time(l) <= kill_wall)
        print(f"\n  failover: primary SIGKILLed with {children} children; the standby lacked "
              f"{primary_next - standby_next} messages' offsets (primary just before the kill: "
              f"{primary_next}, standby: {standby_next}), {lost_txns} transactions committed "
              f"after its last replayed one; the worker re-applied {lost_msgs} messages on "
              f"{len(rewinds)} partitions", end=" ")
        self.assertGreater(len(rewinds), 0, "the worker saw no offset go back:\n" + w.dump())
        self.assertGreaterEqual(lost_msgs, primary_next - standby_next)

    def test_2_primary_read_only_for_a_while(self):
        cl = self.cl
        stream = Stream(30_000, self.partitions, seed=32)
        reader = ResultsReader(self.results_topic, keep_times=True)
        self.assertTrue(reader.wait_assigned(), "the results reader got no partition")
        producer = self.start_stream(stream, 20)
        w = self.start_worker()
        time.sleep(5)
        cl.query(cl.p1, "ALTER SYSTEM SET default_transaction_read_only = on")
        cl.query(cl.p1, "SELECT pg_reload_conf()")
        t0 = time.monotonic()
        time.sleep(10)
        c = cl.connect(cl.p1)
        with c.cursor() as cur:
            cur.execute("SET default_transaction_read_only = off")
            cur.execute("ALTER SYSTEM RESET default_transaction_read_only")
            cur.execute("SELECT pg_reload_conf()")
        c.close()
        read_only, writable_wall = time.monotonic() - t0, time.time()
        self.assertIsNone(w.proc.poll(), "the worker exited while PostgreSQL was read-only:\n" + w.dump())
        end = time.monotonic() + 60
        first = None
        while first is None and time.monotonic() < end:
            reader.poll(0.5)
            after = [t for t, _ in reader.times if t >= writable_wall]
            first = min(after) if after else None
        self.assertIsNotNone(first, "no result once writable again:\n" + w.dump())
        self.finish(stream, producer, reader, [w], "postgres read-only",
                    read_only_s=round(read_only, 1),
                    writable_to_results_s=round(first - writable_wall, 1))
        lines = w.lines()
        refused = [l for l in lines if "25006" in l]
        print(f"\n  read-only: {len(refused)} log lines with 25006 (retried)", end=" ")
        self.assertGreater(len(refused), 0, "no write was refused with 25006:\n" + w.dump())
        self.assertFalse(any("FAIL_DB_REJECTED" in json.dumps(r) for r in reader.by_source.values()))
        self.assertFalse(any("refused an item" in l for l in lines), "25006 taken for a data error")


if __name__ == "__main__":
    unittest.main()
