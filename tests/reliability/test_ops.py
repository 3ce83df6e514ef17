"""Operations (issue 5): /metrics counts what was sent and passes `promtool check metrics`;
/healthz answers; /readyz turns not-ready while PostgreSQL is stopped and ready after."""

import os
import re
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
from harness import E2ECase, free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(text, name, labels=""):
    m = re.search(r"^metadata_worker_%s%s (\S+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return float(m.group(1)) if m else None


class TestOperations(E2ECase):

    def start_with_metrics(self):
        self.addr = f"127.0.0.1:{free_port()}"
        w = self.start_worker(extra_env={"METRICS_ADDR": self.addr})
        for _ in range(100):
            try:
                if get(f"http://{self.addr}/healthz")[0] == 200:
                    return w
            except OSError:
                pass
            time.sleep(0.1)
        self.fail("no /healthz:\n" + w.dump())

    def test_metrics_count_what_was_sent(self):
        w = self.start_with_metrics()
        self.produce({"items": [{"externalCustomerId": "a", "externalConversationId": "1"},
                                {"externalCustomerId": "", "externalConversationId": "2"},
                                {"externalCustomerId": "b", "externalConversationId": "3"}]})
        self.produce(b"not json")
        self.wait_results(4, w)
        time.sleep(4.5)  # librdkafka statistics (lag) come every 2 s
        status, text = get(f"http://{self.addr}/metrics")
        self.assertEqual(status, 200)
        want = {("messages_consumed_total", ""): 2,
                ("items_total", '{outcome="ok",code=""}'): 2,
                ("items_total", '{outcome="error",code="FAIL_BAD_PARAMS"}'): 1,
                ("bad_requests_total", ""): 1, ("dead_letters_total", ""): 1,
                ("results_produced_total", ""): 4, ("ready", ""): 1, ("up", ""): 1}
        for (name, labels), v in want.items():
            self.assertEqual(metric(text, name, labels), v, f"{name}{labels}\n{text}")
        self.assertGreaterEqual(metric(text, "db_transactions_total"), 1)
        self.assertGreaterEqual(metric(text, "db_upsert_seconds_count"), 1)
        self.assertGreaterEqual(metric(text, "produce_to_result_seconds_count"), 2)
        self.assertEqual(metric(text, "assigned_partitions"), self.partitions)
        lags = re.findall(r'^metadata_worker_consumer_lag\{topic="%s",partition="\d+"\} (\d+)$'
                          % self.topic, text, re.M)
        self.assertEqual(len(lags), self.partitions, text)
        r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        print(f"\n  /metrics: {len(text.splitlines())} lines, counts match what was sent, "
              "promtool check metrics: clean", end=" ")
        self.stop_worker(w)

    def test_readyz_follows_postgres(self):
        stack = os.environ["MW_STACK_DIR"]
        sh = os.path.join(ROOT, "tests", "harness", "stack.sh")
        w = self.start_with_metrics()
        url = f"http://{self.addr}/readyz"
        deadline = time.monotonic() + 30
        while get(url)[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertEqual(get(url)[0], 200)
        subprocess.run(["bash", sh, "pg-stop", stack], check=True, timeout=60)
        try:
            t0 = time.monotonic()
            while get(url)[0] == 200 and time.monotonic() - t0 < 20:
                time.sleep(0.2)
            not_ready_after = time.monotonic() - t0
            self.assertEqual(get(url)[0], 503)
            self.assertEqual(get(f"http://{self.addr}/healthz")[0], 200)  # alive all the same
        finally:
            subprocess.run(["bash", sh, "pg-start", stack], check=True, timeout=60)
        t1 = time.monotonic()
        while get(url)[0] != 200 and time.monotonic() - t1 < 30:
            time.sleep(0.2)
        self.assertEqual(get(url)[0], 200)
        print(f"\n  /readyz: 503 {not_ready_after:.1f}s after PostgreSQL stopped, 200 again "
              f"{time.monotonic() - t1:.1f}s after it started", end=" ")
        self.stop_worker(w)


if __name__ == "__main__":
    unittest.main()
