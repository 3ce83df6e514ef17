"""Concurrent writers on shared keys (issue 10; docs/contract.md §2 "Real traffic", §6): two
workers, each with two database connections, ingest one stream whose keys occur on every
partition, started together so that four transactions write common keys at the same moments
(new keys too: a key's first items often arrive on two partitions at once). No transaction
may fail over another writer's row: zero retries for 40P01 (deadlock) and 23505 (a key another
writer inserted first) in either worker's /metrics; the table is exactly a clean run's and
every item has its result.

Before schema 4 the MERGE of the second writer to insert a new key failed with 23505 on
customer_metadata_pkey and the whole transaction was retried (issue 10: 17 of 45 transactions
on the benchmark's stream)."""

import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
from harness import ResultsReader  # noqa: E402
from stream import Stream  # noqa: E402
from test_faults import FaultBase  # noqa: E402
from test_ops import free_port, get, metric  # noqa: E402

SCALE = float(os.environ.get("MW_TEST_SCALE", "1"))


def assigned(addr):
    try:
        return metric(get(f"http://{addr}/metrics")[1], "assigned_partitions") or 0
    except OSError:  # not listening yet
        return 0


class ConcurrentWritersTest(FaultBase):
    partitions = 6

    def test_shared_keys_no_deadlock_no_duplicate_key_retry(self):
        # 8,000 keys for 48,000 items: every transaction (up to 4,000 items) shares keys with
        # the three others in flight, and most keys are new while their first items arrive.
        stream = Stream(int(48_000 * SCALE), self.partitions, seed=21, keys=int(8_000 * SCALE),
                        bad_msg_every=0)
        reader = ResultsReader(self.results_topic)
        addrs = [f"127.0.0.1:{free_port()}" for _ in range(2)]
        ws = [self.start_worker({"DATABASE_CONNECTIONS": "2", "METRICS_ADDR": a}, name=f"w{i}")
              for i, a in enumerate(addrs)]
        # Both in the group before the stream comes: its messages then meet four connections.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(assigned(a) > 0 for a in addrs):
            time.sleep(0.2)
        producer = self.start_stream(stream, 4)
        producer.join(300)
        self.assertTrue(reader.wait_for(stream.expected_results, 240),
                        f"{len(reader.by_source)} of {stream.expected_results} results")
        retries = {}
        for i, a in enumerate(addrs):
            text = get(f"http://{a}/metrics")[1]
            for state in ("40P01", "23505", "40001", "other", "none"):
                retries[f"w{i} {state}"] = metric(text, "db_retries_total", f'{{sqlstate="{state}"}}')
        # The same from the logs: each retry is one "retrying" line whose error starts with
        # its SQLSTATE.
        logged = {}
        for w in ws:
            for line in w.lines():
                if '"msg":"retrying"' in line and '"what":"database"' in line:
                    state = json.loads(line)["error"][:5]
                    logged[state] = logged.get(state, 0) + 1
        self.finish(stream, producer, reader, ws, "concurrent writers", worker_processes=2,
                    connections_each=2, retries=retries, retries_logged=logged)
        self.assertEqual({k: v for k, v in logged.items() if k in ("40P01", "23505")}, {},
                         "transactions retried over another writer's rows")
        for i in range(2):
            self.assertEqual(retries[f"w{i} 40P01"], 0, f"deadlock retries: {retries}")
            self.assertEqual(retries[f"w{i} 23505"], 0, f"duplicate-key retries: {retries}")


if __name__ == "__main__":
    unittest.main()
