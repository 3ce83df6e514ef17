"""Fault tests of SPEC §6 (issue 3): crashes, PostgreSQL and Kafka outages, scaling,
graceful stops under load. Each runs a deterministic stream (tests/e2e/stream.py) through
the worker while injecting its fault, then checks that the table equals the table of a clean
run (every column of every row), that every item has a result, and that repeated results are
identical. Each prints what it checked."""

import os
import random
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
from confluent_kafka import Producer  # noqa: E402
from harness import BROKERS, E2ECase, ResultsReader  # noqa: E402
from stream import Stream, table_rows  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STACK = os.environ.get("MW_STACK_DIR")
SCALE = float(os.environ.get("MW_FAULT_SCALE", "1"))  # >1 for longer runs by hand


def stack(cmd):
    subprocess.run(["bash", os.path.join(ROOT, "tests", "harness", "stack.sh"), cmd, STACK],
                   check=True, timeout=120)


class FaultBase(E2ECase):
    partitions = 4

    def start_stream(self, stream, seconds):
        """Produces the stream in a thread, paced over `seconds`."""
        self.produce_error = None

        def produce():
            try:
                produce_all()
            except Exception as e:  # noqa: BLE001 - reported by finish()
                self.produce_error = e

        def produce_all():
            p = Producer({"bootstrap.servers": BROKERS, "enable.idempotence": True,
                          "linger.ms": 5, "message.max.bytes": 4000000})
            gap = seconds / max(1, len(stream.messages))
            t0 = time.monotonic()
            for i, (part, value) in enumerate(stream.messages):
                while True:
                    try:
                        p.produce(self.topic, value, partition=part)
                        break
                    except BufferError:
                        p.poll(0.1)
                p.poll(0)
                delay = t0 + (i + 1) * gap - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if p.flush(300) != 0:
                raise RuntimeError("messages left unflushed")
        t = threading.Thread(target=produce, daemon=True)
        t.start()
        return t

    def finish(self, stream, producer, reader, workers, what, timeout=240, **figures):
        producer.join(300)
        self.assertIsNone(self.produce_error)
        t0 = time.monotonic()
        done = reader.wait_for(stream.expected_results, timeout)
        reader.poll(1.0)
        alive = [w for w in workers if w.proc.poll() is None]
        self.assertTrue(done, f"{len(reader.by_source)} of {stream.expected_results} results;"
                        " last worker log:\n" + (alive or workers)[-1].dump())
        for w in alive:
            self.stop_worker(w)
        rows = table_rows(self.query)
        expected = stream.expected_rows()
        wrong = [k for k in expected if rows.get(k) != expected[k]]
        extra = [k for k in rows if k not in expected]
        errors = sum(1 for r in reader.by_source.values() if r["error"])
        print(f"\n  {what}: {stream.items} items in {len(stream.messages)} messages over "
              f"{self.partitions} partitions; {len(rows)} rows compared ({len(wrong)} differ, "
              f"{len(extra)} unexpected); {len(reader.by_source)} items with results of "
              f"{stream.expected_results}, {reader.repeats} repeated ({len(reader.differing)} "
              f"differing), {errors} errors of {stream.expected_errors} expected; "
              + ", ".join(f"{k} {v}" for k, v in figures.items())
              + f"; drained in {time.monotonic() - t0:.1f}s", end=" ")
        self.assertEqual(wrong[:3], [], "rows differ from a clean run")
        self.assertEqual(extra[:3], [])
        self.assertEqual(len(reader.by_source), stream.expected_results)
        self.assertEqual(reader.differing[:2], [])
        self.assertEqual(errors, stream.expected_errors)
        reader.close()



class FaultTests(FaultBase):
    def test_1_crash_at_random_instants(self):
        """SIGKILL at 20 random moments, restart each time: same table as a clean run."""
        rng = random.Random(7)
        stream = Stream(int(100_000 * SCALE), self.partitions, seed=11)
        reader = ResultsReader(self.results_topic)
        # Static membership: a restarted worker takes its place at once, without waiting
        # for the killed one's session to time out.
        args = ("run", "-X", "group.instance.id=crash-test", "-X", "session.timeout.ms=10000")
        producer = self.start_stream(stream, 30 * SCALE)
        workers = [self.start_worker(args=args)]
        kills = 0
        for _ in range(int(20 * SCALE)):
            time.sleep(rng.uniform(0.3, 2.0))
            workers[-1].stop(signal.SIGKILL)
            kills += 1
            workers.append(self.start_worker(args=args, name=f"worker{kills}"))
        self.finish(stream, producer, reader, workers, "crash", kills=kills)

    def test_2_postgres_outage(self):
        """PostgreSQL stopped 20 s, restarted quickly twice, the worker's backend terminated:
        the worker neither exits nor loses its partitions, and the table is exact."""
        stream = Stream(int(60_000 * SCALE), self.partitions, seed=12)
        reader = ResultsReader(self.results_topic)
        producer = self.start_stream(stream, 45)
        w = self.start_worker()
        time.sleep(4)
        t0 = time.monotonic()
        stack("pg-stop")
        time.sleep(20)
        stack("pg-start")
        outage = time.monotonic() - t0
        time.sleep(3)
        for _ in range(2):
            stack("pg-stop")
            stack("pg-start")
            time.sleep(2)
        killed = self.query("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                            " WHERE application_name = 'metadata-worker'")[0][0]
        self.assertIsNone(w.proc.poll(), "the worker exited during the outage:\n" + w.dump())
        self.finish(stream, producer, reader, [w], "postgres outage",
                    outage_s=round(outage, 1), quick_restarts=2, backends_terminated=killed)
        lines = w.lines()
        self.assertEqual(sum('"partition revoked"' in l or '"partition lost"' in l for l in lines), 4,
                         "partitions moved during the outage (only the final stop may revoke)")
        self.assertEqual(sum('"partition assigned"' in l for l in lines), self.partitions)

    def test_3_kafka_outage(self):
        """The broker stopped 20 s mid-stream and started again: same outcome."""
        stream = Stream(int(60_000 * SCALE), self.partitions, seed=13)
        reader = ResultsReader(self.results_topic)
        producer = self.start_stream(stream, 30)
        w = self.start_worker()
        time.sleep(5)
        t0 = time.monotonic()
        stack("kafka-stop")
        time.sleep(20)
        stack("kafka-start")
        outage = time.monotonic() - t0
        self.assertIsNone(w.proc.poll(), "the worker exited during the outage:\n" + w.dump())
        self.finish(stream, producer, reader, [w], "kafka outage", outage_s=round(outage, 1))

    def test_5_graceful_stop_under_load(self):
        """SIGTERM under heavy load: exit 0 within the documented bound; a restarted worker
        neither skips nor re-applies anything (no result repeated: nothing consumed twice)."""
        stream = Stream(int(200_000 * SCALE), self.partitions, seed=15)
        reader = ResultsReader(self.results_topic)
        producer = self.start_stream(stream, 1)
        producer.join(120)
        w = self.start_worker()
        time.sleep(1.5)
        rc, secs = self.stop_worker(w)
        bound = 20 + 10  # SHUTDOWN_TIMEOUT_MS default + the consumer close deadline
        self.assertLess(secs, bound)
        reader.poll(2)
        done_before = len(reader.by_source)
        self.assertLess(done_before, stream.expected_results, "the stop did not come under load")
        w2 = self.start_worker(name="worker2")
        self.finish(stream, producer, reader, [w, w2], "graceful stop",
                    stop_s=round(secs, 2), results_before_stop=done_before)
        self.assertEqual(reader.repeats, 0, "items were consumed twice after a clean stop")


class ScalingTests(FaultBase):
    partitions = 6

    def test_4_scaling(self):
        """Three workers on 6 partitions; a fourth joins, one leaves by SIGTERM, one is
        killed: the table is exact and every item has a result."""
        self.assertEqual(self.partitions, 6)
        stream = Stream(int(60_000 * SCALE), 6, seed=14)
        reader = ResultsReader(self.results_topic)
        args = ("run", "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=1000")
        producer = self.start_stream(stream, 30)
        ws = [self.start_worker(args=args, name=f"w{i}") for i in range(3)]
        time.sleep(6)
        ws.append(self.start_worker(args=args, name="w3"))
        time.sleep(6)
        rc, secs = self.stop_worker(ws[0])
        time.sleep(3)
        ws[1].stop(signal.SIGKILL)
        self.finish(stream, producer, reader, ws, "scaling", workers_started=4,
                    sigterm_exit_s=round(secs, 1), sigkilled=1)


if __name__ == "__main__":
    unittest.main()
