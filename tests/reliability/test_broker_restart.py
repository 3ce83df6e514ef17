"""Kafka broker restart (issue 9): how soon after the broker is back do results flow again?

A deterministic stream (tests/e2e/stream.py) runs through one worker while the broker is
stopped and started again twice, for 10 s and then for 20 s (test_faults.py's outage). For
each restart the test measures, from the moment the broker is back (stack.sh kafka-start
returns once it answers metadata) until

  - written: the results topic grows again (its high watermarks, read by a fresh client);
  - read: the ResultsReader has read a result that was not in Kafka when it came back;
  - caught up: every message produced before it came back has its results;

and at the end until the whole stream has its results. Two waits used to delay the worker:
librdkafka's reconnect backoff (up to 10 s between attempts: results 2.5-8 s late), and,
when the time without a successful heartbeat passed session.timeout.ms (30 s, reached by a
20 s stop), a lost membership, a rejoin that the restarted broker held for another 30 s, and
everything since the last commit consumed again. So: results read within RESUME_BOUND_S of
each restart, caught up within CATCH_UP_BOUND_S, and no partition lost or revoked before the
final stop. Then, as in test_faults.py, the table must equal a clean run's, every item must
have a result and repeated results must be identical.

The test's own clients (input producer, reader, probe) reconnect within 0.5 s, so that what
is measured is the worker. Two restarts also because where a restart falls in the old 10 s
reconnect cycle is chance: one restart alone would often miss the old delay.
"""

import json
import os
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition  # noqa: E402
from harness import BROKERS, ResultsReader, stack  # noqa: E402
from stream import Stream, table_rows  # noqa: E402
from test_faults import FaultBase  # noqa: E402


OUTAGES_S = (10, 20)    # broker stopped this long (plus the stop and the start themselves)
# Measured with worker/kafka.c's settings (6 runs, a busy 2-core machine): read 0.2-0.9 s,
# caught up 1.0-4.2 s after the broker was back. Before: read 2.5-8 s (more than 3 s in at
# least one restart of nearly every run), caught up 4-9 s, and 30-31 s after the 20 s stop,
# which lost the group membership (3 runs of 3). With another full suite running beside it,
# a fixed build read 2.5 s after a restart: the bound leaves room for that; the 20 s stop's
# catch-up (and the partitions kept) are what tell the two apart.
RESUME_BOUND_S = 5.0
CATCH_UP_BOUND_S = 10.0
RESULTS_PARTITIONS = 3  # E2ECase creates the results topic with 3 partitions

# The test's own clients must not be the ones waiting for the broker.
FAST_RECONNECT = {"reconnect.backoff.max.ms": 500}


def results_of(value):
    """How many results a stream message gets: one per item, one for a bad message."""
    try:
        items = json.loads(value)["items"]
        return len(items) if isinstance(items, list) and items else 1
    except (ValueError, TypeError, KeyError, RecursionError):
        return 1


class AssignedReader(ResultsReader):
    """A ResultsReader that reads every partition by assignment (no group to rejoin after a
    restart) and reconnects within 0.5 s."""

    def __init__(self, topic, partitions):  # noqa: D107 - same state as ResultsReader
        self.c = Consumer({"bootstrap.servers": BROKERS, "group.id": f"reader-{uuid.uuid4().hex}",
                           "enable.auto.commit": False, **FAST_RECONNECT})
        self.c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        self.by_source = {}
        self.total = 0
        self.repeats = 0
        self.differing = []
        self.times = None


class BrokerRestartTest(FaultBase):
    partitions = 4

    def results_end(self, probe):
        """Messages in the results topic (sum of high watermarks); None while the broker
        cannot tell."""
        try:
            return sum(probe.get_watermark_offsets(TopicPartition(self.results_topic, p),
                                                   timeout=1.0, cached=False)[1]
                       for p in range(RESULTS_PARTITIONS))
        except KafkaException:
            return None

    def restart_broker(self, reader, worker, stream, outage_s):
        """Stops the broker outage_s and starts it. Returns the moment it was back and the
        figures: the whole outage in s; then, from that moment, written, read, caught up."""
        t0 = time.monotonic()
        stack("kafka-stop")
        time.sleep(outage_s)
        stack("kafka-start")
        back = time.monotonic()
        outage = back - t0
        backlog = sum(results_of(v) for _, v in stream.messages[:self.produced])
        self.assertIsNone(worker.proc.poll(), "the worker exited during the outage:\n" + worker.dump())
        probe = Consumer({"bootstrap.servers": BROKERS, "group.id": f"probe-{uuid.uuid4().hex}",
                          **FAST_RECONNECT})
        try:
            base = None
            while base is None and time.monotonic() - back < 30:
                base = self.results_end(probe)
            self.assertIsNotNone(base, "the restarted broker does not answer ListOffsets")
            written = read = caught_up = None
            while caught_up is None and time.monotonic() - back < 60:
                reader.poll(0.1)
                now = time.monotonic()
                if written is None:
                    end = self.results_end(probe)
                    if end is not None and end > base:
                        written = now - back
                if read is None and reader.total > base:
                    read = now - back
                    written = written if written is not None else read
                if read is not None and len(reader.by_source) >= backlog:
                    caught_up = now - back
        finally:
            probe.close()
        self.assertIsNotNone(caught_up, f"results not back within 60 s of the broker's restart "
                             f"(written {written}, read {read}; {len(reader.by_source)} items "
                             f"of the {backlog} produced before it have results):\n"
                             + worker.dump())
        return back, (outage, written, read, caught_up)

    def test_broker_restart_resumes_within_seconds(self):
        stream = Stream(60_000, self.partitions, seed=21)
        reader = AssignedReader(self.results_topic, RESULTS_PARTITIONS)
        w = self.start_worker()
        # Paced over 90 s: each restart must find input still coming, or there is no result to
        # wait for after it. The second stop comes ~30 s in (5 s + the first outage with its
        # stop and start + 5 s); paced over 50 s, a slow broker stop/start once let the whole
        # stream be answered before it.
        producer = self.start_stream(stream, 90, FAST_RECONNECT)
        figures = []
        for outage_s in OUTAGES_S:
            # Mid-stream: results flowing (and the group settled) before each stop.
            t = time.monotonic()
            while time.monotonic() - t < 5:
                reader.poll(0.2)
            before = len(reader.by_source)
            self.assertGreater(before, 0, "no result before the restart:\n" + w.dump())
            back, fig = self.restart_broker(reader, w, stream, outage_s)
            figures.append(fig + (before,))
        done = reader.wait_for(stream.expected_results, 60)
        done_s = time.monotonic() - back
        producer.join(60)
        self.assertIsNone(self.produce_error)
        reader.poll(1.0)
        self.assertTrue(done, f"{len(reader.by_source)} of {stream.expected_results} results;"
                        " worker log:\n" + w.dump())
        self.stop_worker(w)
        rows = table_rows(self.query)
        expected = stream.expected_rows()
        wrong = [k for k in expected if rows.get(k) != expected[k]]
        extra = [k for k in rows if k not in expected]
        errors = sum(1 for r in reader.by_source.values() if r["error"])
        lines = w.lines()
        assigned = sum('"partition assigned"' in l for l in lines)
        moved = sum('"partition revoked"' in l or '"partition lost"' in l for l in lines)
        print(f"\n  broker restart: {stream.items} items in {len(stream.messages)} messages over "
              f"{self.partitions} partitions; "
              + "; ".join(f"restart {i + 1} after {b} results, down {o:.1f}s: results written "
                          f"{wr:.2f}s, read {r:.2f}s, caught up {c:.2f}s after the broker was back"
                          for i, (o, wr, r, c, b) in enumerate(figures))
              + f"; every result {done_s:.1f}s after the last restart; partitions assigned {assigned}, "
              f"revoked or lost {moved}; {len(rows)} rows compared ({len(wrong)} differ, "
              f"{len(extra)} unexpected); {len(reader.by_source)} items with results of "
              f"{stream.expected_results}, {reader.repeats} repeated ({len(reader.differing)} "
              f"differing), {errors} errors of {stream.expected_errors} expected", end=" ")
        for i, (o, wr, r, c, b) in enumerate(figures):
            self.assertLessEqual(r, RESUME_BOUND_S,
                                 f"restart {i + 1}: results flowed again only {r:.1f}s after the "
                                 f"broker was back (bound {RESUME_BOUND_S}s)")
            self.assertLessEqual(c, CATCH_UP_BOUND_S,
                                 f"restart {i + 1}: the backlog had its results only {c:.1f}s "
                                 f"after the broker was back (bound {CATCH_UP_BOUND_S}s)")
        # The worker kept its group membership through both outages: its partitions were
        # assigned once and moved only at the final stop.
        self.assertEqual((assigned, moved), (self.partitions, self.partitions),
                         "the worker lost its partitions during an outage:\n" + w.dump())
        self.assertEqual(wrong[:3], [], "rows differ from a clean run")
        self.assertEqual(extra[:3], [])
        self.assertEqual(len(reader.by_source), stream.expected_results)
        self.assertEqual(reader.differing[:2], [])
        self.assertEqual(errors, stream.expected_errors)
        reader.close()


if __name__ == "__main__":
    unittest.main()
