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


if __name__ == "__main__":
    unittest.main()
