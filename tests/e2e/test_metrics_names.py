"""Every metric and label that deploy/prometheus/rules.yml and deploy/grafana/*.json read is in
a real /metrics scrape of a running worker (issue 14): a renamed or removed metric would
otherwise leave an alert that can never fire, or an empty panel, without anyone noticing.

The names come from tests/deploy/metricnames.py, the same reading as the offline checks of
tests/deploy. Histograms are used through their _bucket/_sum/_count series, which is what a
scrape holds; `up` is Prometheus's own, and job/instance are labels Prometheus adds."""

import os
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy"))
from harness import E2ECase, free_port  # noqa: E402
import metricnames  # noqa: E402


class TestMetricNames(E2ECase):

    def test_rules_and_dashboards_read_only_scraped_metrics(self):
        addr = f"127.0.0.1:{free_port()}"
        w = self.start_worker(extra_env={"METRICS_ADDR": addr})
        # Good items, an item failing validation, and a message that is not a batch (a dead
        # letter), on several partitions, so that every counter has moved.
        for p in range(self.partitions):
            self.produce({"items": [{"externalCustomerId": f"c{p}", "externalConversationId": "1"},
                                    {"externalCustomerId": "", "externalConversationId": "2"}]},
                         partition=p)
        self.produce(b"not json", partition=0)
        self.wait_results(2 * self.partitions + 1, w)
        time.sleep(4.5)  # consumer_lag comes from librdkafka's statistics, every 2 s

        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as r:
            self.assertEqual(r.status, 200)
            text = r.read().decode()
        scraped, scraped_labels = metricnames.parse_scrape(text)
        # The scrape is what the counters say: the traffic above is in it.
        self.assertRegex(text, r'(?m)^metadata_worker_items_total\{outcome="ok",code=""\} %d$'
                         % self.partitions)
        self.assertRegex(text, r"(?m)^metadata_worker_dead_letters_total 1$")
        self.assertRegex(text, r'(?m)^metadata_worker_consumer_lag\{topic="%s",partition="0"\} \d+$'
                         % self.topic)

        used = metricnames.used_names()
        self.assertGreater(len(used), 20, "the rules and dashboards name too few metrics")
        missing = metricnames.missing(used, scraped)
        self.assertEqual(missing, {}, "used but not in the scrape (where used):\n%s\n\nscrape:\n%s"
                         % ("\n".join(f"{n}: {w}" for n, w in sorted(missing.items())), text))
        labels = metricnames.used_labels() - scraped_labels - metricnames.TARGET_LABELS
        self.assertEqual(labels, set(), "labels used but not in the scrape")
        # Every metric the worker exports is also known to the source check of tests/deploy.
        self.assertEqual(scraped - metricnames.exported_in_source(), set())
        print(f"\n  {len(used)} names used by rules and dashboards, all in a scrape of "
              f"{len(scraped)} names", end=" ")
        self.stop_worker(w)


if __name__ == "__main__":
    import unittest
    unittest.main()
