"""The benchmark's extra phases, run by bench.py after the main table (--phases).

  curves   scale curves of the worker, each point a short run on a fresh database and topics:
           the worker process(es) start on the empty input topic; once every one holds its
           partitions, the pre-encoded stream is produced at full speed and timed from the
           first produce to one result per item in the results topic:
             items per message   1, 10, 100, 1,000 (gen.Stream, 6 partitions, one worker,
                                 empty table; 20,000 items for 1 per message, else --curve-items)
             worker processes    1 and 2 in one consumer group (100 items per message; the
                                 1-worker point is the 100-per-message point above)
             table rows          0, 1M, 5M rows pre-filled straight with SQL (INSERT ... SELECT
                                 FROM generate_series: distinct keys, a few columns and three
                                 attributes), then a --curve-items stream of which half the
                                 items update random existing rows and half insert new ones
           For each point: items/s (whole run and steady, from the first result on), the
           worker's CPU seconds per million items (all its processes), PostgreSQL's, peak RSS.
           Linearity shows as a CPU per item that stays flat along each curve.
  backlog  bounded memory: --backlog-items items (messages of 100; 60 pre-encoded messages of
           gen.Stream reused with a per-message key prefix, so every message has its own keys)
           wait in a 6-partition topic; then one worker starts and drains it while its VmRSS is
           sampled every 0.5 s, for --backlog-seconds or until drained; then SIGTERM. Reports
           the peak (VmHWM) and the plateau, and fails the run when the peak reaches 128 MB.

Imported by bench.py (which registers itself as the module `bench`).
"""

import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import time

import psycopg2
from confluent_kafka import Producer

import bench
import gen
from bench import BenchError, log

RSS_LIMIT_MB = 128


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def vm_status(pid):
    """(VmRSS, VmHWM) of a process in MB."""
    rss = hwm = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return rss, hwm


def new_producer():
    return Producer({"bootstrap.servers": bench.BROKERS, "linger.ms": 50,
                     "batch.num.messages": 100000, "batch.size": 4 * 1024 * 1024,
                     "compression.type": "none", "enable.idempotence": True,
                     "queue.buffering.max.kbytes": 262144,
                     "queue.buffering.max.messages": 1000000, "message.timeout.ms": 300000})


def produce_all(topic, payloads):
    """Produces (partition, payload) pairs; returns (seconds, bytes)."""
    prod = new_producer()
    bad = []

    def on_delivery(err, _msg):
        if err:
            bad.append(str(err))

    size = 0
    t0 = time.monotonic()
    for p, payload in payloads:
        size += len(payload)
        while True:
            try:
                prod.produce(topic, payload, partition=p, on_delivery=on_delivery)
                break
            except BufferError:
                prod.poll(0.05)
        prod.poll(0)
    left = prod.flush(600)
    if left or bad:
        raise BenchError(f"producing to {topic} failed: {left} undelivered; {bad[:3]}")
    return time.monotonic() - t0, size


def fresh_db(name):
    bench.drop_db(name)
    bench.create_db(name)
    bench.migrate(name)


def worker_env(ctx, tag, db, topic):
    env = dict(os.environ, KAFKA_BROKERS=bench.BROKERS, KAFKA_GROUP_ID=f"bench-{bench.RUN_ID}-{tag}",
               KAFKA_INPUT_TOPIC=topic, KAFKA_RESULTS_TOPIC=f"bench-{bench.RUN_ID}-{tag}-results",
               KAFKA_DLQ_TOPIC=f"bench-{bench.RUN_ID}-{tag}-dlq", DATABASE_URL=bench.dsn(db),
               LOG_LEVEL="debug")
    env.update(ctx["worker_env"])
    bench.create_topics([(env["KAFKA_RESULTS_TOPIC"], 6), (env["KAFKA_DLQ_TOPIC"], 1)])
    return env


def stop_workers(procs, label):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    rcs = []
    for p in procs:
        try:
            rcs.append(p.wait(60))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rcs.append("killed after 60 s")
    if any(rc != 0 for rc in rcs):
        raise BenchError(f"{label}: worker exit statuses on SIGTERM: {rcs}")


class Assignment:
    """Follows the partitions each worker holds, from its log ("partition assigned",
    "partition revoked", "partition lost" lines)."""

    def __init__(self, logs):
        self.logs = logs
        self.pos = [0] * len(logs)
        self.held = [set() for _ in logs]
        self.rebalances = 0

    def poll(self):
        for i, name in enumerate(self.logs):
            with open(name, "rb") as f:
                f.seek(self.pos[i])
                data = f.read()
            end = data.rfind(b"\n") + 1
            self.pos[i] += end
            for line in data[:end].splitlines():
                if b'"msg":"partition ' not in line:
                    continue
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("msg") == "partition assigned":
                    self.held[i].add(ev.get("partition"))
                    self.rebalances += 1
                elif ev.get("msg") in ("partition revoked", "partition lost"):
                    self.held[i].discard(ev.get("partition"))

    def settled(self, n_parts):
        """Every worker holds partitions, and all n_parts are held."""
        return all(self.held) and sum(len(h) for h in self.held) == n_parts


def time_workers(ctx, tag, db, topic, payloads, n, k):
    """Starts k worker processes on the (empty) input topic and waits until every one holds
    its partitions; then produces the pre-encoded payloads ([(partition, bytes)], n items) as
    fast as it can and returns the figures once the results topic holds one result per item.
    Timed from the first produce: the group's start-up (join, rebalances of several
    processes) is left out; producing is much faster than the worker, so it drains a backlog."""
    env = worker_env(ctx, tag, db, topic)
    results = env["KAFKA_RESULTS_TOPIC"]
    wm = ctx["wm"]
    logs = [os.path.join(ctx["workdir"], f"{tag}-{i}.log") for i in range(k)]
    procs = []
    try:
        t_launch = time.monotonic()
        for lf_name in logs:
            with open(lf_name, "wb") as lf:
                procs.append(subprocess.Popen([bench.BIN, "run"], env=env,
                                              stdout=subprocess.DEVNULL, stderr=lf))

        def check_alive(got):
            for p, lf_name in zip(procs, logs):
                if p.poll() is not None:
                    raise BenchError(f"{tag}: a worker exited {p.returncode} with {got} of {n} "
                                     f"results; log: {lf_name}\n" + bench.tail(lf_name))

        asg = Assignment(logs)
        while True:
            time.sleep(0.1)
            asg.poll()
            if asg.settled(gen.PARTITIONS):
                break
            check_alive(0)
            if time.monotonic() - t_launch > 90:
                raise BenchError(f"{tag}: partitions not assigned to all {k} workers after 90s: "
                                 f"{[sorted(h) for h in asg.held]}")
        join_s = time.monotonic() - t_launch
        time.sleep(0.5)  # let the last assignment's offset look-ups finish
        bench.checkpoint()
        cpu0 = sum(bench.proc_times(p.pid)[0] for p in procs)
        meter = bench.CpuMeter()
        t0 = time.monotonic()
        psecs, nbytes = produce_all(topic, payloads)
        deadline = t0 + 120 + n / 500
        t_first, n_first = None, 0
        while True:
            got = wm.total(results, 6)
            now = time.monotonic()
            if got and t_first is None:
                t_first, n_first = now, got
            if got >= n:
                break
            check_alive(got)
            if now > deadline:
                raise BenchError(f"{tag}: only {got} of {n} results after {now - t0:.0f}s")
            time.sleep(0.1)
        t_end = time.monotonic()
        cpu = sum(bench.proc_times(p.pid)[0] for p in procs) - cpu0
        others = meter.stop(cpu)
        rss = max(bench.vm_hwm_mb(p.pid) for p in procs)
        asg.poll()
        time.sleep(0.5)
        extra = wm.total(results, 6) - n
        stop_workers(procs, tag)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    merged = os.path.join(ctx["workdir"], f"{tag}-all.log")
    with open(merged, "wb") as out:
        for lf_name in logs:
            with open(lf_name, "rb") as f:
                out.write(f.read())
    with open(os.path.join(ctx["out"], f"{ctx['name']}-curves-worker.log"), "ab") as out:
        for i, lf_name in enumerate(logs):
            out.write(json.dumps({"bench": tag, "worker": i}).encode() + b"\n")
            with open(lf_name, "rb") as f:
                out.write(f.read())
    secs = t_end - t0
    # Steady: from the first result on (the first transaction's items excluded); None when
    # every result came at once.
    steady = (n - n_first) / (t_end - t_first) if t_first and n > n_first else None
    b = bench.batch_stats(merged, secs)
    return {"items": n, "workers": k, "seconds": secs, "items_per_s": n / secs,
            "steady_items_per_s": steady, "first_result_s": (t_first or t_end) - t0,
            "produce_s": psecs, "bytes": nbytes, "join_s": join_s,
            "partitions_held_at_end": [sorted(h) for h in asg.held],
            "worker_cpu_s": cpu, "cpu_s_per_m": bench.per_m(cpu, n),
            "pg_cpu_s_per_m": bench.per_m(others["pg"], n),
            "broker_cpu_s_per_m": bench.per_m(others["broker"], n),
            "other_load_cpu_s": others["other"], "peak_rss_mb": rss,
            "duplicate_results": extra,
            "transactions": b["transactions"] if b else None,
            "items_per_txn_mean": b["items_per_txn_mean"] if b else None,
            "db_ms_sum": b["db_ms_sum"] if b else None}


# ---------------------------------------------------------------- curves

def gen_point(ctx, tag, n, per_msg, k):
    """A point on a gen.Stream (empty table); the table is verified afterwards."""
    db = f"bench_{bench.RUN_ID}_{tag}".replace("-", "_")
    topic = f"bench-{bench.RUN_ID}-{tag}-input"
    stream = gen.Stream(n, ctx["seed"], per_msg=per_msg, kind=ctx["kind"])
    bench.create_topics([(topic, stream.partitions)])
    fresh_db(db)
    state = stream.new_state()
    payloads, invalid = [], 0
    for _m, p, off, payload, items, inv in stream.payloads():
        state.apply_message(p, off, items, inv)
        invalid += sum(inv)
        payloads.append((p, payload))
    exp = os.path.join(ctx["workdir"], f"{tag}-expected.copy")
    state.write_candidates_file(exp)
    log(f"{tag}: {n:,} items in {stream.n_messages:,} messages encoded; {k} worker(s)")
    r = time_workers(ctx, tag, db, topic, payloads, n, k)
    bench.verify(db, exp, tag)
    bench.drop_db(db)
    r.update({"messages": stream.n_messages, "items_per_message": per_msg, "table_rows": 0,
              "rows_after": len(state.rows), "invalid_items": invalid})
    return r


PREFILL_SQL = """
INSERT INTO customer_metadata
    (external_customer_id, external_conversation_id, event_id, status, phone_number,
     email_address, user_id, address_country, address_state, address_zipcode, attributes,
     source_topic, source_partition, source_offset, source_index)
SELECT 'bench-cust-' || (i / 2), 'bench-conv-' || i, 'prefill-' || i,
       (ARRAY['new','existing','active','pending','verified','vip'])[1 + i % 6],
       '(555)555-' || lpad((i % 10000)::text, 4, '0'),
       'user' || i || '@example.com', 'user' || (i % 9999991),
       (ARRAY['United-States','Brazil','Germany','Japan'])[1 + i % 4],
       (ARRAY['New-York','California','Texas','Bayern','Lagos'])[1 + i % 5],
       lpad((i % 100000)::text, 5, '0'),
       jsonb_build_object('plan', (ARRAY['gold','silver','bronze'])[1 + i % 3],
                          'segment', (ARRAY['smb','enterprise'])[1 + i % 2],
                          'nps', (i % 11)::text),
       'bench-prefill', 0, i, 0
FROM generate_series(1, {rows}) AS i
"""


def prefill(db, rows):
    """Fills customer_metadata with `rows` synthetic rows straight with SQL; the secondary
    indexes are dropped and rebuilt from their own definitions (faster than maintaining them
    row by row), then VACUUM ANALYZE. Returns seconds."""
    t0 = time.monotonic()
    conn = psycopg2.connect(bench.dsn(db))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET maintenance_work_mem = '512MB'")
            cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = "
                        "'customer_metadata' AND indexname <> 'customer_metadata_pkey'")
            idx = cur.fetchall()
            for name, _ in idx:
                cur.execute(f'DROP INDEX "{name}"')
            cur.execute(PREFILL_SQL.format(rows=int(rows)))
            for _, definition in idx:
                cur.execute(definition)
            cur.execute("VACUUM (FREEZE, ANALYZE) customer_metadata")
            cur.execute("SELECT count(*) FROM customer_metadata")
            have = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'customer_metadata'")
            n_idx = cur.fetchone()[0]
            cur.execute("SELECT pg_total_relation_size('customer_metadata')")
            size = cur.fetchone()[0]
    finally:
        conn.close()
    if have != rows or n_idx != len(idx) + 1:
        raise BenchError(f"prefill of {db}: {have} rows (wanted {rows}), {n_idx} indexes")
    return time.monotonic() - t0, size


def table_stream(n, rows, seed):
    """n items in messages of 100 over 6 partitions: half update a random existing row (when
    rows > 0), half insert new keys. Returns (payloads [(partition, bytes)], keys touched)."""
    rng = random.Random(seed)
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    keys = set()
    new_i = 10_000_001  # above every prefilled key
    out = []
    per = gen.ITEMS_PER_MSG
    for m in range((n + per - 1) // per):
        items = []
        for j in range(min(per, n - m * per)):
            eid = f"tbl-{m}-{j}"
            if rows and rng.random() < 0.5:
                i = rng.randrange(1, rows + 1)
                key = (f"bench-cust-{i // 2}", f"bench-conv-{i}")
                items.append(gen._update_item(rng, eid, key))
            else:
                key = (f"bench-cust-{new_i // 2}", f"bench-conv-{new_i}")
                items.append(gen._new_item(rng, eid, key[0], key[1], new_i))
                new_i += 1
            keys.add(key)
        out.append((m % gen.PARTITIONS, dumps({"items": items}).encode()))
    return out, keys


def table_point(ctx, tag, n, rows):
    db = f"bench_{bench.RUN_ID}_{tag}".replace("-", "_")
    topic = f"bench-{bench.RUN_ID}-{tag}-input"
    bench.create_topics([(topic, gen.PARTITIONS)])
    fresh_db(db)
    fill_s, size = prefill(db, rows) if rows else (0.0, None)
    if rows:
        log(f"{tag}: pre-filled {rows:,} rows in {fill_s:.1f}s ({size / 1e6:,.0f} MB with indexes)")
    payloads, keys = table_stream(n, rows, ctx["seed"] + rows)
    new_keys = sum(1 for k in keys if int(k[1].rsplit("-", 1)[1]) > rows)
    log(f"{tag}: {n:,} items encoded; {len(keys) - new_keys:,} existing and {new_keys:,} new keys")
    r = time_workers(ctx, tag, db, topic, payloads, n, 1)
    conn = psycopg2.connect(bench.dsn(db))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*), count(*) FILTER (WHERE event_id LIKE 'tbl-%') "
                        "FROM customer_metadata")
            have, touched = cur.fetchone()
    finally:
        conn.close()
    if have != rows + new_keys or touched != len(keys):
        raise BenchError(f"{tag}: {have} rows ({rows + new_keys} expected), {touched} touched by "
                         f"the stream ({len(keys)} expected)")
    log(f"{tag}: table checked ({have:,} rows, {touched:,} written by the stream)")
    bench.drop_db(db)
    r.update({"messages": len(payloads), "items_per_message": gen.ITEMS_PER_MSG,
              "table_rows": rows, "prefill_s": fill_s, "table_bytes": size,
              "existing_keys_hit": len(keys) - new_keys, "new_keys": new_keys,
              "rows_after": have})
    return r


def run_curves(ctx, a):
    """The scale curves; returns the report section."""
    t0 = time.monotonic()
    sec = {"date": bench.now_iso(), "loadavg_at_start": loadavg(),
           "worker": ctx["worker_info"], "method": "warm start", "points": []}
    pts = sec["points"]
    n = a.curve_items
    # The worker logs of every point (debug: one line per transaction), for a later look.
    open(os.path.join(ctx["out"], f"{ctx['name']}-curves-worker.log"), "wb").close()

    def add(curve, point, r, shared=None):
        r = dict(r, curve=curve, point=point)
        if shared:
            r["same_run_as"] = shared
        pts.append(r)
        log(f"curves: {curve} = {point}: {r['items']:,} items in {r['seconds']:.2f}s, "
            f"{r['items_per_s']:,.0f} items/s (steady {fmt_opt(r['steady_items_per_s'])}), "
            f"worker CPU {r['cpu_s_per_m']:.2f} s/M items, PostgreSQL "
            f"{fmt_opt(r['pg_cpu_s_per_m'], 2)} s/M items")

    base = None
    for per in a.curve_per_msg:
        items = a.curve_items_one if per == 1 else n
        r = gen_point(ctx, f"curve-msg{per}", items, per, 1)
        add("items per message", per, r)
        if per == gen.ITEMS_PER_MSG:
            base = r
    for k in a.curve_workers:
        if k == 1 and base is not None:
            add("worker processes", 1, base, shared="items per message = 100")
        else:
            add("worker processes", k, gen_point(ctx, f"curve-workers{k}", n, gen.ITEMS_PER_MSG, k))
    # The same with one database connection per worker: each worker alone leaves PostgreSQL
    # CPU to spare, so this curve shows what a worker added brings when there is some (with the
    # default two connections one worker already keeps this 2-core machine busy).
    saved = ctx["worker_env"]
    ctx["worker_env"] = dict(saved, DATABASE_CONNECTIONS="1")
    try:
        for k in a.curve_workers:
            add("worker processes, 1 connection each", k,
                gen_point(ctx, f"curve-workers{k}-conn1", n, gen.ITEMS_PER_MSG, k))
    finally:
        ctx["worker_env"] = saved
    for rows in a.curve_table_rows:
        add("table rows", rows, table_point(ctx, f"curve-rows{rows}", n, rows))
    sec["loadavg_at_end"] = loadavg()
    sec["phase_s"] = time.monotonic() - t0
    return sec


# ---------------------------------------------------------------- backlog

def run_backlog(ctx, a):
    """The bounded-memory phase; returns the report section."""
    t0 = time.monotonic()
    sec = {"date": bench.now_iso(), "loadavg_at_start": loadavg(),
           "worker": ctx["worker_info"], "items": a.backlog_items,
           "items_per_message": gen.ITEMS_PER_MSG, "limit_mb": RSS_LIMIT_MB,
           "sample_interval_s": 0.5, "max_seconds": a.backlog_seconds}
    tag = "backlog"
    per = gen.ITEMS_PER_MSG
    n_msgs = (a.backlog_items + per - 1) // per
    n = n_msgs * per
    sec["items"], sec["messages"] = n, n_msgs
    if n_msgs > 999_999:
        raise BenchError("backlog: at most 999,999 messages")
    db = f"bench_{bench.RUN_ID}_{tag}"
    topic = f"bench-{bench.RUN_ID}-{tag}-input"
    bench.create_topics([(topic, gen.PARTITIONS)])
    fresh_db(db)
    # 60 pre-encoded messages; each copy gets its own key prefix (same length), so every
    # message of the backlog carries distinct keys and eventIds.
    marker = b"B000000-"
    tmpl = [payload for _m, _p, _o, payload, _i, _v in
            gen.Stream(60 * per, ctx["seed"], prefix=marker.decode(), kind=ctx["kind"]).payloads()]

    def payloads():
        for j in range(n_msgs):
            yield j % gen.PARTITIONS, tmpl[j % len(tmpl)].replace(marker, b"B%06d-" % j)

    log(f"backlog: producing {n:,} items in {n_msgs:,} messages to {topic}")
    psecs, size = produce_all(topic, payloads())
    backlog = ctx["wm"].total(topic, gen.PARTITIONS)
    if backlog != n_msgs:
        raise BenchError(f"backlog: the input topic holds {backlog} messages, {n_msgs} produced")
    log(f"backlog: {n_msgs:,} messages ({size / 1e9:.2f} GB) waiting in Kafka, produced in "
        f"{psecs:.1f}s; starting the worker")
    sec.update({"bytes": size, "produce_s": psecs})

    env = worker_env(ctx, tag, db, topic)
    env["LOG_LEVEL"] = "info"
    results = env["KAFKA_RESULTS_TOPIC"]
    log_file = os.path.join(ctx["workdir"], f"{tag}.log")
    bench.checkpoint()
    wm = ctx["wm"]
    samples = []  # (seconds since start, VmRSS MB, results so far)
    t_start = time.monotonic()
    with open(log_file, "wb") as lf:
        proc = subprocess.Popen([bench.BIN, "run"], env=env, stdout=subprocess.DEVNULL, stderr=lf)
    try:
        next_t = t_start
        done = 0
        while True:
            next_t += 0.5
            time.sleep(max(0.0, next_t - time.monotonic()))
            if proc.poll() is not None:
                raise BenchError(f"backlog: the worker exited {proc.returncode}; log: {log_file}\n"
                                 + bench.tail(log_file))
            rss, hwm = vm_status(proc.pid)
            done = wm.total(results, 6)
            el = time.monotonic() - t_start
            samples.append((round(el, 2), round(rss, 1), done))
            if len(samples) % 10 == 0:
                log(f"backlog: {el:5.1f}s  VmRSS {rss:6.1f} MB  VmHWM {hwm:6.1f} MB  "
                    f"{done:,} of {n:,} items done")
            if done >= n or el >= a.backlog_seconds:
                break
        cpu = bench.proc_times(proc.pid)[0]
        rss, hwm = vm_status(proc.pid)
        t_stop = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        stop_s = time.monotonic() - t_stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    shutil.copy(log_file, os.path.join(ctx["out"], f"{ctx['name']}-backlog-worker.log"))
    if rc != 0:
        raise BenchError(f"backlog: the worker exited {rc} on SIGTERM; log: {log_file}\n"
                         + bench.tail(log_file))
    el = samples[-1][0]
    half = [s[1] for s in samples if s[0] >= el / 2]
    warm = [s[1] for s in samples if s[0] >= 10] or half
    marks = {}
    for want in (1, 2, 5, 10, 20, 30, 45, 60, 90, 120):
        near = [s for s in samples if s[0] >= want]
        if near and want <= el + 0.5:
            marks[str(want)] = near[0][1]
    drained = samples[-1][2]
    bench.drop_db(db)
    sec.update({"peak_rss_mb": hwm, "final_rss_mb": rss, "seconds": el,
                "drained_items": drained, "drained": drained >= n,
                "items_per_s": drained / el if el else None,
                "cpu_s_per_m": bench.per_m(cpu, drained),
                "plateau_median_mb": statistics.median(half), "plateau_min_mb": min(half),
                "plateau_max_mb": max(half),
                "after_10s_min_mb": min(warm), "after_10s_max_mb": max(warm),
                "rss_at_s": marks, "sigterm_exit_s": stop_s, "samples": samples,
                "ok": hwm < RSS_LIMIT_MB})
    sec["loadavg_at_end"] = loadavg()
    sec["phase_s"] = time.monotonic() - t0
    log(f"backlog: peak RSS {hwm:.1f} MB (limit {RSS_LIMIT_MB}); plateau over the second half "
        f"{min(half):.1f}–{max(half):.1f} MB (median {statistics.median(half):.1f}); "
        f"{drained:,} items drained in {el:.0f}s; exit 0 {stop_s:.2f}s after SIGTERM")
    return sec


# ---------------------------------------------------------------- report

def fmt_opt(v, digits=0):
    return bench.fmt(v, digits)


CURVE_HEADERS = ["curve", "point", "items", "messages", "seconds", "items/s", "first result s",
                 "steady items/s",
                 "worker CPU s/M items", "PostgreSQL CPU s/M items", "worker+PG CPU s/M items",
                 "peak RSS MB", "items/txn", "other load"]


def point_label(r):
    p = r["point"]
    if r["curve"] == "table rows":
        return "0" if not p else f"{p / 1e6:g}M"
    return f"{p:,}" + ("*" if r.get("same_run_as") else "")


def curve_rows(points):
    out = []
    for r in points:
        both = None
        if r.get("cpu_s_per_m") is not None and r.get("pg_cpu_s_per_m") is not None:
            both = r["cpu_s_per_m"] + r["pg_cpu_s_per_m"]
        out.append([r["curve"], point_label(r), fmt_opt(r["items"]), fmt_opt(r["messages"]),
                    fmt_opt(r["seconds"], 2), fmt_opt(r["items_per_s"]),
                    fmt_opt(r["first_result_s"], 2), fmt_opt(r["steady_items_per_s"]),
                    fmt_opt(r["cpu_s_per_m"], 2),
                    fmt_opt(r["pg_cpu_s_per_m"], 2), fmt_opt(both, 2),
                    fmt_opt(r["peak_rss_mb"], 1), fmt_opt(r.get("items_per_txn_mean")),
                    bench.other_load(r)])
    return out


def text_table(headers, rows):
    cells = [headers] + rows
    w = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    lines = []
    for k, c in enumerate(cells):
        lines.append("  ".join(x.ljust(w[i]) if i < 2 else x.rjust(w[i]) for i, x in enumerate(c)))
        if k == 0:
            lines.append("  ".join("-" * x for x in w))
    return "\n".join(lines)


def md_table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |",
             "| --- | --- | " + " | ".join(["---:"] * (len(headers) - 2)) + " |"]
    lines += ["| " + " | ".join(c) + " |" for c in rows]
    return "\n".join(lines)


def curve_notes(sec):
    notes = []
    for r in sec["points"]:
        if r["curve"].startswith("worker processes") and r["workers"] > 1:
            if r.get("join_s") is not None:
                notes.append(f"{r['workers']} worker processes: the group settled "
                             f"{r['join_s']:.1f}s after their start (left out); partitions held "
                             f"at the end {r.get('partitions_held_at_end')}")
        if r["curve"] == "table rows" and r["point"]:
            notes.append(f"table {point_label(r)}: pre-filled in {r['prefill_s']:.0f}s "
                         f"({r['table_bytes'] / 1e6:,.0f} MB with indexes); the stream updated "
                         f"{r['existing_keys_hit']:,} existing rows and inserted {r['new_keys']:,}")
    return notes


def curves_text(sec):
    lines = [f"Scale curves ({sec['phase_s']:.0f}s; load average {' '.join(sec['loadavg_at_start'])} "
             f"at start, {' '.join(sec['loadavg_at_end'])} at end)",
             text_table(CURVE_HEADERS, curve_rows(sec["points"]))]
    if any(r.get("same_run_as") for r in sec["points"]):
        lines.append("* the same run as items per message = 100")
    lines += curve_notes(sec)
    return "\n".join(lines)


WARM = ("- each point: a fresh database and topics (6 partitions); the worker processes start "
        "on the empty input topic and, once every one holds its partitions (the group's "
        "start-up, left out of the figures), the pre-encoded stream is produced at full speed "
        "(far faster than the worker drains it). Seconds and items/s: first produce → one "
        "result per item in the results topic; first result s: until the first transaction's "
        "results; steady: from then on. CPU: the worker processes over the timed run "
        "(utime+stime, summed over processes); PostgreSQL: the whole cluster over the run.")
COLD = ("- each point: a fresh database and topics (6 partitions), the whole stream waiting in "
        "Kafka; process start → one result per item in the results topic (start-up included); "
        "steady: from the first result on. CPU: the worker processes; PostgreSQL: the whole "
        "cluster over the run.")


def curves_md(sec):
    w = sec["worker"]
    md = ["## Scale curves", "",
          f"- date: {sec['date']}; phase run time {sec['phase_s']:.0f}s; load average "
          f"{' '.join(sec['loadavg_at_start'])} at start, {' '.join(sec['loadavg_at_end'])} at end",
          f"- worker: `{w['git']}` (sha256 {w['sha256'][:12]}…)" +
          (f", settings {w['extra_env']}" if w.get("extra_env") else ""),
          (WARM if sec.get("method") == "warm start" else COLD),
          "- items per message and worker processes: gen.Stream (30% updates of earlier keys, 1% "
          "invalid items), empty table, table verified afterwards. Table rows: rows pre-filled "
          "with SQL (INSERT … SELECT FROM generate_series, indexes rebuilt, VACUUM ANALYZE), "
          "then a stream of which half the items update random existing rows and half insert "
          "new ones (all new for 0 rows); row counts checked afterwards.",
          "- linear cost: CPU per item flat along a curve.", "",
          md_table(CURVE_HEADERS, curve_rows(sec["points"])), ""]
    if any(r.get("same_run_as") for r in sec["points"]):
        md.append("\\* the same run as items per message = 100")
        md.append("")
    md += [f"- {x}" for x in curve_notes(sec)]
    return md


def backlog_text(sec):
    marks = ", ".join(f"{k}s {v:.0f}" for k, v in sec["rss_at_s"].items())
    return (f"Bounded memory ({sec['phase_s']:.0f}s; load average {' '.join(sec['loadavg_at_start'])} "
            f"at start, {' '.join(sec['loadavg_at_end'])} at end)\n"
            f"backlog {sec['items']:,} items in {sec['messages']:,} messages "
            f"({sec['bytes'] / 1e9:.2f} GB); worker ran {sec['seconds']:.0f}s, drained "
            f"{sec['drained_items']:,} items ({sec['items_per_s']:,.0f} items/s)\n"
            f"peak RSS (VmHWM) {sec['peak_rss_mb']:.1f} MB — limit {sec['limit_mb']} MB: "
            f"{'ok' if sec['ok'] else 'EXCEEDED'}; plateau (second half of the run) "
            f"{sec['plateau_min_mb']:.1f}–{sec['plateau_max_mb']:.1f} MB, median "
            f"{sec['plateau_median_mb']:.1f} MB\nVmRSS MB at {marks}")


def backlog_md(sec):
    w = sec["worker"]
    marks = " | ".join(f"{v:.1f}" for v in sec["rss_at_s"].values())
    return ["## Bounded memory with a backlog", "",
            f"- date: {sec['date']}; phase run time {sec['phase_s']:.0f}s (producing the backlog "
            f"{sec['produce_s']:.0f}s); load average {' '.join(sec['loadavg_at_start'])} at start, "
            f"{' '.join(sec['loadavg_at_end'])} at end",
            f"- worker: `{w['git']}` (sha256 {w['sha256'][:12]}…)",
            f"- backlog: {sec['items']:,} items in {sec['messages']:,} messages of "
            f"{sec['items_per_message']} over 6 partitions ({sec['bytes'] / 1e9:.2f} GB), all in "
            "Kafka before the worker starts (60 pre-encoded gen.Stream messages, each copy with its "
            "own key prefix); prefetch bounded by librdkafka's queued.max.messages.kbytes (the worker's default, 32768)",
            f"- the worker ran {sec['seconds']:.0f}s (limit {sec['max_seconds']}s or drained), "
            f"drained {sec['drained_items']:,} items ({sec['items_per_s']:,.0f} items/s, "
            f"{sec['cpu_s_per_m']:.2f} CPU s/M items); exit 0 {sec['sigterm_exit_s']:.2f}s after SIGTERM",
            f"- **peak RSS (VmHWM) {sec['peak_rss_mb']:.1f} MB** (limit {sec['limit_mb']} MB: "
            f"{'ok' if sec['ok'] else 'EXCEEDED'}); VmRSS sampled every {sec['sample_interval_s']} s: "
            f"plateau over the second half {sec['plateau_min_mb']:.1f}–{sec['plateau_max_mb']:.1f} MB "
            f"(median {sec['plateau_median_mb']:.1f}); from 10 s on {sec['after_10s_min_mb']:.1f}–"
            f"{sec['after_10s_max_mb']:.1f} MB; at exit {sec['final_rss_mb']:.1f} MB", "",
            "| seconds | " + " | ".join(sec["rss_at_s"].keys()) + " |",
            "| --- | " + " | ".join(["---:"] * len(sec["rss_at_s"])) + " |",
            "| VmRSS MB | " + marks + " |", ""]
