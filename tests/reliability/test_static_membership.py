"""A crashed worker back in seconds (issue 13, item 5): static group membership.

Two workers, A and B, share a paced stream over 4 partitions (2 each). A is SIGKILLed
mid-stream and started again ~1 s later under the same name.

- With KAFKA_GROUP_INSTANCE_ID (A: w-0, B: w-1) the coordinator takes the new A back as the
  same member: it gets A's partitions again at once, without a rebalance, and without waiting
  for the killed A's session to expire (45 s by default: worker/kafka.c). B must keep exactly
  its partitions all along (no revocation, no assignment): nobody takes A's partitions during
  its short absence. Required: ingestion of A's partitions resumes under 5 s after the restart.
- Without it, the new A joins as a new member, and the coordinator holds that rebalance until
  the killed A's session expires (`-X session.timeout.ms=10000` here, to keep the test short):
  A's partitions stand still for about the session timeout. The stall is measured, so the
  static case's gain is shown to be real.

"Resumed" is the first result of one of A's partitions that a worker produced after the
restart (or, for the stall, after the kill): the results' create times, stamped by the
worker's producer, not when the test read them. Both end with FaultBase.finish: the table
equals a clean run's, every item has exactly its result, repeats are identical. Each prints
its figures (docs/benchmarks.md, Reliability)."""

import datetime
import json
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
from harness import ResultsReader  # noqa: E402
from stream import Stream  # noqa: E402
from test_faults import FaultBase  # noqa: E402

SESSION_TIMEOUT_S = 10  # the dynamic case's -X session.timeout.ms, in s
RESTART_AFTER_S = 1.0   # how long A stays dead


def log_time(t):
    """A worker log time (UTC ISO with ms and Z) as seconds since the epoch."""
    return datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


# Infrastructure faults (the network, the brokers, the group) that add no worker code path of
# their own under the sanitizer: `make test` runs them in the normal build's pass only
# (tests/run-all.sh sets MW_INFRA_FAULTS=0 for the asan pass, to keep the suite near 30 min).
@unittest.skipIf(os.environ.get("MW_INFRA_FAULTS") == "0", "run in the normal build's pass")
class StaticMembershipTests(FaultBase):
    partitions = 4

    def partition_events(self, w):
        """(time s, 'assigned'|'revoked'|'lost', partition) of the input topic, from w's log."""
        out = []
        for line in w.lines():
            if '"partition ' not in line:
                continue
            e = json.loads(line)
            if e.get("topic") == self.topic and e["msg"] in (
                    "partition assigned", "partition revoked", "partition lost"):
                out.append((log_time(e["time"]), e["msg"].split()[1], e["partition"]))
        return out

    def owned(self, w):
        own = set()
        for _, kind, p in self.partition_events(w):
            (own.add if kind == "assigned" else own.discard)(p)
        return own

    def wait_balanced(self, reader, a, b, timeout=30):
        """Polls the results until A and B own 2 partitions each; returns A's."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            oa, ob = self.owned(a), self.owned(b)
            if len(oa) == 2 and len(ob) == 2 and not oa & ob:
                return oa
            reader.poll(0.2)
        self.fail(f"A and B not balanced 2/2 within {timeout}s: A {self.owned(a)}, "
                  f"B {self.owned(b)}; A's log:\n" + a.dump())

    @staticmethod
    def first_result_after(reader, parts, t, timeout):
        """Polls until a result of one of parts created after t (epoch s) is read; returns its
        create time, or None."""
        end = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < end:
            for ts, p in reader.times[seen:]:
                if p in parts and ts > t:
                    return ts
            seen = len(reader.times)
            reader.poll(0.1)
        return None

    def crash_and_restart(self, static, seed):
        """The run of both cases; returns (kill→resume s, restart→resume s, A's partitions,
        the workers, the reader, the stream, the producer thread)."""
        stream = Stream(20_000, self.partitions, seed=seed)
        reader = ResultsReader(self.results_topic, keep_times=True)
        self.assertTrue(reader.wait_assigned(), "the results reader got no partition")
        producer = self.start_stream(stream, 16)
        if static:
            env = lambda name: {"KAFKA_GROUP_INSTANCE_ID": name}  # noqa: E731
            args = ("run",)  # the default session timeout: 45 s
        else:
            env = lambda name: {}  # noqa: E731
            args = ("run", "-X", f"session.timeout.ms={SESSION_TIMEOUT_S * 1000}")
        a = self.start_worker(extra_env=env("w-0"), args=args, name="A")
        time.sleep(0.5)
        b = self.start_worker(extra_env=env("w-1"), args=args, name="B")
        parts = self.wait_balanced(reader, a, b)
        reader.poll(3)  # both at work
        before = [ts for ts, p in reader.times if p in parts]
        self.assertTrue(before, "no result of A's partitions before the kill:\n" + a.dump())
        self.assertLess(self.produced, len(stream.messages), "the kill came after the stream")
        b_events = len(self.partition_events(b))
        rc, _ = a.stop(signal.SIGKILL)
        t_kill = time.time()  # A is gone (waited for): any later result is another's
        self.assertEqual(rc, -signal.SIGKILL, "the kill found A exited:\n" + a.dump())
        reader.poll(RESTART_AFTER_S)
        t_restart = time.time()
        a2 = self.start_worker(extra_env=env("w-0"), args=args, name="A2")
        resumed = self.first_result_after(reader, parts, t_kill,
                                          timeout=SESSION_TIMEOUT_S + 30)
        self.assertIsNotNone(resumed, "A's partitions never resumed; A2's log:\n" + a2.dump())
        # B's own partitions never moved during A's absence in the static case; in the dynamic
        # one, B is asked to rejoin and may be given some of A's partitions.
        if static:
            self.assertEqual(len(self.partition_events(b)), b_events,
                             "B's partitions moved while A was away:\n" + b.dump())
            self.assertEqual(self.owned(a2), parts, "A2 did not get A's partitions back:\n"
                             + a2.dump())
        return (resumed - t_kill, resumed - t_restart, t_restart, parts, [a, b, a2], reader,
                stream, producer)

    def test_1_static_member_back_at_once(self):
        """KAFKA_GROUP_INSTANCE_ID: A's partitions resume under 5 s after its restart, B keeps
        exactly its own."""
        gap, resume, t_restart, parts, ws, reader, stream, producer = \
            self.crash_and_restart(static=True, seed=31)
        a, b, a2 = ws
        assigned = [t for t, kind, _ in self.partition_events(a2) if kind == "assigned"]
        self.assertTrue(assigned, "A2 logged no assignment:\n" + a2.dump())
        print(f"\n  static membership: A's partitions {sorted(parts)} resumed "
              f"{resume:.2f}s after A's restart ({gap:.2f}s after the SIGKILL, "
              f"{RESTART_AFTER_S:.0f}s dead); A2 assigned {assigned[0] - t_restart:.2f}s after "
              f"its start; B's partitions unmoved", end=" ")
        self.assertLess(resume, 5.0, "a static member's restart must resume within 5 s")
        producer.join(300)
        self.assertEqual([kind for _, kind, _ in self.partition_events(b)], ["assigned"] * 2,
                         "B's partitions moved after A's return (2 assigned at the start, then "
                         "none until the final stop):\n" + b.dump())
        self.finish(stream, producer, reader, ws, "static membership",
                    restart_to_results_s=round(resume, 2), kill_to_results_s=round(gap, 2))

    def test_2_dynamic_member_waits_for_the_session(self):
        """Without it (today's default): A's partitions stand still for about the session
        timeout (10 s here, 45 s by default) from the kill."""
        gap, resume, _, parts, ws, reader, stream, producer = \
            self.crash_and_restart(static=False, seed=32)
        print(f"\n  dynamic membership (session.timeout.ms {SESSION_TIMEOUT_S * 1000}): A's "
              f"partitions {sorted(parts)} stalled {gap:.2f}s from the SIGKILL "
              f"({resume:.2f}s after A's restart)", end=" ")
        # The coordinator waits for the killed member's session to expire: counted from its
        # last heartbeat (up to heartbeat.interval.ms, 1 s, before the kill), plus the
        # rebalance and the first transaction.
        self.assertGreater(gap, SESSION_TIMEOUT_S - 1.5,
                           "resumed before the session timeout: the static case's gain is not "
                           "shown by this comparison")
        self.assertLess(gap, SESSION_TIMEOUT_S + 10)
        self.finish(stream, producer, reader, ws, "dynamic membership",
                    kill_to_results_s=round(gap, 2))


if __name__ == "__main__":
    unittest.main()
