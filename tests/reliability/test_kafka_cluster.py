"""A three-broker KRaft cluster losing its leaders (issue 13, item 2).

The worker (and its PostgreSQL, from the normal stack) runs against a cluster of three
combined broker+controller nodes (tests/reliability/kcluster.py): input topic 6 partitions,
results and DLQ, all with replication factor 3 and min.insync.replicas 2. A paced stream of
30,000 items over ~25 s; mid-stream:

1. SIGKILL the leader of the busiest input partition (most bytes in the stream). The cluster
   keeps a quorum (2 of 3) and a full ISR (2 >= min ISR): once the controller fences the dead
   node (broker.session.timeout.ms, 9 s) its partitions get new leaders, and ingestion of them
   resumes.
2. Once that partition flows again (and at least 8 s after 1), SIGKILL its new leader: one node
   is left. That is below min ISR (writes with acks=all, the worker's results and the test's
   producer alike, are refused or wait) and below the controller quorum (no leader elections).
   The worker must wait: not exit, not lose, not skip.
3. ~10 s later, restart both nodes.

Then FaultBase.finish: the table equals a clean run's column by column, every item has
exactly its result, repeats are identical, the worker never exited by itself.

Stalls printed (ingestion = the next offsets the worker records in PostgreSQL with its rows,
sampled every 0.25 s; results = distinct results the test read):
- failover: the killed leader's partition, from the kill to its next applied offset; and the
  largest gap of all ingestion and of all results between kill 1 and kill 2;
- outage: from kill 2 to the restart (nothing can be written), and from the restart to
  ingestion and results flowing again.
"""

import os
import shutil
import signal
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
import harness  # noqa: E402
import test_faults  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402
from harness import ResultsReader  # noqa: E402
from kcluster import Cluster  # noqa: E402
from stream import Stream  # noqa: E402
from test_faults import FaultBase  # noqa: E402

OUTAGE_S = 10  # how long only one node is up


# Infrastructure faults (the network, the brokers, the group) that add no worker code path of
# their own under the sanitizer: `make test` runs them in the normal build's pass only
# (tests/run-all.sh sets MW_INFRA_FAULTS=0 for the asan pass, to keep the suite near 30 min).
@unittest.skipIf(os.environ.get("MW_INFRA_FAULTS") == "0", "run in the normal build's pass")
class KafkaClusterTests(FaultBase):
    partitions = 6
    replication = 3

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="mw-kcluster-")
        cls.cluster = Cluster(cls.tmp)
        try:
            cls.cluster.start()
        except Exception:
            cls.cluster.stop()
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise
        # E2ECase, ResultsReader and FaultBase.start_stream read these module globals.
        cls.saved = harness.BROKERS
        harness.BROKERS = test_faults.BROKERS = cls.cluster.bootstrap

    @classmethod
    def tearDownClass(cls):
        harness.BROKERS = test_faults.BROKERS = cls.saved
        cls.cluster.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def leader(self, partition, timeout=30):
        """The node that leads partition of the input topic, per the cluster's metadata (-1
        while it has none)."""
        a = AdminClient({"bootstrap.servers": self.cluster.bootstrap, "log_level": 0})
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                t = a.list_topics(self.topic, timeout=5).topics[self.topic]
                if t.error is None and partition in t.partitions:
                    return t.partitions[partition].leader
            except Exception:  # noqa: BLE001 - retried
                pass
            time.sleep(0.3)
        self.fail(f"no metadata for {self.topic} within {timeout}s")

    def applied(self):
        """{partition: next_offset} the worker recorded in PostgreSQL."""
        return dict(self.query("SELECT partition, next_offset FROM customer_metadata_offsets"
                               " WHERE consumer_group = %s AND topic = %s", self.group, self.topic))

    def watch(self, reader, seconds, until=None):
        """Reads results and samples progress every ~0.25 s for `seconds` (or until
        until() is true); samples: (t, {partition: next offset}, results read)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            reader.poll(0.25)
            self.samples.append((time.monotonic(), self.applied(), len(reader.by_source)))
            if until and until():
                return True
        return False

    def first_progress(self, t_from, what):
        """The first sample time after t_from at which `what(sample)` grew past its value at
        t_from, minus t_from (None if it never did)."""
        base = None
        for t, applied, results in self.samples:
            v = what(applied, results)
            if t < t_from:
                base = v
                continue
            if base is None:
                base = v
            elif v > base:
                return t - t_from
        return None

    def largest_gap(self, t_from, t_to, what):
        """The longest time within [t_from, t_to] with no growth of `what(sample)`."""
        last, prev, gap = t_from, None, 0.0
        for t, applied, results in self.samples:
            v = what(applied, results)
            if t >= t_from and prev is not None and v > prev:
                gap = max(gap, min(t, t_to) - last)
                last = t
            prev = v
            if t > t_to:
                break
        return round(max(gap, min(t_to, self.samples[-1][0]) - last), 2)

    def test_leader_killed_then_second_broker(self):
        stream = Stream(30_000, self.partitions, seed=31)
        sizes = [0] * self.partitions
        for p, v in stream.messages:
            sizes[p] += len(v)
        busiest = max(range(self.partitions), key=lambda p: sizes[p])
        reader = ResultsReader(self.results_topic)
        self.assertTrue(reader.wait_assigned(), "the results reader got no partition")
        self.samples = []
        producer = self.start_stream(stream, 25)
        w = self.start_worker()
        ingest = lambda a, r: sum(a.values())  # noqa: E731
        results = lambda a, r: r  # noqa: E731
        part = lambda a, r: a.get(busiest, 0)  # noqa: E731

        self.assertTrue(self.watch(reader, 30, lambda: self.samples[-1][2] > 0),
                        "no result within 30 s:\n" + w.dump())
        self.watch(reader, 3)
        first = self.leader(busiest)
        t_kill1 = time.monotonic()
        self.cluster.kill(first)
        # Until the killed leader's partition is applied again, at least 8 s.
        resumed = self.watch(reader, 45, lambda: self.first_progress(t_kill1, part) is not None)
        self.assertTrue(resumed, f"partition {busiest} not applied again within 45 s of its "
                        f"leader's kill:\n" + w.dump())
        failover = self.first_progress(t_kill1, part)
        self.watch(reader, max(0.0, t_kill1 + 8 - time.monotonic()))
        # The controller moves leadership only once it fences the dead node
        # (broker.session.timeout.ms, 9 s by default): ask again until it has.
        probe = {"next": 0.0, "leader": first}

        def moved():
            if time.monotonic() >= probe["next"]:
                probe["next"] = time.monotonic() + 1.0
                probe["leader"] = self.leader(busiest)
            return probe["leader"] not in (first, -1)
        self.watch(reader, 30, moved)
        second = probe["leader"]
        self.assertNotIn(second, (first, -1), "no new leader within 38 s of the kill")
        t_kill2 = time.monotonic()
        self.cluster.kill(second)
        self.watch(reader, OUTAGE_S)
        self.assertIsNone(w.proc.poll(), "the worker exited with one node left:\n" + w.dump())
        t_restart = time.monotonic()
        self.cluster.restart(first)
        self.cluster.restart(second)
        # Meanwhile, about once a second: when do all three nodes show in the metadata
        # again (the JVMs' start and registration, a share of the stall the cluster causes)?
        probe = {"next": 0.0, "rejoined": None}

        def back():
            now = time.monotonic()
            if probe["rejoined"] is None and now >= probe["next"]:
                probe["next"] = now + 1.0
                if self.cluster.brokers_up() == {1, 2, 3}:
                    probe["rejoined"] = time.monotonic() - t_restart
            return (probe["rejoined"] is not None
                    and self.first_progress(t_restart, results) is not None
                    and self.first_progress(t_restart, ingest) is not None)
        self.watch(reader, 60, back)
        t_back = time.monotonic()
        self.cluster.wait_brokers((1, 2, 3), 60)
        rejoined = probe["rejoined"] or time.monotonic() - t_restart
        figures = dict(
            cluster_start_s=round(self.cluster.start_s, 1),
            busiest_partition=busiest, first_killed=first, second_killed=second,
            failover_partition_stall_s=round(failover, 2),
            kill1_largest_gap_ingest_s=self.largest_gap(t_kill1, t_kill2, ingest),
            kill1_largest_gap_results_s=self.largest_gap(t_kill1, t_kill2, results),
            one_node_s=round(t_restart - t_kill2, 1),
            kill2_to_last_ingest_s=self.last_before(t_kill2, t_restart, ingest),
            restart_to_ingest_s=round(self.first_progress(t_restart, ingest), 2),
            restart_to_results_s=round(self.first_progress(t_restart, results), 2),
            restart_to_3_brokers_s=round(rejoined, 1),
            watched_s=round(t_back - t_kill1, 1))
        self.finish(stream, producer, reader, [w], "kafka cluster failover", **figures)
        print(f"\n  stalls: failover of partition {busiest} (leader node {first} SIGKILLed) "
              f"{figures['failover_partition_stall_s']}s; largest gap after it: ingestion "
              f"{figures['kill1_largest_gap_ingest_s']}s, results "
              f"{figures['kill1_largest_gap_results_s']}s; one node for "
              f"{figures['one_node_s']}s; after both restarted: ingestion in "
              f"{figures['restart_to_ingest_s']}s, results in "
              f"{figures['restart_to_results_s']}s (all three nodes registered again in "
              f"{figures['restart_to_3_brokers_s']}s)", end=" ")

    def last_before(self, t_from, t_to, what):
        """How long after t_from `what` last grew before t_to (None: not at all)."""
        last, prev = None, None
        for t, applied, results in self.samples:
            v = what(applied, results)
            if t_from <= t <= t_to and prev is not None and v > prev:
                last = t - t_from
            prev = v
        return None if last is None else round(last, 2)


if __name__ == "__main__":
    unittest.main()
