"""Silent networks (issue 13, item 4): the worker's path to PostgreSQL, then to the broker,
goes through a fault proxy (faultproxy.py: read its docstring for what its black hole stands
for and how the broker's advertised address is kept behind it). Mid-stream the proxy black-holes
the path for 30 s (nothing forwarded, nothing closed), then adds 200 ms each way and drops 10%
of connections (new ones, and each established one
once a second) for 10 s, then forwards normally. Each test checks that the worker noticed the
black hole within the bound the defaults give (docs/operations.md, "Silent networks"), kept its
partitions, never exited, and ended with the exact table and every result (FaultBase.finish),
and prints how long the black hole took to notice and each fault to recover from."""

import datetime
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultproxy import FaultProxy  # noqa: E402
from test_faults import FaultBase  # noqa: E402
from harness import ResultsReader  # noqa: E402
from stream import Stream  # noqa: E402

HOLE_S, DEGRADED_S = 30, 10
NOTICE_BOUND_S = 30  # the target of issue 13; the defaults give 25 s (PostgreSQL), 20 s (Kafka)


def log_time(line):
    e = json.loads(line)
    t = datetime.datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    return t.replace(tzinfo=datetime.timezone.utc).timestamp(), e


# Infrastructure faults (the network, the brokers, the group) that add no worker code path of
# their own under the sanitizer: `make test` runs them in the normal build's pass only
# (tests/run-all.sh sets MW_INFRA_FAULTS=0 for the asan pass, to keep the suite near 30 min).
@unittest.skipIf(os.environ.get("MW_INFRA_FAULTS") == "0", "run in the normal build's pass")
class SilentNetworkTests(FaultBase):
    def run_faults(self, proxy, reader):
        """Black hole, then latency and drops, then forward; reads results all along. Returns
        the wall-clock instants (epoch s) of the hole's start and end and of the faults' end,
        and the (instant, results count) samples."""
        samples = []

        def read_for(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                reader.poll(0.2)
                samples.append((time.time(), len(reader.by_source)))
        read_for(6)
        self.assertGreater(len(reader.by_source), 0, "no result before the fault")
        hole = time.time()
        proxy.blackhole()
        read_for(HOLE_S)
        hole_end = time.time()
        for _ in range(DEGRADED_S):  # each second, each connection is reset with p = 10%
            proxy.drops(0.10, latency_ms=200)
            read_for(1)
        proxy.forward()
        return hole, hole_end, time.time(), samples

    @staticmethod
    def first_after(samples, t):
        """When the results count first grew after instant t, in seconds after t (None)."""
        before = max([c for s, c in samples if s <= t] or [0])
        return next((round(s - t, 1) for s, c in samples if s > t and c > before), None)

    @staticmethod
    def grown(samples, t0, t1):
        """Results that arrived between instants t0 and t1."""
        at = lambda t: max([c for s, c in samples if s <= t] or [0])  # noqa: E731
        return at(t1) - at(t0)

    def check_membership(self, w):
        lines = w.lines()
        moved = [l for l in lines if '"partition revoked"' in l or '"partition lost"' in l]
        self.assertEqual(len(moved), self.partitions,
                         "partitions moved during the faults (only the final stop may revoke)")
        self.assertEqual(sum('"partition assigned"' in l for l in lines), self.partitions)

    def noticed(self, w, t0, is_notice):
        """The first log line after t0 that shows the fault noticed: (seconds after t0, line)."""
        for line in w.lines():
            t, e = log_time(line)
            if t >= t0 and is_notice(e):
                return round(t - t0, 1), e
        return None, None

    def test_1_postgres_silent(self):
        stream = Stream(30_000, self.partitions, seed=21)
        proxy = FaultProxy((os.environ.get("PGHOST", "127.0.0.1"), int(os.environ["PGPORT"])))
        url = "postgresql://%s@127.0.0.1:%d/%s" % (os.environ.get("PGUSER", "postgres"),
                                                  proxy.port, self.dbname)
        reader = ResultsReader(self.results_topic)
        self.assertTrue(reader.wait_assigned(), "the results reader got no partition")
        producer = self.start_stream(stream, 40)
        w = self.start_worker(extra_env={"DATABASE_URL": url})
        hole, hole_end, end, samples = self.run_faults(proxy, reader)
        self.assertIsNone(w.proc.poll(), "the worker exited during the faults:\n" + w.dump())
        notice_s, line = self.noticed(
            w, hole, lambda e: e.get("what") == "database" or "PostgreSQL" in e.get("error", ""))
        self.assertIsNotNone(notice_s, "the black hole was never noticed:\n" + w.dump())
        self.assertLess(notice_s, NOTICE_BOUND_S, f"noticed late: {line}")
        after_hole = self.first_after(samples, hole_end)
        self.finish(stream, producer, reader, [w], "postgres black hole",
                    hole_s=HOLE_S, noticed_s=notice_s, noticed_by=line.get("error", line["msg"])[:60],
                    results_again_after_hole_s=after_hole,
                    results_while_degraded=self.grown(samples, hole_end, end),
                    proxy=f"{proxy.accepted} connections, {proxy.refused} refused, "
                          f"{proxy.resets} reset")
        proxy.close()
        self.check_membership(w)
        self.assertEqual(reader.repeats, 0, "results repeated although the worker kept its partitions")

    def test_2_broker_silent(self):
        listener = os.environ.get("KAFKA_PROXIED_LISTENER")
        port = int(os.environ.get("KAFKA_PROXY_PORT", "0"))
        if not listener or not port:
            self.skipTest("the stack has no PROXIED listener (tests/harness/stack.sh)")
        host, lport = listener.rsplit(":", 1)
        proxy = FaultProxy((host, int(lport)), listen_port=port)
        stream = Stream(30_000, self.partitions, seed=22)
        reader = ResultsReader(self.results_topic)
        self.assertTrue(reader.wait_assigned(), "the results reader got no partition")
        producer = self.start_stream(stream, 40)
        w = self.start_worker(extra_env={"KAFKA_BROKERS": f"127.0.0.1:{port}"})
        hole, hole_end, end, samples = self.run_faults(proxy, reader)
        self.assertIsNone(w.proc.poll(), "the worker exited during the faults:\n" + w.dump())
        notice_s, line = self.noticed(
            w, hole, lambda e: e.get("level") in ("warn", "error")
            and ("timed out" in json.dumps(e).lower() or "TIMED_OUT" in json.dumps(e)))
        self.assertIsNotNone(notice_s, "the black hole was never noticed:\n" + w.dump())
        self.assertLess(notice_s, NOTICE_BOUND_S, f"noticed late: {line}")
        after_hole = self.first_after(samples, hole_end)
        self.finish(stream, producer, reader, [w], "broker black hole",
                    hole_s=HOLE_S, noticed_s=notice_s,
                    noticed_by=(line.get("reason") or line["msg"])[:60],
                    results_again_after_hole_s=after_hole,
                    results_while_degraded=self.grown(samples, hole_end, end),
                    proxy=f"{proxy.accepted} connections, {proxy.refused} refused, "
                          f"{proxy.resets} reset")
        proxy.close()
        self.check_membership(w)


if __name__ == "__main__":
    unittest.main()
