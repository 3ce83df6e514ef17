"""The benchmark (`make bench`, through tests/bench/run.sh, which starts the stack).

Produces a deterministic stream (gen.py) to a 6-partition input topic, computes the table's
expected final state, then times three contenders, each on its own database, from an empty
table and from a table already holding the final state (the "pre-filled" case):

  ceiling  the final rows loaded straight by psql: COPY into a temporary staging table, then one
           INSERT ... SELECT ... ON CONFLICT DO UPDATE with the same merge. Its items/s is the
           number of valid items of the stream divided by the load's seconds.
  naive    naive_consumer.py: one INSERT ... ON CONFLICT per item, a database commit and a
           synchronous Kafka offset commit per message, one result per item. It processes only
           the first 10% of the stream (at most 100,000 items); its table is checked against
           the state of exactly the messages it applied (a prefix of each partition).
  flink    the real peer (flink_peer.py; not in --smoke): the Flink SQL job a data engineer would
           write instead (Kafka source, CROSS JOIN UNNEST(items), JDBC upsert sink into a table of
           the worker's shape), empty table only, timed from its first item read to the job's end.
           It validates nothing and replaces fields wholesale: not the same job
           (docs/benchmarks.md).
  worker   build/metadata-worker (`migrate`, then `run`): start to the moment the results topic
           holds one result per item (sum of its high watermarks, polled every 0.2 s); then, still
           running and caught up, a latency phase (messages paced at half the measured rate;
           produce time -> CreateTime of the message's last result); CPU of the process per
           million items, peak RSS (VmHWM) before SIGTERM.

After each contender the table is compared with the expected state (every column but the
timestamps and source columns); any difference fails the run (exit status 1).

--smoke (50,000 items, part of `make test`) also fails when a ratio of the worker falls below
a loose floor (SMOKE_FLOORS: worker/naive 4, worker/ceiling 0.2, on either table; in six
smoke runs on 2026-11-30 they were 6.0-12.7 and 0.35-0.83 -- the lowest with 50-70% of the
CPUs taken by other work, the ceiling alone swinging between 47,000 and 100,000 items/s), so
that a collapse in speed fails `make test` (one message per transaction gave 2.0 and 0.05 on
the empty table); --floor-naive / --floor-ceiling change them (0: off). The real targets
(issue 4: worker/naive >= 10, worker/ceiling >= 0.8) are judged on the full run (`make bench`).

That table is the "main" phase. Three more phases follow by default (phases.py, api_phase.py;
--phases picks and orders them, --smoke runs main only):
  curves   scale curves: items/s and CPU per million items for 1, 10, 100, 1,000 items per
           message; 1 and 2 worker processes; 0, 1M and 5M rows already in the table.
  backlog  bounded memory: 5M items waiting in Kafka, the worker's RSS sampled every 0.5 s
           while it drains them for 60 s; a peak of 128 MB or more fails the run.
  api      the HTTP API (`metadata-worker api`) under wrk: 10- and 100-item batches from 64
           keep-alive connections (requests/s, items/s, p50/p99), the same bodies produced
           straight with librdkafka (the ceiling), p50/p99 at half the maximum rate, RSS under
           load and while the broker is stopped (api_phase.py). Targets reported, not asserted;
           errors (a non-200 answer outside the outage) fail the run.
Each phase writes its section into the same results file; the sections of phases not run
(the main table included) are kept from the file: they are merged when the run ends.

Needs the env of tests/harness/stack.sh (KAFKA_BROKERS, PGHOST, PGPORT, PGUSER, MW_STACK_DIR).
Run with Debian's /usr/bin/python3 (python3-confluent-kafka, python3-psycopg2).
"""

import argparse
import datetime
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import socket
import tempfile
import time
import urllib.request
import uuid

import psycopg2
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import flink_peer
import gen

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("MW_BIN", os.path.join(ROOT, "build", "metadata-worker"))
PY = sys.executable or "/usr/bin/python3"
BROKERS = os.environ.get("KAFKA_BROKERS")
CLK = os.sysconf("SC_CLK_TCK")
T_START = time.monotonic()
RUN_ID = uuid.uuid4().hex[:8]

COLS = ("external_customer_id, external_conversation_id, event_id, status, phone_number, "
        "email_address, user_id, address_country, address_state, address_zipcode, attributes")
STAGE_COLS = ("cid text, conv text, eid text, status text, phone text, email text, uid text, "
              "country text, state text, zip text, attrs jsonb, part integer, off bigint, "
              "idx integer")


class BenchError(Exception):
    pass


def log(msg):
    print(f"bench [{time.monotonic() - T_START:7.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- services

def dsn(db):
    return "postgresql://%s@%s:%s/%s" % (os.environ.get("PGUSER", "postgres"),
                                         os.environ.get("PGHOST", "127.0.0.1"),
                                         os.environ.get("PGPORT", "5432"), db)


def pg_admin(sql):
    conn = psycopg2.connect(dsn("postgres"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def create_db(name, template=None):
    pg_admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))


def drop_db(name):
    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_topics(specs):
    admin = AdminClient({"bootstrap.servers": BROKERS})
    fs = admin.create_topics([NewTopic(t, n, 1) for t, n in specs])
    for f in fs.values():
        f.result(30)


def migrate(db):
    r = subprocess.run([BIN, "migrate"], env=dict(os.environ, DATABASE_URL=dsn(db)),
                       capture_output=True, timeout=120)
    if r.returncode != 0:
        raise BenchError(f"metadata-worker migrate failed on {db}: {r.stderr.decode()[-2000:]}")


class Watermarks:
    def __init__(self):
        self.c = Consumer({"bootstrap.servers": BROKERS, "group.id": f"bench-wm-{RUN_ID}",
                           "enable.auto.commit": False})

    def highs(self, topic, n):
        return [self.c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                for p in range(n)]

    def total(self, topic, n):
        return sum(self.highs(topic, n))

    def close(self):
        self.c.close()


# ---------------------------------------------------------------- CPU and memory

def proc_times(pid):
    """utime+stime and cutime+cstime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK, (int(rest[13]) + int(rest[14])) / CLK


def children(ppid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            if int(rest[1]) == ppid:
                out.append(int(d))
        except OSError:
            pass
    return out


def postmaster_pid():
    stack = os.environ.get("MW_STACK_DIR")
    try:
        with open(os.path.join(stack, "pg", "data", "postmaster.pid")) as f:
            return int(f.readline())
    except (OSError, TypeError, ValueError):
        return None


def pg_cpu():
    """CPU seconds used so far by our PostgreSQL cluster: the postmaster, its reaped children
    (cutime) and its live children (backends, autovacuum, walwriter, ...)."""
    pm = postmaster_pid()
    if not pm:
        return None
    own, reaped = proc_times(pm)
    total = own + reaped
    for c in children(pm):
        try:
            total += proc_times(c)[0]
        except OSError:
            pass
    return total


def broker_cpu():
    stack = os.environ.get("MW_STACK_DIR")
    try:
        with open(os.path.join(stack, "kafka", "pid")) as f:
            pid = int(f.read())
        return proc_times(pid)[0]
    except (OSError, TypeError, ValueError):
        return None


def sys_busy():
    """CPU seconds the whole machine spent busy so far (all CPUs, /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / CLK


class CpuMeter:
    """CPU spent over a timed phase by PostgreSQL, the broker, this script and its reaped
    children (psql, the naive consumer), and by everything else on the machine (noise)."""

    def __init__(self):
        t = os.times()
        self.a = (sys_busy(), pg_cpu(), broker_cpu(),
                  t.user + t.system + t.children_user + t.children_system)

    def stop(self, extra_cpu=0.0):
        t = os.times()
        b = (sys_busy(), pg_cpu(), broker_cpu(),
             t.user + t.system + t.children_user + t.children_system)
        busy, pg, br, me = (delta(x, y) for x, y in zip(self.a, b))
        other = None
        if None not in (busy, pg, br):
            other = max(0.0, busy - pg - br - me - extra_cpu)
        return {"pg": pg, "broker": br, "bench": me, "other": other}


def vm_hwm_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def delta(a, b):
    return None if a is None or b is None else b - a


def per_m(secs, items):
    return None if secs is None or not items else secs * 1e6 / items


# ---------------------------------------------------------------- verification

def verify(db, copy_file, label):
    """Compares customer_metadata with the rows it may hold (a COPY file of candidates, see
    gen.State/SpreadState.write_candidates_file): every row of the table must be one of its
    key's candidates (every column but the timestamps and source columns), and the table must
    have one row per key of the file."""
    conn = psycopg2.connect(dsn(db))
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TEMP TABLE expected ({STAGE_COLS})")
            with open(copy_file, encoding="utf-8") as f:
                cur.copy_expert("COPY expected FROM STDIN", f)
            cur.execute("SELECT (SELECT count(*) FROM customer_metadata), "
                        "(SELECT count(*) FROM (SELECT DISTINCT cid, conv FROM expected) k)")
            have, want = cur.fetchone()
            exp_cols = "cid, conv, eid, status, phone, email, uid, country, state, zip, attrs"
            cur.execute(f"SELECT count(*) FROM (SELECT {COLS} FROM customer_metadata "
                        f"EXCEPT SELECT {exp_cols} FROM expected) d")
            extra = cur.fetchone()[0]
            if have == want and extra == 0:
                log(f"{label}: table verified ({have} rows, each one its key's expected state)")
                return have
            cur.execute(f"SELECT {COLS} FROM customer_metadata EXCEPT SELECT {exp_cols} "
                        "FROM expected LIMIT 3")
            got_rows = cur.fetchall()
            exp = []
            for r in got_rows:
                cur.execute(f"SELECT {exp_cols} FROM expected WHERE cid = %s AND conv = %s",
                            (r[0], r[1]))
                exp.append(cur.fetchall())
    finally:
        conn.close()
    detail = "\n".join(f"  table    {g}\n  expected one of {e}" for g, e in zip(got_rows, exp))
    raise BenchError(f"{label}: table differs from the expected state: {have} rows (expected "
                     f"{want}), {extra} not the expected state of their key\n{detail}")


# ---------------------------------------------------------------- the stream

def produce_stream(stream, topics):
    """Produces the stream to each of topics (identical copies); returns (seconds, expected
    State, invalid count, bytes of one copy)."""
    prod = Producer({"bootstrap.servers": BROKERS, "linger.ms": 50, "batch.num.messages": 100000,
                     "batch.size": 4 * 1024 * 1024, "compression.type": "none",
                     "enable.idempotence": True, "queue.buffering.max.kbytes": 1048576,
                     "queue.buffering.max.messages": 1000000, "message.timeout.ms": 300000})
    bad = []

    def on_delivery(err, msg):
        if err:
            bad.append(str(err))
        elif msg.offset() != int(msg.key()) // stream.partitions:
            bad.append(f"message {int(msg.key())} got offset {msg.offset()} on partition "
                       f"{msg.partition()}: the topic was not fresh")

    state = stream.new_state()
    invalid = size = 0
    t0 = time.monotonic()
    for m, p, off, payload, items, inv in stream.payloads():
        state.apply_message(p, off, items, inv)
        invalid += sum(inv)
        size += len(payload)
        for topic in topics:
            while True:
                try:
                    prod.produce(topic, payload, key=str(m), partition=p, on_delivery=on_delivery)
                    break
                except BufferError:
                    prod.poll(0.05)
        prod.poll(0)
    left = prod.flush(300)
    secs = time.monotonic() - t0
    if left or bad:
        raise BenchError(f"producing the stream failed: {left} undelivered; {bad[:3]}")
    return secs, state, invalid, size


def prefix_state(stream, base, last_offsets):
    """The state after applying, on top of base, each partition's messages up to
    last_offsets[p] (what a consumer that stopped there applied)."""
    st = base.copy() if base else stream.new_state()
    last = {int(p): o for p, o in last_offsets.items()}
    stop = max((o * stream.partitions + p for p, o in last.items()), default=-1)
    for m, p, off, items, inv in stream.messages():
        if m > stop:
            break
        if off <= last.get(p, -1):
            st.apply_message(p, off, items, inv)
    return st


# ---------------------------------------------------------------- contenders

CEILING_SQL = r"""
\set ON_ERROR_STOP 1
BEGIN;
CREATE TEMP TABLE stage ({stage_cols}) ON COMMIT DROP;
\copy stage FROM '{file}'
INSERT INTO customer_metadata AS t
    (external_customer_id, external_conversation_id, event_id, status, phone_number,
     email_address, user_id, address_country, address_state, address_zipcode, attributes,
     source_topic, source_partition, source_offset, source_index)
SELECT cid, conv, eid, status, phone, email, uid, country, state, zip, attrs,
       '{topic}', part, off, idx FROM stage
ON CONFLICT (external_customer_id, external_conversation_id) DO UPDATE SET
    event_id = EXCLUDED.event_id,
    status = COALESCE(EXCLUDED.status, t.status),
    phone_number = COALESCE(EXCLUDED.phone_number, t.phone_number),
    email_address = COALESCE(EXCLUDED.email_address, t.email_address),
    user_id = COALESCE(EXCLUDED.user_id, t.user_id),
    address_country = COALESCE(EXCLUDED.address_country, t.address_country),
    address_state = COALESCE(EXCLUDED.address_state, t.address_state),
    address_zipcode = COALESCE(EXCLUDED.address_zipcode, t.address_zipcode),
    attributes = customer_metadata_attrs_apply(t.attributes, EXCLUDED.attributes),
    source_topic = EXCLUDED.source_topic, source_partition = EXCLUDED.source_partition,
    source_offset = EXCLUDED.source_offset, source_index = EXCLUDED.source_index,
    updated_at = now();
COMMIT;
"""


def psql_load(db, copy_file, topic, workdir):
    script = os.path.join(workdir, "ceiling.sql")
    with open(script, "w") as f:
        f.write(CEILING_SQL.format(stage_cols=STAGE_COLS, file=copy_file, topic=topic))
    r = subprocess.run(["psql", "-X", "-q", "-d", dsn(db), "-f", script], capture_output=True,
                       timeout=3600)
    if r.returncode != 0:
        raise BenchError(f"psql load into {db} failed: {r.stderr.decode()[-2000:]}")


def checkpoint():
    pg_admin("CHECKPOINT")


def run_ceiling(ctx, label, template):
    db = f"bench_{RUN_ID}_ceiling_{label}"
    if template:
        create_db(db, template)
    else:
        create_db(db)
        migrate(db)
    checkpoint()
    meter = CpuMeter()
    t0 = time.monotonic()
    psql_load(db, ctx["expected_file"], ctx["topic"], ctx["workdir"])
    secs = time.monotonic() - t0
    cpu = meter.stop()
    verify(db, ctx["candidates_file"], f"ceiling ({label})")
    drop_db(db)
    items = ctx["valid_items"]
    log(f"ceiling ({label}): {ctx['rows']} rows in {secs:.2f}s")
    return {"contender": f"ceiling ({label})", "table": label, "items": items,
            "rows": ctx["rows"], "seconds": secs, "items_per_s": items / secs,
            "pg_cpu_s_per_m": per_m(cpu["pg"], items), "other_load_cpu_s": cpu["other"],
            "note": "valid items of the stream / seconds of one COPY + INSERT ... ON CONFLICT "
                    "of the final rows"}


def run_flink(ctx, label, template):
    """The real peer (flink_peer.py): Flink SQL into a table of the worker's shape in its own
    database, on its own copy of the stream. Empty table only; nothing to verify (it replaces
    fields wholesale and validates nothing), its row count is reported."""
    db = f"bench_{RUN_ID}_flink_{label}"
    create_db(db)
    checkpoint()
    meter = CpuMeter()
    pg = {"host": os.environ.get("PGHOST", "127.0.0.1"), "port": os.environ.get("PGPORT", "5432"),
          "user": os.environ.get("PGUSER", "postgres"), "dbname": db}
    try:
        r = flink_peer.run(BROKERS, f"{ctx['topic']}-flink", pg, ctx["valid_items"])
    except flink_peer.PeerError as e:
        raise BenchError(f"flink ({label}): {e}")
    cpu = meter.stop()
    drop_db(db)
    n = ctx["valid_items"]
    log(f"flink ({label}): {n} valid items in {r['first_to_end_s']:.2f}s from its first item "
        f"({r['items_per_s']:,} items/s; {r['items_per_s_launch']:,} from JVM launch); "
        f"{r['rows_in_table']} rows; {r['settings']}")
    return {"contender": f"flink ({label})", "table": label, "items": n,
            "seconds": r["first_to_end_s"], "items_per_s": r["items_per_s"],
            "seconds_from_start": r["seconds"], "items_per_s_from_start": r["items_per_s_launch"],
            "cpu_s_per_m": per_m(r["cpu_s"], n), "peak_rss_mb": r["peak_rss_mb"],
            "pg_cpu_s_per_m": per_m(cpu["pg"], n),
            "broker_cpu_s_per_m": per_m(cpu["broker"], n), "other_load_cpu_s": cpu["other"],
            "flink": r,
            "note": "valid items / seconds from its first item read to the job's end (the sink's "
                    "last batch committed); from start: from JVM launch. No validation, no "
                    "results, fields replaced wholesale: not the same job (docs/benchmarks.md)"}


def run_naive(ctx, label, template):
    db = f"bench_{RUN_ID}_naive_{label}"
    if template:
        create_db(db, template)
    else:
        create_db(db)
        migrate(db)
    results = f"bench-{RUN_ID}-naive-{label}-results"
    create_topics([(results, 6)])
    checkpoint()
    logf = open(os.path.join(ctx["workdir"], f"naive-{label}.log"), "wb")
    out = tempfile.TemporaryFile()
    meter = CpuMeter()
    t0 = time.monotonic()
    proc = subprocess.Popen([PY, os.path.join(HERE, "naive_consumer.py"),
                             "--brokers", BROKERS, "--topic", ctx["topic"] + "-naive",
                             "--group", f"bench-{RUN_ID}-naive-{label}",
                             "--results-topic", results, "--dsn", dsn(db),
                             "--total-messages", str(ctx["stream"].n_messages),
                             "--max-items", str(ctx["naive_max"])],
                            stdout=out, stderr=logf)
    try:
        _, status, ru = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    secs = time.monotonic() - t0
    cpu = meter.stop()
    out.seek(0)
    text = out.read().decode()
    if proc.returncode != 0:
        raise BenchError(f"naive ({label}) exited {proc.returncode}: {text}\n"
                         + open(logf.name, errors="replace").read()[-2000:])
    summary = json.loads(text.strip().splitlines()[-1])
    items = summary["items"]
    st = prefix_state(ctx["stream"], ctx["state"] if template else None, summary["last_offsets"])
    exp_file = os.path.join(ctx["workdir"], f"naive-{label}-expected.copy")
    st.write_candidates_file(exp_file)
    verify(db, exp_file, f"naive ({label})")
    drop_db(db)
    window = max(1e-9, summary["done_s"] - summary["first_message_s"])
    steady = items / window
    log(f"naive ({label}): {items} items in {secs:.2f}s ({window:.2f}s from its first message)")
    return {"contender": f"naive ({label})", "table": label, "items": items, "seconds": window,
            "items_per_s": steady, "seconds_from_start": secs, "items_per_s_from_start": items / secs,
            "steady_items_per_s": steady,
            "cpu_s_per_m": per_m(ru.ru_utime + ru.ru_stime, items),
            "peak_rss_mb": ru.ru_maxrss / 1024,
            "pg_cpu_s_per_m": per_m(cpu["pg"], items),
            "broker_cpu_s_per_m": per_m(cpu["broker"], items), "other_load_cpu_s": cpu["other"],
            "note": f"first {items} items of the stream (per-partition prefixes), table checked "
                    "against exactly those"}


def percentile(xs, q):
    if not xs:
        return None
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def latency_phase(ctx, label, topic, results, rate, n_msgs):
    """Produces n_msgs messages paced at half of rate (items/s); returns per-message
    latencies (ms) from the input message's CreateTime to its last result's CreateTime."""
    wm = ctx["wm"]
    start = wm.highs(results, 6)
    stream = gen.Stream(n_msgs * gen.ITEMS_PER_MSG, seed=ctx["seed"] + 1, prefix=f"lat-{label}-")
    msgs = list(stream.payloads())
    interval = gen.ITEMS_PER_MSG / (0.5 * rate)
    prod = Producer({"bootstrap.servers": BROKERS, "linger.ms": 0, "enable.idempotence": True})
    sent = {}

    def on_delivery(err, msg):
        if not err:
            sent[(msg.partition(), msg.offset())] = msg.timestamp()[1]

    t0 = time.monotonic()
    for i, (_m, p, _off, payload, _items, _inv) in enumerate(msgs):
        wait = t0 + i * interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        prod.produce(topic, payload, partition=p, on_delivery=on_delivery)
        prod.poll(0)
    prod.flush(30)
    if len(sent) != n_msgs:
        raise BenchError(f"latency phase: only {len(sent)} of {n_msgs} messages delivered")
    c = Consumer({"bootstrap.servers": BROKERS, "group.id": f"bench-lat-{RUN_ID}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(results, p, start[p]) for p in range(6)])
    last, count = {}, {}
    want = n_msgs * gen.ITEMS_PER_MSG
    got = 0
    deadline = time.monotonic() + 120
    while got < want and time.monotonic() < deadline:
        for m in c.consume(1000, 0.5):
            if m.error():
                continue
            v = json.loads(m.value())
            src = (v["source"]["partition"], v["source"]["offset"])
            ts = m.timestamp()[1]
            last[src] = max(last.get(src, 0), ts)
            count[src] = count.get(src, 0) + 1
            got += 1
    c.close()
    lat = [last[s] - t for s, t in sent.items() if count.get(s) == gen.ITEMS_PER_MSG]
    if len(lat) != n_msgs:
        raise BenchError(f"latency phase: {len(lat)} of {n_msgs} messages got all their results")
    return lat, time.monotonic() - t0, 1 / interval


def first_message_wall(log_file):
    """Wall-clock time the worker consumed its first message: from its "batch done" debug
    lines, the start of each transaction (line time - total_ms) minus how long its oldest
    message had waited (wait_ms); the earliest of them. None without such lines."""
    first = None
    with open(log_file, errors="replace") as f:
        for line in f:
            if '"batch done"' not in line:
                continue
            try:
                r = json.loads(line)
                t = datetime.datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp()
                t -= (r.get("total_ms", 0) + r.get("wait_ms", 0)) / 1000
            except (ValueError, KeyError):
                continue
            first = t if first is None else min(first, t)
    return first


def batch_stats(log_file, wall_s):
    """Summary of the worker's "batch done" debug lines (one per transaction)."""
    rows = []
    with open(log_file, errors="replace") as f:
        for line in f:
            if '"batch done"' not in line:
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    if not rows:
        return None
    items = [r.get("items", 0) for r in rows]
    db = [r.get("db_ms", 0) for r in rows]
    tot = [r.get("total_ms", 0) for r in rows]
    rv = sum(r.get("rows", 0) for r in rows)
    return {"transactions": len(rows), "items_per_txn_mean": sum(items) / len(rows),
            "row_versions": rv, "row_versions_per_item": rv / max(1, sum(items)),
            "messages_per_txn_mean": sum(r.get("messages", 0) for r in rows) / len(rows),
            "db_ms_sum": sum(db), "total_ms_sum": sum(tot),
            "db_ms_p50": percentile(db, 0.5), "db_ms_p99": percentile(db, 0.99),
            "total_ms_p50": percentile(tot, 0.5), "total_ms_p99": percentile(tot, 0.99),
            "results_ms_sum": sum(tot) - sum(db),
            "share_of_wall_in_db": sum(db) / 1000 / wall_s if wall_s else None,
            "share_of_wall_in_flush": sum(tot) / 1000 / wall_s if wall_s else None}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def db_retries(addr):
    """The worker's metadata_worker_db_retries_total by SQLSTATE label (from /metrics)."""
    out = {}
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("metadata_worker_db_retries_total{"):
                label = line.split('sqlstate="', 1)[1].split('"', 1)[0]
                out[label] = int(float(line.rsplit(" ", 1)[1]))
    return out


def run_worker(ctx, label, template):
    db = f"bench_{RUN_ID}_worker_{label}"
    if template:
        create_db(db, template)
    else:
        create_db(db)
    migrate(db)
    results = f"bench-{RUN_ID}-worker-{label}-results"
    dlq = f"bench-{RUN_ID}-worker-{label}-dlq"
    create_topics([(results, 6), (dlq, 1)])
    topic = f"{ctx['topic']}-worker-{label}"
    env = dict(os.environ, KAFKA_BROKERS=BROKERS, KAFKA_GROUP_ID=f"bench-{RUN_ID}-worker-{label}",
               KAFKA_INPUT_TOPIC=topic, KAFKA_RESULTS_TOPIC=results,
               KAFKA_DLQ_TOPIC=dlq, DATABASE_URL=dsn(db), LOG_LEVEL="debug")
    env["METRICS_ADDR"] = metrics_addr = f"127.0.0.1:{free_port()}"
    env.update(ctx["worker_env"])
    log_file = os.path.join(ctx["workdir"], f"worker-{label}.log")
    n = ctx["items"]
    wm = ctx["wm"]
    checkpoint()
    meter = CpuMeter()
    t0 = time.monotonic()
    with open(log_file, "wb") as lf:
        proc = subprocess.Popen([BIN, "run"], env=env, stdout=subprocess.DEVNULL, stderr=lf)
    try:
        deadline = t0 + 60 + n / 1000
        t_first = None
        n_first = 0
        while True:
            time.sleep(0.2)
            got = wm.total(results, 6)
            now = time.monotonic()
            if got and t_first is None:
                t_first, n_first = now, got
            if got >= n:
                break
            if proc.poll() is not None:
                raise BenchError(f"worker ({label}) exited {proc.returncode} with {got} of {n} "
                                 f"results; log: {log_file}\n" + tail(log_file))
            if now > deadline:
                raise BenchError(f"worker ({label}): only {got} of {n} results after "
                                 f"{now - t0:.0f}s; log: {log_file}\n" + tail(log_file))
        t_end = time.monotonic()
        t_end_wall = time.time()
        secs = t_end - t0
        cpu = proc_times(proc.pid)[0]
        others = meter.stop(cpu)
        rate = n / secs
        steady = (n - n_first) / (t_end - t_first) if t_end > t_first else rate
        # The measure: first message consumed -> last result acknowledged.
        first_wall = first_message_wall(log_file)
        window = t_end_wall - first_wall if first_wall is not None else secs
        window = min(max(window, 1e-3), secs)
        log(f"worker ({label}): {n} results in {secs:.2f}s (first results after "
            f"{t_first - t0:.2f}s; {steady:.0f} items/s from then on)")
        time.sleep(1.0)
        extra = wm.total(results, 6) - n
        verify(db, ctx["candidates_file"], f"worker ({label})")
        retries = db_retries(metrics_addr)
        log(f"worker ({label}): database retries by SQLSTATE {retries}")
        lat, lat_s, lat_rate = latency_phase(ctx, label, topic, results, steady,
                                             ctx["latency_msgs"])
        log(f"worker ({label}): latency phase {len(lat)} messages at {lat_rate:.1f} msg/s in "
            f"{lat_s:.1f}s: p50 {percentile(lat, 0.5)} ms, p99 {percentile(lat, 0.99)} ms")
        rss = vm_hwm_mb(proc.pid)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        if rc != 0:
            raise BenchError(f"worker ({label}) exited {rc} on SIGTERM; log: {log_file}\n" + tail(log_file))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    drop_db(db)
    shutil.copy(log_file, os.path.join(ctx["out"], f"{ctx['name']}-worker-{label}.log"))
    problems = [l for l in open(log_file, errors="replace")
                if '"level":"warn"' in l or '"level":"error"' in l]
    return {"contender": f"worker ({label})", "table": label, "items": n, "seconds": window,
            "items_per_s": n / window, "seconds_from_start": secs, "items_per_s_from_start": rate,
            "steady_items_per_s": steady,
            "first_result_s": t_first - t0,
            "latency_p50_ms": percentile(lat, 0.5), "latency_p99_ms": percentile(lat, 0.99),
            "latency_max_ms": max(lat), "latency_msgs": len(lat),
            "latency_rate_msgs_per_s": lat_rate,
            "cpu_s_per_m": per_m(cpu, n), "peak_rss_mb": rss,
            "pg_cpu_s_per_m": per_m(others["pg"], n),
            "broker_cpu_s_per_m": per_m(others["broker"], n), "other_load_cpu_s": others["other"],
            "duplicate_results": extra, "db_retries": retries,
            "warnings_in_log": len(problems), "warning_samples": [p.strip()[:300] for p in problems[:3]],
            "batches": batch_stats(log_file, secs),
            "note": "start of the process to the last result in the results topic; all items, "
                    "invalid ones included"}


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------- report

def fmt(v, digits=0):
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}"


HEADERS = ["contender", "items", "seconds", "items/s", "items/s from start", "worker/ceiling",
           "worker/naive", "worker/flink", "DB retries 40P01/23505/other",
           "p50 ms", "p99 ms", "CPU s/M items", "peak RSS MB", "PostgreSQL CPU s/M items",
           "other load"]


def other_load(r):
    """Share of the machine's CPUs busy with processes outside the benchmark (noise)."""
    o = r.get("other_load_cpu_s")
    if o is None or not r.get("seconds"):
        return "—"
    return f"{100 * o / (r.get('seconds_from_start', r['seconds']) * (os.cpu_count() or 1)):.0f}%"


def retries_text(r):
    """The worker's database retries by SQLSTATE: deadlocks, duplicate keys, the rest."""
    if r is None:
        return ""
    return f"{r.get('40P01', 0)}/{r.get('23505', 0)}/{sum(v for k, v in r.items() if k not in ('40P01', '23505'))}"


def table_rows(rows):
    out = []
    for r in rows:
        out.append([r["contender"], fmt(r["items"]), fmt(r["seconds"], 2), fmt(r["items_per_s"]),
                    fmt(r["items_per_s_from_start"]) if r.get("items_per_s_from_start") else "",
                    fmt(r.get("x_ceiling"), 3) if r.get("x_ceiling") is not None else "",
                    fmt(r.get("x_naive"), 2) if r.get("x_naive") is not None else "",
                    fmt(r.get("x_flink"), 2) if r.get("x_flink") is not None else "",
                    retries_text(r.get("db_retries")),
                    fmt(r.get("latency_p50_ms")), fmt(r.get("latency_p99_ms")),
                    fmt(r.get("cpu_s_per_m"), 2), fmt(r.get("peak_rss_mb"), 1),
                    fmt(r.get("pg_cpu_s_per_m"), 1), other_load(r)])
    return out


def text_table(rows):
    cells = [HEADERS] + table_rows(rows)
    w = [max(len(c[i]) for c in cells) for i in range(len(HEADERS))]
    lines = []
    for k, c in enumerate(cells):
        lines.append("  ".join(x.ljust(w[i]) if i == 0 else x.rjust(w[i]) for i, x in enumerate(c)))
        if k == 0:
            lines.append("  ".join("-" * x for x in w))
    return "\n".join(lines)


def md_table(rows):
    lines = ["| " + " | ".join(HEADERS) + " |",
             "| " + " | ".join(["---"] + ["---:"] * (len(HEADERS) - 1)) + " |"]
    for c in table_rows(rows):
        lines.append("| " + " | ".join(c) + " |")
    return "\n".join(lines)


def git_describe():
    try:
        r = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or None
    except OSError:
        return None


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model,
            "loadavg_at_start": open("/proc/loadavg").read().split()[:3]}


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def main_md(report, rows):
    m = report["machine"]
    s = report["stream"]
    md = [f"# metadata-worker benchmark ({'smoke' if report['smoke'] else 'full'} run)", "",
          f"- date: {report['date']}",
          f"- machine: {m['nproc']} CPUs ({m['cpu_model']}), load average at start "
          f"{' '.join(m['loadavg_at_start'])}, at end {' '.join(m['loadavg_at_end'])}",
          f"- stream: {s.get('kind', 'confined')} (gen.py), {s['items']:,} items in {s['messages']:,} "
          f"messages of {s['items_per_message']} over {s['partitions']} partitions, "
          f"{s['invalid_items']:,} invalid, {s['rows']:,} distinct keys (rows), "
          f"{s['bytes'] / 1e6:,.0f} MB, seed {s['seed']}",
          f"- worker: build/metadata-worker of `{report['worker']['git']}` (sha256 "
          f"{report['worker']['sha256'][:12]}…)",
          "- PostgreSQL and Kafka: the throwaway single-node stack of tests/harness/stack.sh "
          "(fsync off), on the same machine as the contenders", "",
          md_table(rows), "",
          *([f"- floor: {floor_text(c)}" for c in report["floors"]] + [""]
            if report.get("floors") else []),
          "- ceiling: valid items / seconds of loading the final rows with psql (COPY into a temp "
          "table + one INSERT … ON CONFLICT DO UPDATE); it writes each row once.",
          f"- naive: naive_consumer.py over the first {report['naive_max_items']:,} items "
          "(per-partition prefixes), one statement, commit and synchronous offset commit per "
          "message.",
          "- items/s and seconds: the worker and naive from their first message consumed to the "
          "last result acknowledged (for the worker: the start of its first transaction minus how "
          "long that transaction's oldest message had waited, from its debug log, to the moment "
          "the bench saw the last result in the results topic); items/s from start: from the "
          "process start instead (joining the group, about 1 s, included).",
          "- worker: one result per item in the results topic. Latency: "
          f"{report['latency_msgs']} messages paced at half the measured rate, input CreateTime → "
          "CreateTime of the message's last result. CPU: the worker process only (utime+stime at "
          "the end of the throughput phase); PostgreSQL CPU: the whole cluster over the timed phase.",
          *(["- flink: Apache Flink SQL (tests/bench/flink_peer.py), valid items / seconds from "
             "its first item read to the job's end (the JDBC sink's last batch committed); from "
             "start: from JVM launch. It validates nothing, writes no results and replaces fields "
             "wholesale: not the same job. Settings: "
             + next(r["flink"]["settings"] for r in rows if r.get("flink"))]
            if any(r.get("flink") for r in rows) else []),
          "- DB retries: the worker's metadata_worker_db_retries_total by SQLSTATE (40P01 "
          "deadlock, 23505 a key another writer inserted first, other) over its throughput phase.",
          "- ratios compare items/s on the same starting table (empty, or pre-filled with the "
          "stream's final state).",
          "- other load: CPU used during the timed phase by processes outside the benchmark "
          "(machine busy time minus the contender, PostgreSQL, the broker and the bench script), "
          "as a share of all CPUs: the noise in the figures.", ""]
    if report["worker"]["extra_env"]:
        md.insert(5, f"- worker settings: {report['worker']['extra_env']}")
    for r in rows:
        b = r.get("batches")
        if b:
            md.append(f"- {r['contender']}: {b['transactions']} transactions, "
                      f"{b['items_per_txn_mean']:.0f} items each on average, "
                      f"{b.get('row_versions_per_item', 0):.3f} row versions written per item; db_ms sum "
                      f"{b['db_ms_sum'] / 1000:.1f}s, total_ms sum {b['total_ms_sum'] / 1000:.1f}s "
                      f"of {r.get('seconds_from_start', r['seconds']):.1f}s wall; total_ms p50 {b['total_ms_p50']} p99 "
                      f"{b['total_ms_p99']}; first result after {r['first_result_s']:.1f}s; "
                      f"steady {r['steady_items_per_s']:,.0f} items/s")
    return md


SECTIONS = ("curves", "backlog", "api")

# Loose floors of the smoke run (see the docstring): well below its figures on this noisy
# 2-core machine (50,000 items: the worker's first second, joining the group, weighs more).
SMOKE_FLOORS = {"x_naive": 4.0, "x_ceiling": 0.2}
RATIO_NAMES = {"x_naive": "worker/naive", "x_ceiling": "worker/ceiling"}


def floor_checks(rows, floors):
    """One check per worker row and floored ratio: {ratio, table, value, floor, ok}. A ratio
    that was not measured (its contender not run) fails: a floor asked for must be judged."""
    checks = []
    for r in rows:
        if not r["contender"].startswith("worker ("):
            continue
        for key, floor in floors.items():
            if not floor:
                continue
            value = r.get(key)
            checks.append({"ratio": RATIO_NAMES[key], "table": r["table"], "value": value,
                           "floor": floor, "ok": value is not None and value >= floor})
    return checks


def floor_text(c):
    name = f"{c['ratio']} ({c['table']} table)"
    if c["value"] is None:
        return f"FAILED: {name} not measured, floor {c['floor']:g}"
    if c["ok"]:
        return f"{name} = {c['value']:.2f}, floor {c['floor']:g}: ok"
    return (f"FAILED: {name} = {c['value']:.2f}, below its floor {c['floor']:g}: the worker's "
            f"speed collapsed (or the machine is swamped)")


def merge_write(out_dir, name, report, ran):
    """Writes this run's sections into NAME.json/.md, keeping the others from the file as it
    is now (re-read under a lock, so that concurrent runs do not lose each other's sections):
    the main table unless main ran, and each phase that did not run."""
    import fcntl
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f".{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(os.path.join(out_dir, f"{name}.json")) as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = {}
        if "main" in ran:
            merged = {k: v for k, v in report.items() if k not in SECTIONS}
        else:
            merged = {k: v for k, v in old.items() if k not in SECTIONS}
        for key in SECTIONS:
            if key in ran and key in report:
                merged[key] = report[key]
            elif key in old:
                merged[key] = old[key]
        write_results(out_dir, name, merged)


def write_results(out_dir, name, report):
    """Writes NAME.json and NAME.md: the main table (when the report holds one, from this run
    or kept from the previous one), then the scale curves and the backlog sections."""
    import api_phase
    import phases
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
        f.write("\n")
    if "stream" in report:
        md = main_md(report, report.get("contenders", []))
        if report.get("main_s") is not None:
            md.insert(3, f"- main phase run time: {report['main_s']:.0f}s")
        if report.get("failed"):
            md.insert(3, f"- FAILED: {report['failed'].splitlines()[0]}")
    else:
        md = ["# metadata-worker benchmark", "", "(no main table: run with --phases main)", ""]
    for key, fn in (("curves", phases.curves_md), ("backlog", phases.backlog_md),
                    ("api", api_phase.api_md)):
        sec = report.get(key)
        if not sec:
            continue
        md.append("")
        if sec.get("failed"):
            md += [f"## {key}", "", f"- {sec['date']}: FAILED: {sec['failed'].splitlines()[0]}", ""]
        else:
            md += fn(sec)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write("\n".join(md).rstrip("\n") + "\n")


# ---------------------------------------------------------------- main

def run_main_phase(ctx, report, only):
    """The main table (ceiling, naive, worker on an empty and a pre-filled table); fills
    report's top-level fields. Returns the exit status (0, or 1 on a failure)."""
    t0 = time.monotonic()
    n, workdir = ctx["items"], ctx["workdir"]
    rows = []
    status = 0
    try:
        stream = gen.Stream(n, ctx["seed"], kind=ctx["kind"])
        ctx["stream"] = stream
        # One copy of the stream per contender that consumes it: the worker's latency phase
        # appends messages to its input topic, which the next consumer must not see.
        copies = ["naive", "worker-empty", "worker-pre-filled"] + (["flink"] if "flink" in only else [])
        topics = [ctx["topic"] + "-" + c for c in copies]
        create_topics([(t, stream.partitions) for t in topics])
        log(f"producing {n:,} items in {stream.n_messages:,} messages to {len(topics)} topics "
            f"{ctx['topic']}-*")
        secs, state, invalid, size = produce_stream(stream, topics)
        ctx["state"], ctx["rows"], ctx["valid_items"] = state, len(state.rows), n - invalid
        log(f"produced in {secs:.1f}s ({size / 1e6:.0f} MB); expected state: {len(state.rows):,} "
            f"rows, {invalid:,} invalid items")
        report["stream"] = {"items": n, "messages": stream.n_messages, "partitions": stream.partitions,
                            "items_per_message": stream.per_msg, "invalid_items": invalid,
                            "valid_items": n - invalid, "rows": len(state.rows), "bytes": size,
                            "seed": ctx["seed"], "kind": stream.kind, "produce_s": secs}
        ctx["expected_file"] = os.path.join(workdir, "expected.copy")
        state.write_copy_file(ctx["expected_file"])
        ctx["candidates_file"] = os.path.join(workdir, "candidates.copy")
        state.write_candidates_file(ctx["candidates_file"])

        # The pre-filled table: the stream's final state, vacuumed and analyzed, as a template.
        tmpl = f"bench_{RUN_ID}_prefilled"
        create_db(tmpl)
        migrate(tmpl)
        psql_load(tmpl, ctx["expected_file"], ctx["topic"], workdir)
        conn = psycopg2.connect(dsn(tmpl))
        conn.autocommit = True
        conn.cursor().execute("VACUUM (FREEZE, ANALYZE) customer_metadata")
        conn.close()
        log(f"template {tmpl} ready")

        runners = {"ceiling": run_ceiling, "worker": run_worker, "naive": run_naive,
                   "flink": run_flink}
        for c in ("ceiling", "worker", "naive", "flink"):
            if c in only:
                for label, template in (("empty", None), ("pre-filled", tmpl)):
                    if c == "flink" and template:
                        continue  # its own table, empty only
                    rows.append(runners[c](ctx, label, template))
        by = {r["contender"]: r for r in rows}
        for label in ("empty", "pre-filled"):
            w = by.get(f"worker ({label})")
            c, nv = by.get(f"ceiling ({label})"), by.get(f"naive ({label})")
            if w and c:
                w["x_ceiling"] = w["items_per_s"] / c["items_per_s"]
            if w and nv:
                w["x_naive"] = w["items_per_s"] / nv["items_per_s"]
            fl = by.get(f"flink ({label})")
            if w and fl:
                w["x_flink"] = w["items_per_s"] / fl["items_per_s"]
        drop_db(tmpl)
    except BenchError as e:
        log(f"FAILED: {e}")
        report["failed"] = str(e)
        status = 1
    order = ["ceiling (empty)", "naive (empty)", "flink (empty)", "worker (empty)",
             "ceiling (pre-filled)", "naive (pre-filled)", "worker (pre-filled)"]
    rows.sort(key=lambda r: order.index(r["contender"]))
    report["contenders"] = rows
    report["main_s"] = time.monotonic() - t0
    report["machine"]["loadavg_at_end"] = open("/proc/loadavg").read().split()[:3]
    log(f"main phase done in {report['main_s']:.0f}s")
    return status


def int_list(text):
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


PHASES = ("main", "curves", "backlog", "api")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phases", help="comma-separated phases to run, in this order: main (the "
                    "table above), curves (scale curves), backlog (bounded memory), api (the HTTP "
                    "API under wrk, api_phase.py); default all four, main only with --smoke. "
                    "Results of phases not run are kept from the results file (merged)")
    ap.add_argument("--items", type=int, help="items of the main phase's stream (default 1,000,000)")
    ap.add_argument("--smoke", action="store_true", help="50,000 items, quick (part of make test)")
    ap.add_argument("--seed", type=int, default=gen.DEFAULT_SEED)
    ap.add_argument("--stream", choices=gen.KINDS, default="spread",
                    help="the stream (gen.py): spread (default: keys on every partition, as real "
                    "producers send them) or confined (a key stays on its first partition)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--name", help="results file name (default: latest; smoke for --smoke; "
                    "custom with --only or --worker-env)")
    ap.add_argument("--only", default=None,
                    help="comma-separated contenders of the main phase: ceiling, naive, worker, "
                    "flink (default: all four; without flink with --smoke)")
    ap.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra environment for the worker, e.g. TXN_MAX_ITEMS=20000 (repeatable)")
    ap.add_argument("--curve-items", type=int, default=500_000, help="items per curve point")
    ap.add_argument("--curve-items-one", type=int, default=20_000,
                    help="items of the 1-item-per-message point")
    ap.add_argument("--curve-per-msg", type=int_list, default=[1, 10, 100, 1000],
                    help="items per message of the curve (default 1,10,100,1000)")
    ap.add_argument("--curve-workers", type=int_list, default=[1, 2],
                    help="worker processes of the curve (default 1,2)")
    ap.add_argument("--curve-table-rows", type=int_list, default=[0, 1_000_000, 5_000_000],
                    help="pre-filled rows of the curve (default 0,1000000,5000000)")
    ap.add_argument("--floor-naive", type=float, default=None,
                    help="fail when worker/naive is below this (default %g with --smoke, else "
                    "off; 0: off)" % SMOKE_FLOORS["x_naive"])
    ap.add_argument("--floor-ceiling", type=float, default=None,
                    help="fail when worker/ceiling is below this (default %g with --smoke, else "
                    "off; 0: off)" % SMOKE_FLOORS["x_ceiling"])
    ap.add_argument("--backlog-items", type=int, default=5_000_000)
    ap.add_argument("--backlog-seconds", type=float, default=60.0,
                    help="longest time the worker drains the backlog while sampled")
    ap.add_argument("--api-seconds", type=float, default=15.0,
                    help="seconds of each wrk run of the api phase (default 15)")
    ap.add_argument("--api-connections", type=int, default=64,
                    help="wrk's keep-alive connections in the api phase (default 64)")
    ap.add_argument("--api-ceiling-seconds", type=float, default=10.0,
                    help="seconds of the api phase's librdkafka ceiling per batch size")
    ap.add_argument("--api-outage-seconds", type=float, default=10.0,
                    help="seconds wrk keeps posting with the broker stopped (default 10)")
    a = ap.parse_args()
    default_only = "ceiling,naive,worker" if a.smoke else "ceiling,naive,worker,flink"
    only = [c.strip() for c in (a.only or default_only).split(",") if c.strip()]
    if not only or set(only) - {"ceiling", "naive", "worker", "flink"}:
        ap.error("--only takes ceiling, naive, worker, flink")
    phases_arg = a.phases or ("main" if a.smoke else ",".join(PHASES))
    want = [p.strip() for p in phases_arg.split(",") if p.strip()]
    if not want or set(want) - set(PHASES):
        ap.error("--phases takes main, curves, backlog, api")
    worker_env = {}
    for kv in a.worker_env:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            ap.error(f"--worker-env {kv}: NAME=VALUE expected")
        worker_env[k] = v
    if not BROKERS:
        print("bench: KAFKA_BROKERS is not set: run tests/bench/run.sh", file=sys.stderr)
        return 2
    n = a.items or (50_000 if a.smoke else 1_000_000)
    name = a.name or ("custom" if worker_env or a.only else "smoke" if a.smoke else "latest")
    stack = os.environ.get("MW_STACK_DIR") or tempfile.gettempdir()
    workdir = tempfile.mkdtemp(prefix="bench-", dir=stack)
    os.chmod(workdir, 0o755)
    os.makedirs(a.out, exist_ok=True)
    # A copy of the binary: the tree may be rebuilt while the benchmark runs, and every
    # contender must use one build (migrate and run alike).
    global BIN
    snap = os.path.join(workdir, "metadata-worker")
    shutil.copy2(BIN, snap)
    with open(snap, "rb") as f:
        bin_sha = hashlib.sha256(f.read()).hexdigest()
    BIN = snap
    # phases.py imports this module as `bench`: let it find this very instance (BIN, RUN_ID).
    sys.modules["bench"] = sys.modules[__name__]
    import api_phase
    import phases
    worker_info = {"sha256": bin_sha, "git": git_describe(), "extra_env": worker_env}
    ctx = {"items": n, "seed": a.seed, "kind": a.stream, "workdir": workdir, "wm": Watermarks(),
           "out": a.out, "name": name, "worker_env": worker_env, "worker_info": worker_info,
           "topic": f"bench-{RUN_ID}-input",
           "naive_max": min(n, max(gen.ITEMS_PER_MSG, n // 10), 100_000),
           "latency_msgs": 100 if a.smoke else 200}
    # This run's sections only: the top-level fields of the main phase and one key per other
    # phase; merged into the results file when written (merge_write).
    report = {}
    if "main" in want:
        report = {"date": now_iso(), "smoke": a.smoke, "machine": machine(),
                  "naive_max_items": ctx["naive_max"], "latency_msgs": ctx["latency_msgs"],
                  "run_id": RUN_ID, "worker": worker_info}
    status = 0
    ran = []
    try:
        for phase in want:
            log(f"phase {phase} (load average {' '.join(open('/proc/loadavg').read().split()[:3])})")
            ran.append(phase)
            if phase == "main":
                status |= run_main_phase(ctx, report, only)
                continue
            t0 = time.monotonic()
            try:
                run = {"curves": phases.run_curves, "backlog": phases.run_backlog,
                       "api": api_phase.run_api}[phase]
                sec = run(ctx, a)
                if phase in ("backlog", "api") and not sec["ok"]:
                    status = 1
            except BenchError as e:
                log(f"{phase} FAILED: {e}")
                sec = {"date": now_iso(), "failed": str(e), "phase_s": time.monotonic() - t0}
                status = 1
            report[phase] = sec
            log(f"phase {phase} done in {sec['phase_s']:.0f}s")
    finally:
        ctx["wm"].close()
    total = time.monotonic() - T_START
    if "main" in ran:
        report["total_s"] = total
        floors = {"x_naive": a.floor_naive, "x_ceiling": a.floor_ceiling}
        for k, needs in (("x_naive", "naive"), ("x_ceiling", "ceiling")):
            if floors[k] is None:  # the smoke's default, for the ratios this run measures
                floors[k] = SMOKE_FLOORS[k] if a.smoke and needs in only else 0
        if any(floors.values()) and not report.get("failed"):
            report["floors"] = floor_checks(report["contenders"], floors)
            if not all(c["ok"] for c in report["floors"]):
                status = 1
    if "stream" in report or set(ran) & set(SECTIONS):
        merge_write(a.out, name, report, ran)
    if "main" in ran:
        rows = report["contenders"]
        print()
        print(f"metadata-worker benchmark: {n:,} items, {report['machine']['nproc']} CPUs "
              f"({report['machine']['cpu_model']}), {report['date']}")
        print(text_table(rows))
        print()
        for r in rows:
            b = r.get("batches")
            if b:
                print(f"{r['contender']}: {b['transactions']} transactions of {b['items_per_txn_mean']:.0f} "
                      f"items, {b.get('row_versions_per_item', 0):.3f} row versions per item; in the database {b['db_ms_sum'] / 1000:.1f}s, in flushes "
                      f"{b['total_ms_sum'] / 1000:.1f}s of {r.get('seconds_from_start', r['seconds']):.1f}s; first result after "
                      f"{r['first_result_s']:.1f}s, then {r['steady_items_per_s']:,.0f} items/s")
        if report.get("floors"):
            print()
            for c in report["floors"]:
                print(f"floor: {floor_text(c)}")
        if report.get("failed"):
            print(f"main phase FAILED: {report['failed'].splitlines()[0]}")
        print(f"main phase: {report['main_s']:.0f}s")
    for key, fn in (("curves", phases.curves_text), ("backlog", phases.backlog_text),
                    ("api", api_phase.api_text)):
        if key in ran:
            print()
            sec = report[key]
            if sec.get("failed"):
                print(f"{key}: FAILED after {sec['phase_s']:.0f}s: {sec['failed'].splitlines()[0]}")
            else:
                print(fn(sec))
    if status:
        print(f"\nbench: FAILED in {total:.0f}s; results in {os.path.join(a.out, name)}.json/.md")
    else:
        print(f"\nbench: ok in {total:.0f}s; results in {os.path.join(a.out, name)}.json/.md")
    return status


if __name__ == "__main__":
    sys.exit(main())
