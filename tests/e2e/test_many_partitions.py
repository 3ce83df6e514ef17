"""One transaction over more partitions than the old cap of 256 on the offsets it re-reads
(issue 9, item 7): after a failed compare-and-set of offsets, every partition of the
transaction is read again, so the retry succeeds instead of failing for ever."""

import time
import unittest

from harness import E2ECase


class TestManyPartitions(E2ECase):
    partitions = 300

    def test_offsets_of_every_partition_read_again_after_a_conflict(self):
        w = self.start_worker(extra_env={"DATABASE_CONNECTIONS": "1", "TXN_MAX_WAIT_MS": "3000",
                                         "TXN_MAX_ITEMS": "100000"})
        n = self.partitions

        def item(p, off):
            return ('{"items":[{"externalCustomerId":"c%d","externalConversationId":"m%d",'
                    '"status":"s%d"}]}' % (p, off, off)).encode()

        for p in range(n):
            self.producer.produce(self.topic, item(p, 0), partition=p)
        self.producer.flush(60)
        self.wait_results(n, w, timeout=90)
        # Another writer (say a worker that owned these partitions meanwhile) applied offset
        # 1 of every partition: the worker's cached offsets are now stale on all 300.
        self.query("UPDATE customer_metadata_offsets SET next_offset = 2")
        for p in range(n):
            self.producer.produce(self.topic, item(p, 1), partition=p)
            self.producer.produce(self.topic, item(p, 2), partition=p)
        self.producer.flush(60)
        t0 = time.monotonic()
        self.wait_results(3 * n, w, timeout=90)
        secs = time.monotonic() - t0
        # Offset 1 counts as applied (results only); offset 2 is applied on every partition.
        self.assertEqual(self.query("SELECT count(*), min(next_offset), max(next_offset)"
                                    " FROM customer_metadata_offsets"), [(n, 3, 3)])
        self.assertEqual(self.query("SELECT count(*) FROM customer_metadata"
                                    " WHERE external_conversation_id = 'm2'")[0][0], n)
        self.assertEqual(self.query("SELECT count(*) FROM customer_metadata"
                                    " WHERE external_conversation_id = 'm1'")[0][0], 0)
        retries = [l for l in w.lines() if '"retrying"' in l]
        self.assertLessEqual(len(retries), 3, w.dump())
        self.stop_worker(w)
        print(f"\n  {n} partitions in one transaction, offsets moved by another writer:"
              f" {len(retries)} retry, done in {secs:.1f} s", end=" ")


if __name__ == "__main__":
    unittest.main()
