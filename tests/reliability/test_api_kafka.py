"""`metadata-worker api` while the broker is stopped (docs/contract.md §8): a request is
answered 503 with Retry-After within API_PRODUCE_TIMEOUT_MS (plus librdkafka's timeout
scan), /readyz turns false, and once the broker is back a request is answered 200 again."""

import http.client
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
from harness import stack  # noqa: E402
from test_api import ApiCase  # noqa: E402


class TestApiKafkaDown(ApiCase):
    def test_503_then_200(self):
        self.start_api({"API_PRODUCE_TIMEOUT_MS": "2000"})
        body = self.example()
        self.assertEqual(self.post(body)[0], 200)
        stack("kafka-stop")
        try:
            t0 = time.monotonic()
            st, h, _ = self.post(body)
            took = time.monotonic() - t0
            self.assertEqual(st, 503)
            self.assertGreaterEqual(int(h["Retry-After"]), 1)
            self.assertLess(took, 2.0 + 1.5)
            end = time.monotonic() + 15
            ready = 200
            while time.monotonic() < end and ready == 200:
                c = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=5)
                c.request("GET", "/readyz")
                ready = c.getresponse().status
                time.sleep(0.5)
            self.assertEqual(ready, 503, "/readyz while Kafka is down")
        finally:
            stack("kafka-start")
        end = time.monotonic() + 60
        st = None
        while time.monotonic() < end and st != 200:
            st = self.post(body)[0]
        self.assertEqual(st, 200)


if __name__ == "__main__":
    unittest.main()
