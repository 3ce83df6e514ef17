"""Checks of deploy/prometheus (issue 14), with Debian's promtool (package prometheus):

- `promtool check rules` and `promtool test rules` pass on the real files, and fail on broken
  copies (a bad PromQL expression; a unit test expecting the wrong alert), so they are not
  passing vacuously;
- every alert has a severity, summary, description and a runbook_url whose anchor is a heading
  of docs/runbooks.md, and every alert section of the runbooks is an alert;
- every alert has, in rules_test.yml, a case where it fires and one where it must not;
- every metric and label the rules read is one worker/metrics.c renders (the quick check; the
  acceptance is tests/e2e/test_metrics_names.py against a real scrape).

Run: /usr/bin/python3 -m unittest discover -s tests/deploy -p 'test_[pd]*.py' -v
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import metricnames  # noqa: E402

ROOT = metricnames.ROOT
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
RUNBOOKS = os.path.join(ROOT, "docs", "runbooks.md")
SEVERITIES = {"critical", "warning", "info"}


def promtool(*args, cwd=None):
    r = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    return r.returncode, r.stdout + r.stderr


def anchors(text):
    """GitHub's heading anchors (as tests/compose/test_docs.py): lower case, punctuation but
    '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return {re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M)}


class TestRulesWithPromtool(unittest.TestCase):

    def test_check_rules_passes(self):
        rc, out = promtool("check", "rules", metricnames.RULES)
        self.assertEqual(rc, 0, out)
        self.assertIn("SUCCESS", out)

    def test_unit_tests_pass(self):
        rc, out = promtool("test", "rules", metricnames.RULES_TEST)
        self.assertEqual(rc, 0, out)
        self.assertIn("SUCCESS", out)

    def test_check_rules_fails_on_a_bad_expression(self):
        with open(metricnames.RULES, encoding="utf-8") as f:
            text = f.read()
        broken = text.replace("expr: up{job=\"metadata-worker\"} == 0",
                              "expr: up{job=\"metadata-worker\"} == == 0", 1)
        self.assertNotEqual(broken, text, "the MetadataWorkerDown expression moved: update this test")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "rules.yml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(broken)
            rc, out = promtool("check", "rules", path)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("parse error", out)

    def test_test_rules_fails_when_an_expected_alert_is_wrong(self):
        with open(metricnames.RULES_TEST, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        # The first expected alert gets another severity than the rule gives it.
        case = next(c for t in doc["tests"] for c in t["alert_rule_test"] if c.get("exp_alerts"))
        case["exp_alerts"][0]["exp_labels"]["severity"] = "info"
        with tempfile.TemporaryDirectory() as d:
            shutil.copy(metricnames.RULES, os.path.join(d, "rules.yml"))
            with open(os.path.join(d, "rules_test.yml"), "w", encoding="utf-8") as f:
                yaml.safe_dump(doc, f)
            rc, out = promtool("test", "rules", "rules_test.yml", cwd=d)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("FAILED", out)
        self.assertIn(case["alertname"], out)


CONFIG = os.path.join(ROOT, "deploy", "prometheus", "prometheus.yml")
WORKER_YAML = os.path.join(ROOT, "deploy", "kubernetes", "base", "worker.yaml")
API_YAML = os.path.join(ROOT, "deploy", "kubernetes", "base", "api.yaml")


def offline_config(path, dest_dir):
    """A copy of prometheus.yml that Debian's promtool can check: Debian builds Prometheus
    without Kubernetes service discovery, so each kubernetes_sd_configs becomes a static target
    (everything else, relabelling and rule_files included, is checked as written)."""
    with open(path) as f:
        cfg = yaml.safe_load(f)
    for job in cfg["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": ["127.0.0.1:9090"]}]
    out = os.path.join(dest_dir, "prometheus.yml")
    with open(out, "w") as f:
        yaml.safe_dump(cfg, f)
    shutil.copy(metricnames.RULES, os.path.join(dest_dir, "rules.yml"))
    return out


def services(path):
    """{Service name: set of port names} of a manifest file."""
    with open(path) as f:
        return {d["metadata"]["name"]: {p["name"] for p in d["spec"]["ports"]}
                for d in yaml.safe_load_all(f) if d and d.get("kind") == "Service"}


class TestScrapeConfig(unittest.TestCase):
    """deploy/prometheus/prometheus.yml: valid, and its jobs are the ones the rules select and
    the Services of deploy/kubernetes expose."""

    def test_check_config_passes(self):
        with tempfile.TemporaryDirectory() as d:
            rc, out = promtool("check", "config", offline_config(CONFIG, d))
        self.assertEqual(rc, 0, out)

    def test_check_config_fails_on_a_bad_relabel_action(self):
        with tempfile.TemporaryDirectory() as d:
            path = offline_config(CONFIG, d)
            with open(path) as f:
                text = f.read()
            self.assertIn("action: keep", text)
            with open(path, "w") as f:
                f.write(text.replace("action: keep", "action: kept", 1))
            rc, out = promtool("check", "config", path)
        self.assertNotEqual(rc, 0, out)

    def test_jobs_match_the_rules_and_the_services(self):
        with open(CONFIG) as f:
            cfg = yaml.safe_load(f)
        jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
        with open(metricnames.RULES) as f:
            rules_text = f.read()
        selected = set(re.findall(r'job="([^"]+)"', rules_text))
        self.assertTrue(selected, "the rules select no job")
        self.assertLessEqual(selected, set(jobs), "a job the rules select is not scraped")
        svc = {**services(WORKER_YAML), **services(API_YAML)}
        for name, job in jobs.items():
            keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
            self.assertEqual(len(keep), 1, name)
            service, port = keep[0]["regex"].split(";")
            self.assertIn(service, svc, f"job {name} keeps Service {service}, not in deploy/")
            self.assertIn(port, svc[service], f"job {name}: Service {service} has no port {port}")

    def test_the_workers_service_publishes_unready_pods(self):
        """An unready worker must still be scraped: its metadata_worker_ready is what the
        NotReady alert reads."""
        with open(WORKER_YAML) as f:
            docs = [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "Service"]
        self.assertTrue(all(d["spec"].get("publishNotReadyAddresses") for d in docs))


class TestRulesContent(unittest.TestCase):

    def setUp(self):
        self.rules = metricnames.rules()
        self.names = [r[0] for r in self.rules]

    def test_every_alert_is_labelled_and_annotated(self):
        self.assertGreaterEqual(len(self.rules), 10)
        self.assertEqual(len(self.names), len(set(self.names)), "alert names repeat")
        for name, expr, labels, ann in self.rules:
            with self.subTest(alert=name):
                self.assertTrue(name.startswith("MetadataWorker"), name)
                self.assertIn(labels.get("severity"), SEVERITIES)
                for key in ("summary", "description", "runbook_url"):
                    self.assertTrue(ann.get(key, "").strip(), f"{name}: no {key}")
                self.assertRegex(ann["runbook_url"], r"^docs/runbooks\.md#[a-z0-9_-]+$")

    def test_every_alert_has_a_runbook_section(self):
        with open(RUNBOOKS, encoding="utf-8") as f:
            text = f.read()
        heads = anchors(text)
        for name, _, _, ann in self.rules:
            anchor = ann["runbook_url"].split("#", 1)[1]
            with self.subTest(alert=name):
                self.assertEqual(anchor, name.lower(), "runbook anchor is not the alert's name")
                self.assertIn(anchor, heads, f"docs/runbooks.md has no heading for #{anchor}")
        # And no section for an alert that no longer exists.
        sections = set(re.findall(r"^##+\s+(MetadataWorker\w+)\s*$", text, re.M))
        self.assertEqual(sections - set(self.names), set(), "runbook sections without an alert")

    def test_the_expected_alerts_exist(self):
        """The alerts issue 14 asks for (and the metrics they rest on)."""
        by_name = {r[0]: r[1] for r in self.rules}
        want = {"MetadataWorkerConsumerLagGrowing": "metadata_worker_consumer_lag",
                "MetadataWorkerConsumerLagHigh": "metadata_worker_consumer_lag",
                "MetadataWorkerNoProgress": "metadata_worker_results_produced_total",
                "MetadataWorkerDeadLetters": "metadata_worker_dead_letters_total",
                "MetadataWorkerDatabaseRetries": "metadata_worker_db_retries_total",
                "MetadataWorkerDatabaseFatalError": "metadata_worker_db_errors_total",
                "MetadataWorkerLatencyHigh": "metadata_worker_produce_to_result_seconds_bucket",
                "MetadataWorkerDown": "up",
                "MetadataWorkerNotReady": "metadata_worker_ready",
                "MetadataWorkerMetricsAbsent": "metadata_worker_up"}
        for alert, metric in want.items():
            with self.subTest(alert=alert):
                self.assertIn(alert, by_name)
                self.assertIn(metric, metricnames.names_in_expr(by_name[alert]))
        self.assertIn("absent(", by_name["MetadataWorkerMetricsAbsent"])
        self.assertIn("0.25", by_name["MetadataWorkerLatencyHigh"])

    def test_every_alert_fires_and_stays_quiet_in_the_unit_tests(self):
        with open(metricnames.RULES_TEST, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        fires, quiet = set(), set()
        for t in doc["tests"]:
            for c in t.get("alert_rule_test", []):
                (fires if c.get("exp_alerts") else quiet).add(c["alertname"])
        for name in self.names:
            with self.subTest(alert=name):
                self.assertIn(name, fires, "no case where it fires")
                self.assertIn(name, quiet, "no case where it must not fire")
        self.assertEqual((fires | quiet) - set(self.names), set(), "tests of unknown alerts")

    def test_rules_read_only_exported_metrics_and_labels(self):
        used = metricnames.used_names(dashboards=[])
        self.assertIn("metadata_worker_consumer_lag", used)
        self.assertEqual(metricnames.missing(used, metricnames.exported_in_source()), {})
        labels = metricnames.used_labels(dashboards=[])
        self.assertEqual(labels - metricnames.labels_in_source() - metricnames.TARGET_LABELS,
                         set())

    def test_the_name_check_catches_a_metric_the_worker_does_not_export(self):
        with open(metricnames.RULES, encoding="utf-8") as f:
            text = f.read()
        broken = text.replace("metadata_worker_dead_letters_total", "metadata_worker_dead_letter_total")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "rules.yml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(broken)
            used = metricnames.used_names(rules_path=path, dashboards=[])
        self.assertEqual(set(metricnames.missing(used, metricnames.exported_in_source())),
                         {"metadata_worker_dead_letter_total"})


class TestNameExtraction(unittest.TestCase):
    """The PromQL reading of metricnames.py on the shapes the files use."""

    def test_names(self):
        cases = {
            'sum by (job, topic) (rate(a_total{x="y(",z=~"$job"}[5m])) > 0': {"a_total"},
            'deriv(sum by (job) (b)[10m:1m]) > 0 and on (job) c offset 5m == 0': {"b", "c"},
            'histogram_quantile(0.99, sum by (le) (rate(d_bucket[$__rate_interval])))': {"d_bucket"},
            'x / on (job) group_left (version) y > 1e3': {"x", "y"},
            'absent(metadata_worker_up{job="metadata-worker"})': {"metadata_worker_up"},
            'label_values(metadata_worker_up{job=~"$job"}, instance)': {"metadata_worker_up"},
            'label_values(job)': set(),
            'sum without (instance) (e) unless f': {"e", "f"},
        }
        for expr, want in cases.items():
            with self.subTest(expr=expr):
                self.assertEqual(metricnames.names_in_expr(expr), want)

    def test_labels(self):
        self.assertEqual(metricnames.labels_in_expr(
            'sum by (job, topic) (a{outcome="error",code!=""}) and on (job) b'),
            {"job", "topic", "outcome", "code"})
        self.assertEqual(metricnames.labels_in_expr('label_values(a{job=~"$job"}, instance)'),
                         {"job", "instance"})


if __name__ == "__main__":
    unittest.main()
