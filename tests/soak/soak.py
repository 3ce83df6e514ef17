"""`make soak`: one long run of the worker under steady load and scheduled faults, to show that
its memory, file descriptors, lag and latency stay flat (or to explain why not). Not part of
`make test` (an hour by default).

  1. Starts its own throwaway stack (tests/harness/stack.sh start; stopped at the end, also on
     failure or Ctrl-C), a fresh database (migrated) and topics (input and results with
     SOAK_PARTITIONS partitions; 10 min retention so that an hour of data does not fill Kafka).
  2. Rate: SOAK_RATE items/s, or half the maximum, measured first as the bench measures it:
     a 1,000,000-item backlog (gen.py's stream) drained by one worker on its own database,
     items / seconds from its first result to its last (tests/bench/bench.py's "steady").
  3. Starts the worker (METRICS_ADDR, static membership KAFKA_GROUP_INSTANCE_ID=soak-0) and
     produces the realistic stream at that rate for SOAK_MINUTES (streams.Feeder), while
     streams.Tracker checks every result off. Every SOAK_RESTART_MINUTES the worker is
     stopped, by SIGTERM and SIGKILL in turn, and started again under the same name;
     PostgreSQL is stopped and started (stack.sh pg-stop / pg-start, 5 s down) at 25/60 and
     45/60 of the run.
  4. Every SOAK_SAMPLE_SECONDS one JSON line into tests/soak/results/soak-<date>.jsonl:
     worker VmRSS and open fds (/proc), lag (high watermarks minus customer_metadata_offsets'
     next_offset: applied; and minus the group's committed offsets), produce -> result
     latency p50/p99 of the messages completed in the interval, counts, /metrics counters.
  5. Drains (every produced item must get its result), checks the table (row count equals the
     stream's distinct valid keys; a 1-in-500 sample of keys column by column: an hour's full
     expected state would not fit in memory), writes soak-<date>.md and prints the summary
     (report.py). Exit 1 on missing results, a table mismatch, an unexpected worker exit, or
     RSS/fds peaks growing from the first half to the second (report.py says how much).

Run with Debian's /usr/bin/python3 (python3-confluent-kafka, python3-psycopg2).
"""

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "bench"))
STACK_SH = os.path.join(ROOT, "tests", "harness", "stack.sh")


def knob(name, default, kind=float):
    v = os.environ.get(name)
    return kind(v) if v not in (None, "") else default


MINUTES = knob("SOAK_MINUTES", 60.0)
RESTART_MIN = knob("SOAK_RESTART_MINUTES", 10.0)
SAMPLE_S = knob("SOAK_SAMPLE_SECONDS", 60.0)
RATE = knob("SOAK_RATE", None)
PARTS = knob("SOAK_PARTITIONS", 6, int)
PROBE_ITEMS = knob("SOAK_PROBE_ITEMS", 1_000_000, int)
PG_DOWN_S = 5.0
# Disk a run needs, from the first hour-long attempt (30,215 items/s, stopped at 13 minutes when
# it was seen to head for 75 GB): PostgreSQL grew 466 bytes per item produced (new keys keep
# coming, with their indexes), Kafka held 806 bytes per item of its retained window (input and
# results), which reaches ~15 minutes (10 min retention, removed by 64 MB segments on a
# 5-minute check).
PG_BYTES_PER_ITEM, KAFKA_BYTES_PER_ITEM, KAFKA_WINDOW_MIN = 470, 810, 15


def disk_needed(rate, minutes):
    """Bytes the run's PostgreSQL and Kafka will hold at its end."""
    return rate * 60 * (minutes * PG_BYTES_PER_ITEM
                        + min(minutes, KAFKA_WINDOW_MIN) * KAFKA_BYTES_PER_ITEM)
METRICS = ("db_retries_total", "dead_letters_total", "bad_requests_total", "replayed_messages_total",
           "results_failed_total", "rebalances_total", "db_errors_total", "messages_consumed_total")


def log(msg):
    print(f"soak [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Interrupted(Exception):
    pass


def start_stack(folder):
    subprocess.run(["bash", STACK_SH, "start", folder], check=True, timeout=300)
    env = subprocess.run(["bash", "-c", '. "$1/env"; env -0', "-", folder], check=True,
                         capture_output=True).stdout.decode()
    os.environ.update(kv.split("=", 1) for kv in env.split("\0") if "=" in kv)


class Worker:
    """The worker under test: one process at a time, restarted under the same group instance
    name; its JSON log appended to one file."""

    def __init__(self, bench, env, log_path):
        self.bench, self.env, self.log_path = bench, env, log_path
        self.proc, self.starts, self.unexpected = None, 0, []

    def start(self):
        self.env["METRICS_ADDR"] = self.addr = f"127.0.0.1:{self.bench.free_port()}"
        with open(self.log_path, "ab") as lf:
            self.proc = subprocess.Popen([self.bench.BIN, "run"], env=self.env,
                                         stdout=subprocess.DEVNULL, stderr=lf, start_new_session=True)
        self.starts += 1
        for _ in range(40):   # until exec'd: a sample must not read the forked Python's /proc
            try:
                if os.readlink(f"/proc/{self.proc.pid}/exe").endswith("metadata-worker"):
                    break
            except OSError:
                pass
            time.sleep(0.05)

    def check(self):
        """Records (and survives) an exit nobody asked for: the worker is started again."""
        if self.proc.poll() is not None:
            self.unexpected.append(f"worker exited {self.proc.returncode} by itself")
            log(f"UNEXPECTED: {self.unexpected[-1]}; starting it again")
            self.start()

    def restart(self, sig):
        self.check()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            self.unexpected.append("worker did not exit within 60 s of SIGTERM")
        if sig == signal.SIGTERM and rc != 0:
            self.unexpected.append(f"worker exited {rc} on SIGTERM")
        self.start()
        return rc

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode if self.proc else None

    def proc_stats(self):
        pid = self.proc.pid
        try:
            with open(f"/proc/{pid}/status") as f:
                rss = next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmRSS:"))
            return round(rss, 1), len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration):
            return None, None

    def metrics(self):
        out = {}
        try:
            with urllib.request.urlopen(f"http://{self.addr}/metrics", timeout=3) as r:
                text = r.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            name = line[len("metadata_worker_"):].split("{", 1)[0].split(" ", 1)[0]
            if line.startswith("metadata_worker_") and name in METRICS:
                label = line.split('="', 1)[1].split('"', 1)[0] if "{" in line else ""
                key = f"{name}{{{label}}}" if label else name
                out[key] = int(float(line.rsplit(" ", 1)[1]))
        return out


def measure_max_rate(bench, gen, wm):
    """Items/s of one worker draining a PROBE_ITEMS backlog, from its first result to its last
    (the bench's steady rate), on its own database and topics (dropped afterwards)."""
    n = PROBE_ITEMS - PROBE_ITEMS % gen.ITEMS_PER_MSG
    topic, results = "soak-probe-input", "soak-probe-results"
    bench.create_topics([(topic, PARTS), (results, PARTS), ("soak-probe-dlq", 1)])
    bench.create_db("soak_probe")
    bench.migrate("soak_probe")
    pairs = ((p, pl) for _m, p, _o, pl, _i, _v in
             gen.Stream(n, seed=gen.DEFAULT_SEED - 1, partitions=PARTS, prefix="probe-").payloads())
    import phases
    psecs, _ = phases.produce_all(topic, pairs)
    log(f"max rate: {n:,} items waiting (produced in {psecs:.0f}s); draining them")
    env = dict(os.environ, KAFKA_GROUP_ID="soak-probe", KAFKA_INPUT_TOPIC=topic,
               KAFKA_RESULTS_TOPIC=results, KAFKA_DLQ_TOPIC="soak-probe-dlq",
               DATABASE_URL=bench.dsn("soak_probe"), LOG_LEVEL="info")
    proc = subprocess.Popen([bench.BIN, "run"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        t_first = n_first = None
        while True:
            time.sleep(0.2)
            got = wm.total(results, PARTS)
            if got and t_first is None:
                t_first, n_first = time.monotonic(), got
            if got >= n:
                break
            if proc.poll() is not None or time.monotonic() - t0 > 600:
                raise RuntimeError(f"max-rate probe: worker exited or stalled at {got} of {n}")
        t_end = time.monotonic()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    bench.drop_db("soak_probe")
    return (n - n_first) / (t_end - t_first)


def lag(bench, wm, committed_consumer, topic, group):
    highs = wm.highs(topic, PARTS)
    out = {"high": sum(highs), "lag_applied": None, "lag_committed": None}
    try:
        import psycopg2
        conn = psycopg2.connect(bench.dsn("soak"), connect_timeout=3)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT partition, next_offset FROM customer_metadata_offsets "
                        "WHERE consumer_group = %s AND topic = %s", (group, topic))
            nxt = dict(cur.fetchall())
            cur.execute("SELECT pg_database_size('soak')")
            out["db_mb"] = round(cur.fetchone()[0] / 2**20)
        conn.close()
        out["lag_applied"] = sum(h - nxt.get(p, 0) for p, h in enumerate(highs))
    except Exception:
        pass  # PostgreSQL down (a scheduled restart): no applied lag this time
    from confluent_kafka import TopicPartition
    try:
        tps = committed_consumer.committed([TopicPartition(topic, p) for p in range(PARTS)], timeout=5)
        out["lag_committed"] = sum(h - max(tp.offset, 0) for h, tp in zip(highs, tps))
    except Exception:
        pass
    return out


def schedule(total_s):
    """[(seconds from the start, action)]: worker restarts (SIGTERM, SIGKILL, ...) every
    RESTART_MIN, PostgreSQL restarts at 25/60 and 45/60 of the run."""
    ev, k = [], 1
    while k * RESTART_MIN * 60 < total_s - 1:
        ev.append((k * RESTART_MIN * 60, "sigterm" if k % 2 else "sigkill"))
        k += 1
    ev += [(total_s * 25 / 60, "pg-restart"), (total_s * 45 / 60, "pg-restart")]
    return sorted(ev)


def main():
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, f"soak-{stamp}")
    folder = os.environ.get("SOAK_STACK_DIR") or tempfile.mkdtemp(prefix="mw-soak.")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(Interrupted("SIGTERM")))
    worker = None
    try:
        start_stack(folder)
        import bench
        import gen
        import report
        import streams
        bench.BROKERS = os.environ["KAFKA_BROKERS"]
        snap = os.path.join(folder, "metadata-worker")   # one build for the whole run
        shutil.copy2(bench.BIN, snap)
        bench.BIN = snap
        wm = bench.Watermarks()
        measured = None if RATE else measure_max_rate(bench, gen, wm)
        rate = RATE or measured / 2
        log(f"rate: {rate:,.0f} items/s (" + (f"maximum measured {measured:,.0f} items/s, halved)"
                                              if measured else "SOAK_RATE)"))
        need, free = disk_needed(rate, MINUTES), shutil.disk_usage(folder).free
        log(f"disk: the run needs about {need / 1e9:.0f} GB, {free / 1e9:.0f} GB free")
        if need * 1.1 > free:
            log(f"not enough disk for {MINUTES:g} min at {rate:,.0f} items/s: lower SOAK_RATE "
                "or SOAK_MINUTES")
            return 2
        from confluent_kafka.admin import AdminClient, NewTopic
        keep = {"retention.ms": "600000", "segment.bytes": str(64 << 20)}
        topic, results, group = "soak-input", "soak-results", "soak"
        admin = AdminClient({"bootstrap.servers": bench.BROKERS})  # kept: futures need it
        fs = admin.create_topics(
            [NewTopic(topic, PARTS, 1, config=keep), NewTopic(results, PARTS, 1, config=keep),
             NewTopic("soak-dlq", 1, 1)])
        for f in fs.values():
            f.result(30)
        bench.create_db("soak")
        bench.migrate("soak")
        env = dict(os.environ, KAFKA_GROUP_ID=group, KAFKA_GROUP_INSTANCE_ID="soak-0",
                   KAFKA_INPUT_TOPIC=topic, KAFKA_RESULTS_TOPIC=results, KAFKA_DLQ_TOPIC="soak-dlq",
                   DATABASE_URL=bench.dsn("soak"), LOG_LEVEL="info")
        worker = Worker(bench, env, base + "-worker.log")
        worker.start()
        from confluent_kafka import Consumer
        committed = Consumer({"bootstrap.servers": bench.BROKERS, "group.id": group,
                              "enable.auto.commit": False})
        tracker = streams.Tracker(bench.BROKERS, results, PARTS, "soak-tracker")
        tracker.start()
        total_s = MINUTES * 60
        feeder = streams.Feeder(bench.BROKERS, topic, PARTS, rate, total_s, tracker)
        events = schedule(total_s)
        log(f"{MINUTES:g} min at {rate:,.0f} items/s; events at "
            + ", ".join(f"{t / 60:.1f} min {a}" for t, a in events) + f"; samples in {base}.jsonl")
        run = {"date": stamp, "rate": rate, "max_rate_measured": measured, "minutes": MINUTES,
               "restart_minutes": RESTART_MIN, "sample_seconds": SAMPLE_S, "partitions": PARTS,
               "git": bench.git_describe(), "machine": bench.machine(), "events": []}
        inflight = []            # (seconds, messages produced but not complete), every second
        t0 = time.monotonic()
        feeder.start()
        next_sample, n_sample = t0 + SAMPLE_S, 0
        with open(base + ".jsonl", "w") as out:
            out.write(json.dumps({"run": run}) + "\n")
            while not feeder.done.is_set():
                time.sleep(1.0 - (time.monotonic() - t0) % 1.0)
                el = time.monotonic() - t0
                inflight.append((round(el, 1), tracker.in_flight()))
                worker.check()
                while events and events[0][0] <= el:
                    _, action = events.pop(0)
                    log(f"{el / 60:5.1f} min: {action}")
                    if action == "pg-restart":
                        subprocess.run(["bash", STACK_SH, "pg-stop", folder], check=True, timeout=120)
                        time.sleep(PG_DOWN_S)
                        subprocess.run(["bash", STACK_SH, "pg-start", folder], check=True, timeout=120)
                    else:
                        worker.restart(signal.SIGTERM if action == "sigterm" else signal.SIGKILL)
                    run["events"].append({"t": round(el, 1), "action": action})
                    out.write(json.dumps({"event": run["events"][-1]}) + "\n")
                if time.monotonic() >= next_sample:
                    next_sample += SAMPLE_S
                    n_sample += 1
                    s = sample(n_sample, el, worker, tracker, feeder, bench, wm, committed,
                               topic, group, run["events"])
                    out.write(json.dumps(s) + "\n")
                    out.flush()
                    log(report.sample_line(s))
            log("production over; draining")
            deadline = time.monotonic() + 300
            while tracker.missing()[0] and time.monotonic() < deadline and not worker.unexpected:
                time.sleep(1)
                worker.check()
            el = time.monotonic() - t0
            out.write(json.dumps(sample(n_sample + 1, el, worker, tracker, feeder, bench, wm,
                                        committed, topic, group, run["events"], final=True)) + "\n")
        missing_msgs, missing_items = tracker.missing()
        unsent = feeder.messages - tracker.n_sent
        rc = worker.stop()
        if rc != 0:
            worker.unexpected.append(f"worker exited {rc} on the final SIGTERM")
        tracker.stop_flag.set()
        committed.close()
        wm.close()
        table = report.check_table(bench, feeder, os.path.join(folder, "sample.copy"))
        run.update({"produced_messages": feeder.messages, "unsent_messages": unsent,
                    "missing_messages": missing_msgs, "missing_items": missing_items,
                    "repeated_results": tracker.repeats, "worker_starts": worker.starts,
                    "unexpected": worker.unexpected, "errors": feeder.errors + tracker.errors,
                    "table": table, "inflight": inflight})
        ok = report.summarize(run, base)
        return 0 if ok else 1
    except (KeyboardInterrupt, Interrupted) as e:
        log(f"interrupted ({e or 'Ctrl-C'}); the samples so far are in {base}.jsonl")
        return 130
    finally:
        if worker:
            worker.stop()
        subprocess.run(["bash", STACK_SH, "stop", folder], timeout=300)


def sample(n, el, worker, tracker, feeder, bench, wm, committed, topic, group, events, final=False):
    sent, done, pending, res, rep, lat = tracker.take()
    rss, fds = worker.proc_stats()
    s = {"sample": n, "t": round(el, 1), "minute": round(el / 60, 2), "rss_mb": rss, "fds": fds,
         "worker_pid": worker.proc.pid, "worker_starts": worker.starts,
         "produced_msgs": feeder.messages, "delivered_msgs": sent, "complete_msgs": done,
         "incomplete_msgs": pending, "results_read": res, "repeated_results": rep,
         "latency_n": len(lat), "latency_p50_ms": bench.percentile(lat, 0.5),
         "latency_p99_ms": bench.percentile(lat, 0.99), "latency_max_ms": max(lat, default=None),
         "events_in_interval": [e["action"] for e in events if e["t"] > el - SAMPLE_S],
         "metrics": worker.metrics()}
    if final:
        s["final"] = True
    s.update(lag(bench, wm, committed, topic, group))
    return s


if __name__ == "__main__":
    sys.exit(main())
