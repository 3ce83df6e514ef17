"""Checks of the Grafana dashboards deploy/grafana/*.json (issue 14):

- check_dashboard() below: valid JSON; Grafana's dashboard structure (schemaVersion, uid,
  title, panels with ids and gridPos inside the 24-column grid, a Prometheus datasource
  template variable that every query uses); every query valid PromQL (`promtool check rules`
  on a rules file made of them, Grafana's variables replaced); every metric and label a query
  reads exported by the worker (worker/metrics.c: the quick check; the acceptance is the real
  scrape of tests/e2e/test_metrics_names.py);
- it passes on the real dashboard and fails on broken copies (invalid JSON, a metric the worker
  does not export, bad PromQL, a panel without gridPos);
- the dashboard shows what SREs asked for: throughput by outcome, lag per partition, latency
  quantiles, errors by code, dead letters, database time and retries by SQLSTATE, rebalances.

Run: /usr/bin/python3 -m unittest discover -s tests/deploy -p 'test_[pd]*.py' -v
"""

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import metricnames  # noqa: E402

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
DASHBOARD = os.path.join(metricnames.ROOT, "deploy", "grafana", "metadata-worker.json")


def promql_problems(exprs):
    """promtool's complaints about the expressions (Grafana variables replaced), or []."""
    rules = [{"record": f"dashboard:query{i}", "expr": metricnames.grafana_to_promql(e)}
             for i, e in enumerate(exprs) if metricnames.grafana_to_promql(e).strip()]
    if not rules:
        return []
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "queries.yml")
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
        r = subprocess.run([PROMTOOL, "check", "rules", path], capture_output=True, text=True,
                           timeout=120)
    return [] if r.returncode == 0 else [f"promtool check rules: {r.stdout}{r.stderr}"]


def check_dashboard(text, exported=None, exported_labels=None):
    """The problems of a dashboard's JSON text, [] when it is fine."""
    exported = metricnames.exported_in_source() if exported is None else exported
    exported_labels = metricnames.labels_in_source() if exported_labels is None else exported_labels
    try:
        dash = json.loads(text)
    except ValueError as e:
        return [f"not JSON: {e}"]
    if not isinstance(dash, dict):
        return ["not a JSON object"]
    problems = []
    for key, kind in (("title", str), ("uid", str), ("schemaVersion", int), ("panels", list),
                      ("templating", dict)):
        if not isinstance(dash.get(key), kind):
            problems.append(f"{key}: missing or not {kind.__name__}")
    if problems:
        return problems
    if dash["schemaVersion"] < 36:
        problems.append(f"schemaVersion {dash['schemaVersion']} is older than Grafana 9")
    variables = {v.get("name"): v for v in dash["templating"].get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("no datasource template variable of type prometheus")

    ids = []

    def walk(panels, where):
        for p in panels:
            name = f"{where}panel {p.get('id')} {p.get('title')!r}"
            ids.append(p.get("id"))
            if not isinstance(p.get("id"), int) or not p.get("type") or not p.get("title"):
                problems.append(f"{name}: needs an integer id, a type and a title")
            g = p.get("gridPos")
            if not isinstance(g, dict) or not all(isinstance(g.get(k), int) for k in "hwxy"):
                problems.append(f"{name}: gridPos needs integer h, w, x, y")
            elif g["x"] < 0 or g["w"] < 1 or g["h"] < 1 or g["x"] + g["w"] > 24:
                problems.append(f"{name}: gridPos {g} is outside the 24-column grid")
            if p.get("type") == "row":
                walk(p.get("panels", []), f"{name} > ")
                continue
            targets = p.get("targets")
            if not targets:
                problems.append(f"{name}: no targets")
                continue
            refs = [t.get("refId") for t in targets]
            if len(set(refs)) != len(refs) or None in refs:
                problems.append(f"{name}: refIds missing or repeated")
            for t in targets:
                if not isinstance(t.get("expr"), str) or not t["expr"].strip():
                    problems.append(f"{name}: a target without expr")
                for d in (p.get("datasource"), t.get("datasource")):
                    if not isinstance(d, dict) or d.get("uid") != "${datasource}":
                        problems.append(f"{name}: datasource is not the $datasource variable")

    walk(dash["panels"], "")
    if len(set(ids)) != len(ids):
        problems.append("panel ids repeat")
    if problems:
        return problems

    exprs = metricnames.dashboard_exprs(dash)
    for e in exprs:
        unknown = {n for n in metricnames.names_in_expr(e)
                   if n not in exported and n not in metricnames.PROMETHEUS_OWN}
        if unknown:
            problems.append(f"metrics the worker does not export: {sorted(unknown)} in {e}")
        labels = metricnames.labels_in_expr(e) - exported_labels - metricnames.TARGET_LABELS
        if labels:
            problems.append(f"labels the worker does not export: {sorted(labels)} in {e}")
    return problems + promql_problems(exprs)


def read():
    with open(DASHBOARD, encoding="utf-8") as f:
        return f.read()


def problems_with_first_expr(expr):
    """check_dashboard's problems with the first panel's first query replaced by expr."""
    dash = json.loads(read())
    next(p for p in dash["panels"] if p["type"] != "row")["targets"][0]["expr"] = expr
    return check_dashboard(json.dumps(dash))


class TestDashboard(unittest.TestCase):

    def test_the_dashboard_passes_the_check(self):
        self.assertEqual(check_dashboard(read()), [])

    def test_every_dashboard_passes_the_check(self):
        self.assertIn(DASHBOARD, metricnames.DASHBOARDS)
        for path in metricnames.DASHBOARDS:
            with self.subTest(path=path), open(path, encoding="utf-8") as f:
                self.assertEqual(check_dashboard(f.read()), [])

    def test_it_shows_what_sres_asked_for(self):
        dash = json.loads(read())
        exprs = metricnames.dashboard_exprs(dash)
        joined = "\n".join(exprs)
        used = set().union(*(metricnames.names_in_expr(e) for e in exprs))
        for metric in ("metadata_worker_items_total", "metadata_worker_consumer_lag",
                       "metadata_worker_produce_to_result_seconds_bucket",
                       "metadata_worker_dead_letters_total",
                       "metadata_worker_db_upsert_seconds_bucket",
                       "metadata_worker_db_retries_total", "metadata_worker_rebalances_total"):
            self.assertIn(metric, used)
        for grouping in ("by (outcome)", "by (topic, partition)", "by (code)", "by (sqlstate)"):
            self.assertIn(grouping, joined)
        self.assertIn("histogram_quantile(0.99, sum by (le) (rate("
                      "metadata_worker_produce_to_result_seconds_bucket", joined)
        self.assertIn("datasource", {v["name"] for v in dash["templating"]["list"]})
        self.assertEqual(dash["uid"], "metadata-worker")

    def test_invalid_json_fails(self):
        text = read()
        problems = check_dashboard(text[: len(text) // 2])
        self.assertEqual(len(problems), 1)
        self.assertTrue(problems[0].startswith("not JSON"), problems)

    def test_a_metric_the_worker_does_not_export_fails(self):
        problems = problems_with_first_expr(
            'sum(rate(metadata_worker_items_ingested_total{job=~"$job"}[$__rate_interval]))')
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("metadata_worker_items_ingested_total", problems[0])

    def test_a_label_the_worker_does_not_export_fails(self):
        problems = problems_with_first_expr('sum by (error) (rate(metadata_worker_items_total[5m]))')
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("'error'", problems[0])

    def test_bad_promql_fails(self):
        problems = problems_with_first_expr('sum by (outcome (rate(metadata_worker_items_total[5m]))')
        self.assertTrue(any("promtool" in p for p in problems), problems)

    def test_structure_errors_fail(self):
        base = json.loads(read())
        breakages = {
            "no gridPos": lambda d: d["panels"][1].pop("gridPos"),
            "outside the grid": lambda d: d["panels"][1]["gridPos"].update(x=20, w=12),
            "no datasource variable": lambda d: d["templating"].update(list=[]),
            "no targets": lambda d: d["panels"][1].update(targets=[]),
            "repeated ids": lambda d: d["panels"][2].update(id=d["panels"][1]["id"]),
            "no schemaVersion": lambda d: d.pop("schemaVersion"),
        }
        for what, breaking in breakages.items():
            with self.subTest(what=what):
                d = copy.deepcopy(base)
                breaking(d)
                self.assertNotEqual(check_dashboard(json.dumps(d)), [])


if __name__ == "__main__":
    unittest.main()
