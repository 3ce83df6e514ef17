"""Metric and label names used by deploy/prometheus/rules.yml and deploy/grafana/*.json, and
the names the worker exports: shared by the offline tests of tests/deploy and the end-to-end
test tests/e2e/test_metrics_names.py (which compares them with a real /metrics scrape).

The PromQL reading is deliberately small: it knows the syntax these files use (selectors,
label matchers, ranges and subqueries, aggregations with by/without, vector matching with
on/ignoring, functions, Grafana's $variables and label_values()) and it errs towards
reporting a name: anything it cannot place is returned as a metric name, so that a test
comparing with the exported names fails rather than passes silently."""

import glob
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(ROOT, "deploy", "prometheus", "rules.yml")
RULES_TEST = os.path.join(ROOT, "deploy", "prometheus", "rules_test.yml")
DASHBOARDS = sorted(glob.glob(os.path.join(ROOT, "deploy", "grafana", "*.json")))
METRICS_C = os.path.join(ROOT, "worker", "metrics.c")

# Series Prometheus makes itself, and labels it adds to every scraped series.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
TARGET_LABELS = {"job", "instance"}

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan", "atan2"}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                "bottomk", "topk", "quantile"}
IDENT = re.compile(r"(?<![\w:.$])([A-Za-z_:][A-Za-z0-9_:]*)")
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*\"(?:[^\"\\]|\\.)*\"")


def _strip_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)


def grafana_to_promql(expr):
    """Grafana's label_values(selector, label) → the selector; label_values(label) → ''.
    Grafana's $variables in ranges become a duration PromQL accepts."""
    m = re.fullmatch(r"\s*label_values\((.*)\)\s*", expr, re.S)
    if m:
        arg = m.group(1)
        expr = arg.rsplit(",", 1)[0] if "," in arg else ""
    return re.sub(r"\$\{?__\w+\}?|\$\{?\w+\}?", "5m", expr)


def names_in_expr(expr):
    """The metric names an expression (PromQL, or a Grafana query) reads."""
    e = _strip_strings(grafana_to_promql(expr))
    e = re.sub(r"\{[^{}]*\}", " ", e)          # label matchers
    e = re.sub(r"\[[^\[\]]*\]", " ", e)        # ranges, subqueries
    e = GROUPING.sub(" ", e)                   # by (…), on (…), group_left (…)
    e = re.sub(r"\boffset\s+-?\d+\w*", " ", e)
    names = set()
    for m in IDENT.finditer(e):
        tok, rest = m.group(1), e[m.end():]
        if tok.lower() in KEYWORDS:
            continue
        if re.match(r"\s*\(", rest):               # a function or an aggregation
            continue
        if tok in AGGREGATIONS and re.match(r"\s*(by|without)\b", rest):
            continue
        names.add(tok)
    return names


def labels_in_expr(expr):
    """The label names an expression selects on or groups by (matchers, by/without,
    on/ignoring, group_left/right)."""
    e = grafana_to_promql(expr)
    labels = set()
    for block in re.findall(r"\{([^{}]*)\}", e):
        labels |= {m.group(1) for m in MATCHER.finditer(block)}
    for _, inner in GROUPING.findall(_strip_strings(e)):
        labels |= {l.strip() for l in inner.split(",") if l.strip()}
    if m := re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_]\w*)\s*\)\s*", expr, re.S):
        labels.add(m.group(2))
    return labels


# --- where the expressions are ---

def rules(path=RULES):
    """[(alert or record name, expr, labels, annotations)] of a rules file."""
    import yaml
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    out = []
    for g in doc.get("groups", []):
        for r in g.get("rules", []):
            out.append((r.get("alert") or r.get("record"), r["expr"], r.get("labels") or {},
                        r.get("annotations") or {}))
    return out


def dashboard_exprs(dash):
    """Every query of a dashboard (parsed JSON): panel targets (rows' nested panels too) and
    the template variables' queries."""
    exprs = []

    def panels(ps):
        for p in ps:
            for t in p.get("targets", []) or []:
                if "expr" in t:
                    exprs.append(t["expr"])
            panels(p.get("panels", []) or [])

    panels(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            exprs.append(q.get("query", "") if isinstance(q, dict) else q or "")
    return exprs


def used_names(rules_path=RULES, dashboards=None):
    """{metric name: [where it is used]} over the alert rules and the dashboards."""
    used = {}
    for name, expr, _, _ in rules(rules_path):
        for n in names_in_expr(expr):
            used.setdefault(n, []).append(f"rules.yml {name}")
    for path in DASHBOARDS if dashboards is None else dashboards:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
        for expr in dashboard_exprs(dash):
            for n in names_in_expr(expr):
                used.setdefault(n, []).append(os.path.basename(path))
    return used


def used_labels(rules_path=RULES, dashboards=None):
    labels = set()
    for _, expr, _, _ in rules(rules_path):
        labels |= labels_in_expr(expr)
    for path in DASHBOARDS if dashboards is None else dashboards:
        with open(path, encoding="utf-8") as f:
            for expr in dashboard_exprs(json.load(f)):
                labels |= labels_in_expr(expr)
    return labels


# --- what the worker exports ---

def exported_in_source(path=METRICS_C):
    """The names worker/metrics.c renders (run and api), histograms with their series'
    suffixes: a quick check without a worker; the real one is a scrape."""
    with open(path, encoding="utf-8") as f:
        src = f.read()
    names = set()
    for kind, name in re.findall(r'\b(counter|gauge|hist|head)\(out,\s*"(\w+)"', src):
        names.add("metadata_worker_" + name)
        if kind == "hist":
            names |= {f"metadata_worker_{name}_{s}" for s in ("bucket", "sum", "count")}
    return names


def labels_in_source(path=METRICS_C):
    """The label names worker/metrics.c writes (name=\\"…\\" in its format strings)."""
    with open(path, encoding="utf-8") as f:
        return set(re.findall(r'(\w+)=\\"', f.read()))


def parse_scrape(text):
    """(metric names, label names) of the samples of a Prometheus text exposition."""
    names, labels = set(), set()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{([^}]*)\})?\s", line)
        if not m:
            continue
        names.add(m.group(1))
        if m.group(3):
            labels |= set(re.findall(r'([A-Za-z_]\w*)="', m.group(3)))
    return names, labels


def missing(used, exported):
    """The used names (a dict from used_names) that are neither exported nor Prometheus's own."""
    return {n: w for n, w in used.items() if n not in exported and n not in PROMETHEUS_OWN}
