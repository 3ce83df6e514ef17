"""The soak's two long-lived helpers around Kafka, run in threads by soak.py.

  Feeder   produces the realistic stream (tests/bench/gen.py, "spread": keys over every
           partition, 30% updates, low-cardinality attribute values, 1% bad items) at a fixed
           rate in 100-item messages, generated as it goes: one gen.Stream of SEGMENT_MSGS
           messages after another, each with its own seed and key prefix (updates reuse keys
           of their own segment, so nothing but the segment in hand is held in memory). For the
           table check it counts the rows the stream implies (distinct keys of valid items)
           and keeps the expected state (gen.SpreadState) of a 1-in-SAMPLE_MOD sample of keys.
  Tracker  reads the results topic from its start and checks every item of every produced
           message off by (partition, offset, index) -- repeats after a SIGKILL count once --
           and the produce -> result latency of each complete message: the input message's
           CreateTime (delivery report) to the CreateTime of its last result, as the bench's
           latency phase measures it.
"""

import json
import threading
import time
import zlib
from array import array

from confluent_kafka import Consumer, Producer, TopicPartition

import gen

SAMPLE_MOD = 500          # 1 key in 500 checked column by column at the end
FULL = (1 << gen.ITEMS_PER_MSG) - 1


class Feeder(threading.Thread):
    def __init__(self, brokers, topic, partitions, rate, seconds, tracker, seed=gen.DEFAULT_SEED):
        super().__init__(name="feeder", daemon=True)
        self.brokers, self.topic, self.P = brokers, topic, partitions
        self.rate, self.seconds, self.tracker, self.seed = rate, seconds, tracker, seed
        self.sample = gen.SpreadState()
        self.rows = 0             # distinct keys of valid items so far (the table's row count)
        self.messages = 0         # produced (handed to librdkafka)
        self.errors = []
        self.stop_flag = threading.Event()
        self.done = threading.Event()

    def segments(self):
        k = 0
        while True:
            k += 1
            yield gen.Stream(self.P * 200 * gen.ITEMS_PER_MSG, seed=self.seed + k,
                             partitions=self.P, prefix=f"soak{k:05d}-")

    def run(self):
        try:
            self._run()
        except Exception as e:  # reported by soak.py; the run fails
            self.errors.append(f"feeder: {e!r}")
        finally:
            self.done.set()

    def _run(self):
        prod = Producer({"bootstrap.servers": self.brokers, "linger.ms": 5,
                         "enable.idempotence": True, "message.timeout.ms": 600000,
                         "queue.buffering.max.kbytes": 262144})
        tr = self.tracker

        def on_delivery(err, msg):
            if err:
                self.errors.append(f"delivery: {err}")
            else:
                tr.sent(msg.partition(), msg.offset(), msg.timestamp()[1])

        interval = gen.ITEMS_PER_MSG / self.rate
        t0 = time.monotonic()
        end = t0 + self.seconds
        for stream in self.segments():
            keys = set()
            for _m, p, _off, payload, items, invalid in stream.payloads():
                due = t0 + self.messages * interval
                now = time.monotonic()
                if due >= end or self.stop_flag.is_set():
                    self.rows += len(keys)
                    prod.flush(600)
                    return
                if due > now:
                    time.sleep(due - now)
                while True:
                    try:
                        prod.produce(self.topic, payload, partition=p, on_delivery=on_delivery)
                        break
                    except BufferError:
                        prod.poll(0.05)
                self.messages += 1
                prod.poll(0)
                for idx, (it, bad) in enumerate(zip(items, invalid)):
                    if bad:
                        continue
                    key = (it["externalCustomerId"], it["externalConversationId"])
                    keys.add(key)
                    if zlib.crc32(key[1].encode()) % SAMPLE_MOD == 0:
                        self.sample.apply(it, p, 0, idx)
            self.rows += len(keys)


class Tracker(threading.Thread):
    """Results per input message: a bit per item index; complete messages leave `pending`
    for `done` (one byte per offset and partition)."""

    def __init__(self, brokers, results_topic, partitions, group):
        super().__init__(name="tracker", daemon=True)
        self.brokers, self.topic, self.P, self.group = brokers, results_topic, partitions, group
        self.lock = threading.Lock()
        self.pending = {}                  # (p, off) -> [mask, produce ts, last result ts]
        self.done = [bytearray() for _ in range(partitions)]
        self.n_sent = self.n_done = self.results = self.repeats = 0
        self.latencies = array("l")       # ms, of messages completed since the last take()
        self.stop_flag = threading.Event()
        self.errors = []

    def sent(self, p, off, ts):
        with self.lock:
            self.n_sent += 1
            e = self.pending.setdefault((p, off), [0, None, 0])
            e[1] = ts
            self._maybe_done(p, off, e)

    def _maybe_done(self, p, off, e):
        if e[0] == FULL and e[1] is not None:
            del self.pending[(p, off)]
            d = self.done[p]
            if len(d) <= off:
                d.extend(bytes(off + 1 - len(d) + 4096))
            d[off] = 1
            self.n_done += 1
            self.latencies.append(e[2] - e[1])

    def run(self):
        c = Consumer({"bootstrap.servers": self.brokers, "group.id": self.group,
                      "enable.auto.commit": False, "fetch.wait.max.ms": 100})
        c.assign([TopicPartition(self.topic, p, 0) for p in range(self.P)])
        try:
            while not self.stop_flag.is_set():
                batch = c.consume(2000, 0.2)
                with self.lock:
                    for m in batch:
                        if m.error():
                            continue
                        self._result(m)
        except Exception as e:
            self.errors.append(f"tracker: {e!r}")
        finally:
            c.close()

    def _result(self, m):
        self.results += 1
        src = json.loads(m.value())["source"]
        p, off, bit = src["partition"], src["offset"], 1 << src["index"]
        d = self.done[p]
        if off < len(d) and d[off]:
            self.repeats += 1
            return
        e = self.pending.setdefault((p, off), [0, None, 0])
        if e[0] & bit:
            self.repeats += 1
            return
        e[0] |= bit
        e[2] = max(e[2], m.timestamp()[1])
        self._maybe_done(p, off, e)

    def take(self):
        """(sent, complete, in flight, results read, repeats, latencies since the last call)."""
        with self.lock:
            lat, self.latencies = self.latencies, array("l")
            return self.n_sent, self.n_done, len(self.pending), self.results, self.repeats, lat

    def in_flight(self):
        with self.lock:
            return self.n_sent - self.n_done

    def missing(self):
        """Messages sent whose results are not all in, and the items they lack."""
        with self.lock:
            sent = [e for e in self.pending.values() if e[1] is not None]
            return len(sent), sum(gen.ITEMS_PER_MSG - bin(e[0]).count("1") for e in sent)
