"""The soak's end: the table check and the summary (printed and written to soak-<date>.md).

Memory and fds are judged on samples of a settled worker (taken SETTLE_S or more after its
latest start). A worker's RSS rises while it catches up after a restart or a PostgreSQL outage
(a larger transaction under backlog, the prefetch queue full) and stays near that level for the
rest of the process's life; a leak instead raises the peaks from one process to the next. So
the run fails when the highest RSS of the second half exceeds the highest of the first half by
more than RSS_GROWTH_LIMIT (20%; both halves hold worker restarts and a PostgreSQL restart), or
when any sample exceeds RSS_LIMIT_MB (the memory limit of deploy/kubernetes); fds likewise
(FD_GROWTH_LIMIT more at the most). The medians of the first settled and the last window, and a
slope fitted within each worker process (each lives only SOAK_RESTART_MINUTES) and pooled, are
reported beside them.
Recovery after an event: the result backlog (messages delivered to Kafka whose results are not
all in, counted every second) must fall back to the 95th percentile of the 60 s before the
event, plus one message; the seconds until then are reported.
"""

import statistics

RSS_GROWTH_LIMIT = 0.20
RSS_LIMIT_MB = 256  # deploy/kubernetes/base/worker.yaml: limits.memory 256Mi
FD_GROWTH_LIMIT = 2
# Shorter runs are reported but not judged on the peaks: their halves do not hold the same
# events (in a 6-minute run the first half's PostgreSQL restart falls within a worker's
# settling minute, so only the second half has a catch-up).
JUDGE_PEAKS_MIN_MINUTES = 30
SETTLE_S = 60

COLS = ("external_customer_id, external_conversation_id, event_id, status, phone_number, "
        "email_address, user_id, address_country, address_state, address_zipcode, attributes")


def sample_line(s):
    return (f"{s['minute']:5.1f} min  RSS {s['rss_mb']} MB  fds {s['fds']}  lag applied "
            f"{s.get('lag_applied')} committed {s.get('lag_committed')}  p50/p99 "
            f"{s['latency_p50_ms']}/{s['latency_p99_ms']} ms ({s['latency_n']} msgs)  "
            f"starts {s['worker_starts']}  {' '.join(s['events_in_interval'])}")


def check_table(bench, feeder, path):
    """Row count against the stream's distinct valid keys; the sampled keys' rows against
    their candidates (gen.SpreadState), every column but timestamps and source."""
    import psycopg2
    feeder.sample.write_candidates_file(path)
    conn = psycopg2.connect(bench.dsn("soak"))
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TEMP TABLE expected ({bench.STAGE_COLS})")
            with open(path, encoding="utf-8") as f:
                cur.copy_expert("COPY expected FROM STDIN", f)
            cur.execute("SELECT count(*) FROM customer_metadata")
            rows = cur.fetchone()[0]
            cur.execute("CREATE TEMP TABLE got AS SELECT m.* FROM customer_metadata m WHERE "
                        "(external_customer_id, external_conversation_id) IN "
                        "(SELECT cid, conv FROM expected)")
            cur.execute("SELECT (SELECT count(*) FROM got), "
                        "(SELECT count(*) FROM (SELECT DISTINCT cid, conv FROM expected) k)")
            found, keys = cur.fetchone()
            cur.execute(f"SELECT count(*) FROM (SELECT {COLS} FROM got EXCEPT SELECT cid, conv, eid, "
                        "status, phone, email, uid, country, state, zip, attrs FROM expected) d")
            differing = cur.fetchone()[0]
    finally:
        conn.close()
    return {"rows": rows, "expected_rows": feeder.rows, "sample_keys": keys,
            "sample_found": found, "sample_differing": differing,
            "ok": rows == feeder.rows and found == keys and differing == 0}


def starts_of(run):
    return [0.0] + [e["t"] for e in run["events"] if e["action"] in ("sigterm", "sigkill")]


def settled(samples, starts):
    return [s for s in samples if s["rss_mb"] is not None
            and s["t"] - max(t for t in starts if t <= s["t"]) >= SETTLE_S]


def window_median(samples, lo, hi, key):
    xs = [s[key] for s in samples if lo <= s["t"] < hi and s[key] is not None]
    return statistics.median(xs) if xs else None


def half_peaks(samples, total, key):
    """Highest value of `key` in the first and in the second half of the run."""
    a = [s[key] for s in samples if s["t"] < total / 2 and s[key] is not None]
    b = [s[key] for s in samples if s["t"] >= total / 2 and s[key] is not None]
    return (max(a) if a else None), (max(b) if b else None)


def pooled_slope_per_hour(samples, starts, key):
    """Least-squares slope within each worker process, pooled (units per hour)."""
    num = den = 0.0
    for a, b in zip(starts, starts[1:] + [float("inf")]):
        seg = [(s["t"], s[key]) for s in samples if a <= s["t"] < b and s[key] is not None]
        if len(seg) < 2:
            continue
        mt = sum(t for t, _ in seg) / len(seg)
        mv = sum(v for _, v in seg) / len(seg)
        num += sum((t - mt) * (v - mv) for t, v in seg)
        den += sum((t - mt) ** 2 for t, _ in seg)
    return num / den * 3600 if den else None


def recoveries(run):
    series = run["inflight"]
    out = []
    for e in run["events"]:
        before = sorted(n for t, n in series if e["t"] - 60 <= t < e["t"])
        if not before:
            continue
        steady = before[int(0.95 * (len(before) - 1))] + 1
        after = [(t, n) for t, n in series if t >= e["t"]]
        back = next((t for t, n in after if n <= steady and t > e["t"] + 1), None)
        peak = max((n for t, n in after if back is None or t <= back), default=None)
        out.append({**e, "steady_msgs": steady, "peak_msgs": peak,
                    "recovered_s": None if back is None else round(back - e["t"], 1)})
    return out


def fmt(v, digits=0):
    if v is None:
        return "—"
    return f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}"


def summarize(run, base):
    with open(base + ".jsonl") as f:
        import json
        samples = [r for r in map(json.loads, f) if "sample" in r]
    starts = starts_of(run)
    total = run["minutes"] * 60
    win = min(600.0, total / 4)
    st = settled(samples, starts)
    first_lo = (starts[1] if len(starts) > 1 else 0.0) + SETTLE_S
    res = {}
    for key in ("rss_mb", "fds"):
        a = window_median(st, first_lo, first_lo + win, key)
        b = window_median(st, total - win, total + 1, key) or window_median(st, total - win, 1e9, key)
        pa, pb = half_peaks(st, total, key)
        res[key] = {"first": a, "last": b, "growth": (b / a - 1) if a and b else None,
                    "peak_first_half": pa, "peak_second_half": pb,
                    "peak_growth": (pb / pa - 1) if pa and pb else None,
                    "peak": max((s[key] for s in samples if s[key] is not None), default=None),
                    "slope_per_hour": pooled_slope_per_hour(st, starts, key)}
    # An event's interval and the next one (the catch-up after it) count as "with events".
    near = [bool(s["events_in_interval"]) or (i > 0 and bool(samples[i - 1]["events_in_interval"]))
            for i, s in enumerate(samples)]
    quiet = [s["latency_p99_ms"] for s, n in zip(samples, near) if not n
             and s["latency_p99_ms"] is not None and not s.get("final")]
    loud = [s["latency_p99_ms"] for s, n in zip(samples, near) if n
            and s["latency_p99_ms"] is not None]
    rec = recoveries(run)
    judged = run["minutes"] >= JUDGE_PEAKS_MIN_MINUTES
    lags = [s["lag_applied"] for s in samples if s.get("lag_applied") is not None]
    t = run["table"]
    checks = [
        ("every produced item got its result",
         run["missing_items"] == 0 and run["unsent_messages"] == 0 and not run["errors"],
         f"{run['produced_messages']:,} messages produced, {run['unsent_messages']} undelivered, "
         f"{run['missing_messages']} incomplete ({run['missing_items']} items without a result), "
         f"{run['repeated_results']:,} repeated results; errors: {run['errors'][:3] or 'none'}"),
        ("table as the stream implies", t["ok"],
         f"{t['rows']:,} rows (expected {t['expected_rows']:,}); sample of {t['sample_keys']:,} keys: "
         f"{t['sample_found']:,} found, {t['sample_differing']} differing"),
        ("no unexpected worker exit", not run["unexpected"],
         "; ".join(run["unexpected"]) or f"{run['worker_starts']} starts, all scheduled"),
        (f"RSS peak of the second half <= {1 + RSS_GROWTH_LIMIT:g} x the first half's"
         + ("" if judged else f" (not judged under {JUDGE_PEAKS_MIN_MINUTES} min)"),
         not judged or (res["rss_mb"]["peak_growth"] is not None
                        and res["rss_mb"]["peak_growth"] <= RSS_GROWTH_LIMIT),
         f"{fmt(res['rss_mb']['peak_first_half'], 1)} -> "
         f"{fmt(res['rss_mb']['peak_second_half'], 1)} MB"),
        (f"RSS never above {RSS_LIMIT_MB} MB", res["rss_mb"]["peak"] is not None
         and res["rss_mb"]["peak"] <= RSS_LIMIT_MB, f"peak {fmt(res['rss_mb']['peak'], 1)} MB"),
        (f"fds peak of the second half <= the first half's + {FD_GROWTH_LIMIT}"
         + ("" if judged else f" (not judged under {JUDGE_PEAKS_MIN_MINUTES} min)"),
         not judged or (res["fds"]["peak_first_half"] is not None
                        and res["fds"]["peak_second_half"] is not None
                        and res["fds"]["peak_second_half"]
                        <= res["fds"]["peak_first_half"] + FD_GROWTH_LIMIT),
         f"{fmt(res['fds']['peak_first_half'])} -> {fmt(res['fds']['peak_second_half'])}"),
    ]
    lines = [f"# metadata-worker soak, {run['date']}", "",
             f"- {run['minutes']:g} min at {run['rate']:,.0f} items/s "
             + (f"(half the measured maximum {run['max_rate_measured']:,.0f})" if run["max_rate_measured"]
                else "(SOAK_RATE)")
             + f", {run['partitions']} partitions; worker restarted every {run['restart_minutes']:g} min "
               f"(SIGTERM and SIGKILL in turn, static membership), PostgreSQL restarted twice "
               f"({5:g} s down); samples every {run['sample_seconds']:g} s",
             f"- worker `{run['git']}`, {run['machine']['nproc']} CPUs ({run['machine']['cpu_model']})",
             "- lag: applied = high watermarks minus customer_metadata_offsets.next_offset (— while "
             "PostgreSQL is down); committed = minus the group's committed offsets. Latency: input "
             "CreateTime -> CreateTime of the message's last result, messages completed in the interval.",
             "", "| min | RSS MB | fds | lag applied | lag committed | p50 ms | p99 ms | msgs done | "
             "starts | DB MB | retries | events |", "|" + " ---: |" * 11 + " --- |"]
    for s in samples:
        m = s.get("metrics") or {}
        retries = sum(v for k, v in m.items() if k.startswith("db_retries_total"))
        lines.append(f"| {s['minute']:.1f} | {fmt(s['rss_mb'], 1)} | {fmt(s['fds'])} | "
                     f"{fmt(s.get('lag_applied'))} | {fmt(s.get('lag_committed'))} | "
                     f"{fmt(s['latency_p50_ms'])} | {fmt(s['latency_p99_ms'])} | {s['latency_n']:,} | "
                     f"{s['worker_starts']} | {fmt(s.get('db_mb'))} | {retries if m else '—'} | "
                     f"{' '.join(s['events_in_interval']) + (' final' if s.get('final') else '')} |")
    lines += ["", "## Findings", ""]
    for key, unit in (("rss_mb", "MB"), ("fds", "")):
        r = res[key]
        lines.append(f"- {key.split('_')[0].upper()}: first window {fmt(r['first'], 1)}, last "
                     f"{fmt(r['last'], 1)} {unit} (growth {fmt(None if r['growth'] is None else 100 * r['growth'], 1)}%); "
                     f"slope within a process {fmt(r['slope_per_hour'], 1)} {unit}/hour; "
                     f"peak of the first half {fmt(r['peak_first_half'], 1)}, of the second "
                     f"{fmt(r['peak_second_half'], 1)} {unit}")
    lines.append(f"- lag (applied, sampled): max {fmt(max(lags, default=None))} messages")
    for r in rec:
        lines.append(f"- {r['action']} at {r['t'] / 60:.1f} min: result backlog peaked at "
                     f"{fmt(r['peak_msgs'])} messages, back to steady (<= {r['steady_msgs']}) after "
                     + (f"{r['recovered_s']} s" if r["recovered_s"] is not None else "NEVER"))
    lines.append(f"- latency p99 per interval: without events median {fmt(statistics.median(quiet) if quiet else None)}"
                 f", max {fmt(max(quiet, default=None))} ms; with a restart in the interval max "
                 f"{fmt(max(loud, default=None))} ms")
    lines += ["", "## Checks", ""]
    lines += [f"- {'ok' if ok else 'FAILED'}: {name}: {detail}" for name, ok, detail in checks]
    ok = all(c[1] for c in checks)
    lines += ["", f"soak: {'ok' if ok else 'FAILED'}; samples in {base}.jsonl"]
    text = "\n".join(lines) + "\n"
    with open(base + ".md", "w") as f:
        f.write(text)
    print(text)
    return ok
