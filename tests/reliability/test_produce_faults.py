"""What Kafka refusing the worker's own messages does (issue 9, items 1 and 8), against the
real broker:
- a dead letter larger than the producer (or the dead-letter topic) accepts goes cut, with
  headers saying so, and no partition waits for it;
- a results topic that refuses every result is a configuration error: exit 1, one clear
  line, no offset committed past the unacknowledged results;
- with the producer's queue full and Kafka down, the main loop keeps its heartbeat and a
  SIGTERM still stops the worker within its bound."""

import json
import os
import signal
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from harness import BROKERS, E2ECase, ResultsReader, stack  # noqa: E402
from test_ops import free_port, get, metric  # noqa: E402



def item(i, **kw):
    it = {"externalCustomerId": f"cust-{i % 97}", "externalConversationId": f"conv-{i}",
          "status": "open", "phoneNumber": "+15550100", "emailAddress": f"user{i}@example.com",
          "attributes": [{"name": "tier", "value": "gold"}, {"name": "region", "value": "emea"}]}
    it.update(kw)
    return it


def committed(group, topic, partitions):
    c = Consumer({"bootstrap.servers": BROKERS, "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


class TestProduceFaults(E2ECase):
    partitions = 3

    def test_oversized_dead_letter_is_cut_and_nothing_waits(self):
        # 10,001 items: a bad request (too many items), about 2.3 MB, which the input topic
        # (max.message.bytes 4 MB) takes but the worker's producer (1 MB) cannot send whole.
        big = json.dumps({"items": [item(i) for i in range(10_001)]}).encode()
        self.assertGreater(len(big), 2_000_000)
        w = self.start_worker()
        self.produce(big, partition=0)
        for p in range(self.partitions):
            for k in range(3):
                self.produce({"items": [item(1000 + p * 10 + k)]}, partition=p)
        res = self.wait_results(1 + 3 * self.partitions, w, timeout=60)
        bad = [r for r in res if r["error"].startswith("FAIL_BAD_REQUEST")]
        self.assertEqual(len(bad), 1, res)
        self.assertIn("exceeds maximum of 10000 items", bad[0]["error"])
        self.assertEqual(sum(1 for r in res if r["error"] == ""), 3 * self.partitions)

        dl = self.consume_all(self.dlq_topic, 1, timeout=30)
        self.assertEqual(len(dl), 1)
        h = {k: v.decode() for k, v in dl[0].headers()}
        self.assertEqual(h["dlq.value.truncated"], "prefix")
        self.assertEqual(int(h["dlq.value.bytes"]), len(big))
        self.assertEqual((h["dlq.source.topic"], h["dlq.source.partition"], h["dlq.source.offset"]),
                         (self.topic, "0", "0"))
        self.assertIn("exceeds maximum of 10000 items", h["dlq.error"])
        self.assertEqual(dl[0].value(), big[:65536])

        # Every partition moved on: the group's committed offsets reach the ends.
        want = {0: 4, 1: 3, 2: 3}
        for _ in range(50):
            if committed(self.group, self.topic, self.partitions) == want:
                break
            time.sleep(0.2)
        self.assertEqual(committed(self.group, self.topic, self.partitions), want, w.dump())
        # Idle now: SIGTERM is quick (it waited for SHUTDOWN_TIMEOUT_MS when a flight wedged).
        time.sleep(1)
        rc, secs = self.stop_worker(w)
        self.assertLess(secs, 2.0, w.dump())
        attempts = sum(1 for l in w.lines() if "cannot produce" in l or "producing them again" in l)
        self.assertEqual(attempts, 0, w.dump())
        print(f"\n  {len(big):,}-byte dead letter sent as a {len(dl[0].value()):,}-byte prefix;"
              f" SIGTERM exit in {secs:.2f} s", end=" ")

    def test_results_topic_refusing_results_stops_the_worker(self):
        tiny = f"res-tiny-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": BROKERS})
        for f in admin.create_topics([NewTopic(tiny, 1, 1, config={"max.message.bytes": "100"})]).values():
            f.result(30)
        w = self.start_worker(extra_env={"KAFKA_RESULTS_TOPIC": tiny})
        self.produce({"items": [item(1), item(2)]}, partition=1)
        rc = w.proc.wait(timeout=60)
        self.assertEqual(rc, 1, w.dump())
        errors = [json.loads(l) for l in w.lines() if '"level":"error"' in l]
        self.assertTrue(any(e.get("topic") == tiny and "Kafka refuses" in e["msg"] for e in errors),
                        w.dump())
        # Rows are in PostgreSQL, but no offset moved past results Kafka never took.
        self.assertEqual(self.query("SELECT count(*) FROM customer_metadata")[0][0], 2)
        self.assertLess(committed(self.group, self.topic, self.partitions).get(1, -1001), 1)
        print(f"\n  results topic refusing results: exit {rc}: {errors[0]['msg']}", end=" ")

    def test_full_producer_queue_with_kafka_down_keeps_heartbeat_and_stops(self):
        # A backlog of 20,000 items whose results cannot all fit a 200-message producer
        # queue; Kafka stops while the worker is producing them.
        for k in range(20):
            self.produce({"items": [item(k * 1000 + i) for i in range(1000)]}, partition=k % 3)
        addr = f"127.0.0.1:{free_port()}"
        reader = ResultsReader(self.results_topic)
        w = self.start_worker(extra_env={"METRICS_ADDR": addr, "SHUTDOWN_TIMEOUT_MS": "2000"},
                              args=("run", "-X", "queue.buffering.max.messages=200"))
        try:
            self.assertTrue(reader.wait_for(1, 60), w.dump())
            stack("kafka-stop")
            stalls = []
            for _ in range(8):
                time.sleep(0.5)
                status, text = get(f"http://{addr}/metrics")
                stalls.append(metric(text, "main_loop_stall_seconds"))
            self.assertEqual(get(f"http://{addr}/healthz")[0], 200)
            # The queue is full (the worker still holds results to produce) and yet the main
            # loop turns: its stall stays small.
            self.assertLess(max(stalls), 2.0, (stalls, w.dump()))
            t0 = time.monotonic()
            w.proc.send_signal(signal.SIGTERM)
            rc = w.proc.wait(timeout=60)
            secs = time.monotonic() - t0
        finally:
            stack("kafka-start")
        self.assertEqual(rc, 0, w.dump())
        # SHUTDOWN_TIMEOUT_MS (2 s) + leaving the group with the broker gone (bounded, 10 s).
        self.assertLess(secs, 15, w.dump())
        # Nothing lost: a new worker gives every item its result.
        w2 = self.start_worker(name="after")
        self.assertTrue(reader.wait_for(20_000, 120), w2.dump())
        self.stop_worker(w2)
        reader.close()
        print(f"\n  queue full, Kafka down: largest main-loop stall {max(stalls):.2f} s;"
              f" SIGTERM exit 0 in {secs:.1f} s; all 20,000 results after restart", end=" ")


if __name__ == "__main__":
    unittest.main()
