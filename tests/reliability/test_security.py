"""Security (issue 3, point 9): secrets never reach the logs; TLS to PostgreSQL works by
configuration alone (sslmode); resources stay flat over a long run (point 8)."""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
from harness import E2ECase, ResultsReader  # noqa: E402
from stream import Stream  # noqa: E402

SECRET_DB = "pg-secret-Hunter2"
SECRET_KAFKA = "kafka-secret-Swordfish"


class TestSecurity(E2ECase):

    def test_tls_to_postgres_and_no_secret_in_logs(self):
        # trust authentication ignores the password, but the worker must still never print it.
        url = self.env["DATABASE_URL"].replace("postgresql://postgres@",
                                               f"postgresql://postgres:{SECRET_DB}@")
        w = self.start_worker(extra_env={"DATABASE_URL": url + "?sslmode=require",
                                         "LOG_LEVEL": "debug"},
                              args=("run", "-X", f"sasl.password={SECRET_KAFKA}",
                                    "-X", "sasl.username=someone"))
        self.produce({"items": [{"externalCustomerId": "tls", "externalConversationId": "1"}]})
        self.wait_results(1, w)
        ssl = self.query("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
                         " WHERE a.application_name = 'metadata-worker'")
        # One connection per lane that has had work (DATABASE_CONNECTIONS): every one TLS.
        self.assertTrue(ssl and all(s for (s,) in ssl), f"a worker connection is not TLS: {ssl}")
        self.stop_worker(w)
        log = "\n".join(w.lines())
        self.assertNotIn(SECRET_DB, log)
        self.assertNotIn(SECRET_KAFKA, log)
        print(f"\n  TLS to PostgreSQL via sslmode=require: yes; {len(w.lines())} debug log lines"
              " checked for the two secrets: none found", end=" ")


class TestResources(E2ECase):
    partitions = 4

    def _run(self, w, reader, stream, done):
        for part, value in stream.messages:
            self.produce_nowait(value, part)
        self.producer.flush(120)
        self.assertTrue(reader.wait_for(done + stream.expected_results, 300), w.dump())
        pid = w.proc.pid
        with open(f"/proc/{pid}/status") as f:
            st = dict(l.split(":", 1) for l in f if ":" in l)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return int(st["VmRSS"].split()[0]) // 1024, int(st["VmHWM"].split()[0]) // 1024, fds

    def produce_nowait(self, value, part):
        while True:
            try:
                self.producer.produce(self.topic, value, partition=part)
                return
            except BufferError:
                self.producer.poll(0.1)

    @unittest.skipIf("asan" in os.environ.get("MW_BIN", ""),
                     "AddressSanitizer's quarantine makes resident memory meaningless")
    def test_memory_and_fds_flat_over_a_10x_longer_stream(self):
        # A prefetch queue smaller than either stream, so that both fill it: what is compared
        # is growth with the stream's length, not how much of a stream fits in the queue.
        w = self.start_worker(args=("run", "-X", "queued.max.messages.kbytes=2048"))
        reader = ResultsReader(self.results_topic)
        short = Stream(20_000, self.partitions, seed=21)
        rss1, hwm1, fds1 = self._run(w, reader, short, 0)
        time.sleep(1)
        long_ = Stream(200_000, self.partitions, seed=22, keys=5000)
        rss2, hwm2, fds2 = self._run(w, reader, long_, len(reader.by_source))
        self.stop_worker(w)
        print(f"\n  after {short.items} items: RSS {rss1} MB (peak {hwm1} MB), {fds1} fds; after "
              f"{short.items + long_.items} more: RSS {rss2} MB (peak {hwm2} MB), {fds2} fds", end=" ")
        self.assertLessEqual(fds2, fds1 + 2, "file descriptors grow")
        self.assertLess(hwm2, hwm1 * 1.5 + 16, "peak memory grows with the stream length")
        reader.close()


class TestDatabaseRefusal(E2ECase):
    """Issue 9, items 2 and 3: PostgreSQL reached and refusing (wrong password, no password,
    missing database or role) is a configuration error: `run` and `migrate` stop with exit 1
    and one clear line within 10 s, never showing the secret; PostgreSQL not reachable at
    start is still waited for. The stack's pg_hba asks members of mw_password_auth for a
    password (tests/harness/stack.sh)."""

    ROLE = "mw_pw_user"
    RIGHT = "Right-pw-4711"
    WRONG = "Wr0ng-Secret-0815"

    def setUp(self):
        super().setUp()
        self.query("DO $$ BEGIN CREATE ROLE mw_password_auth NOLOGIN;"
                   " EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        self.query(f"DO $$ BEGIN CREATE ROLE {self.ROLE} LOGIN SUPERUSER IN ROLE mw_password_auth;"
                   " EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        self.query(f"ALTER ROLE {self.ROLE} PASSWORD '{self.RIGHT}'")

    def url(self, password=None, db=None, user=None):
        auth = (user or self.ROLE) + (f":{password}" if password else "")
        return "postgresql://%s@%s:%s/%s" % (auth, os.environ.get("PGHOST", "127.0.0.1"),
                                             os.environ.get("PGPORT", "5432"), db or self.dbname)

    def refused(self, cmd, url, want):
        w = self.start_worker(extra_env={"DATABASE_URL": url, "LOG_LEVEL": "debug"},
                              args=(cmd,), name=cmd)
        t0 = time.monotonic()
        rc = w.proc.wait(timeout=30)
        secs = time.monotonic() - t0
        errors = [l for l in w.lines() if '"level":"error"' in l]
        log = "\n".join(w.lines())
        self.assertEqual(rc, 1, log)
        self.assertLess(secs, 10, log)
        self.assertEqual(len(errors), 1, log)
        self.assertIn(want, errors[0])
        self.assertNotIn(self.WRONG, log)
        self.assertNotIn(self.RIGHT, log)
        self.assertNotIn("retrying", log)
        return secs

    def test_refused_connections_stop_run_and_migrate(self):
        cases = [("wrong password", self.url(self.WRONG), "password authentication failed"),
                 ("no password", self.url(), "no password supplied"),
                 ("missing database", self.url(self.RIGHT, db="no_such_db"), "3D000"),
                 ("missing role", self.url(self.WRONG, user="no_such_role"), "28000")]
        for what, url, want in cases:
            for cmd in ("run", "migrate"):
                secs = self.refused(cmd, url, want)
                print(f"\n  {what}: `{cmd}` exit 1 after {secs:.1f} s", end="")
        # The right password works (the refusals above were about the credentials).
        w = self.start_worker(extra_env={"DATABASE_URL": self.url(self.RIGHT)})
        self.produce({"items": [{"externalCustomerId": "pw", "externalConversationId": "1"}]})
        self.wait_results(1, w)
        self.stop_worker(w)

    def test_unreachable_database_is_waited_for(self):
        # Nothing listens on port 1: "cannot reach" is retried (containers start PostgreSQL
        # after the worker), and SIGTERM still stops the wait at once.
        url = "postgresql://postgres:%s@127.0.0.1:1/x" % self.WRONG
        w = self.start_worker(extra_env={"DATABASE_URL": url, "LOG_LEVEL": "debug"})
        time.sleep(4)
        self.assertIsNone(w.proc.poll(), w.dump())
        waits = [l for l in w.lines() if "waiting for PostgreSQL" in l]
        self.assertGreaterEqual(len(waits), 2, w.dump())
        rc, secs = self.stop_worker(w)
        self.assertLess(secs, 5)
        self.assertNotIn(self.WRONG, "\n".join(w.lines()))


if __name__ == "__main__":
    unittest.main()
