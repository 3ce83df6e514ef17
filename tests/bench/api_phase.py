"""The benchmark's api phase (--phases api): `metadata-worker api` (docs/contract.md §8) under
load from wrk, Debian's HTTP load generator, against the ceiling of the same bodies produced
straight to Kafka with librdkafka (issue 12, item 6).

  set-up    a fresh 6-partition input topic, a keys file with one client (`metadata-worker
            api-key bench`), `metadata-worker api` with METRICS_ADDR (its /metrics gives the
            answers by status and the items accepted; /proc its RSS and per-thread CPU), and
            pre-encoded bodies of gen.Stream: 10-item and 100-item batches, keys spread over
            partitions, every field, about 1% invalid items (a body holding some is still 200).
            A 2 s wrk warm-up (not reported) gets the producer's id and connections ready.
  maximum   per size: wrk, --api-connections keep-alive connections (64) from 2 threads for
            --api-seconds (15), a Lua script cycling through the bodies with the reference's
            headers (Content-Type, asapp-api-id, asapp-api-secret): requests/s, items/s (200
            answers x items per body; the API's items-accepted counter as a check), latency
            p50/p90/p99/max (wrk's own histogram, through the script's done()), the answers
            by status (from /metrics, read once no request is in hand; "other" there is status
            0: a request whose connection wrk closed when its run ended, not an answer), the
            CPU of the API (by thread), of wrk, of the broker, and of the rest of the machine.
  ceiling   per size: the same bodies produced straight with librdkafka (confluent_kafka's
            Producer from this process: idempotent, acks=all, linger.ms 5, the same key as the
            API's messages -- the client id, so the same single partition -- and the same two
            headers) as fast as it goes for --api-ceiling-seconds, timed to the last delivery
            report: messages/s and items/s.
  half rate per size: wrk paced at half the maximum's requests/s (wrk cannot pace and Debian
            has no wrk2: the script's delay() makes each connection wait ~64/rate s, with
            jitter, between its answer and its next request; a 3 s calibration run corrects the
            wait for the answer time): achieved rate, p50/p99. Target p99 < 25 ms.
  outage    wrk posting 10-item bodies flat out while the broker is stopped (stack.sh
            kafka-stop) for --api-outage-seconds: the answers by status (only 200 before the
            stop and 503 after it are expected), the time of the 503s (the API's access log: at
            most API_PRODUCE_TIMEOUT_MS, 5,000 by default, plus librdkafka's 1 s timeout scan),
            the API's RSS sampled every 0.5 s; then kafka-start and one request until 200, and a
            3 s wrk run that must be all 200 again.
  memory    VmRSS sampled every 0.5 s through every step; VmHWM at the end.

The targets (items/s >= 0.5 x the ceiling; p99 < 25 ms at half rate) are reported met or
missed, not asserted. The phase fails (exit status 1) only on errors: a non-200 answer or a
socket error outside the outage, an answer other than 200/503 during it, no 200 after the
broker is back, the API exiting or not exiting 0 on SIGTERM.

Imported by bench.py (which registers itself as the module `bench`); needs wrk (deps/packages.txt,
section bench) and the env of tests/harness/stack.sh.
"""

import datetime
import http.client
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
import uuid

from confluent_kafka import Producer

import bench
import gen
from phases import loadavg, vm_status
from bench import BenchError, log

ROUTE = "/metadata-ingestion/v1/many-customer-metadata"
SIZES = (10, 100)
BODIES = {10: 1000, 100: 200}   # distinct pre-encoded bodies per size (cycled by wrk)
THREADS = 2
P99_TARGET_MS = 25.0
CEILING_SHARE = 0.5
STACK_SH = os.path.join(bench.ROOT, "tests", "harness", "stack.sh")

# The wrk script: bodies from a file (one JSON body a line), the reference's headers, each
# thread starting at its own place in the list; done() prints one JSON line with wrk's own
# figures. The secret comes from the environment (not on wrk's command line). @DELAY@ is
# replaced by a delay() function for the paced runs: wrk decides whether the script has one
# before init() runs, so it cannot be switched on from init().
WRK_LUA = r"""
-- tests/bench/api_phase.py: POST pre-encoded batches to metadata-worker api.
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

function init(args)
  local headers = {
    ["Content-Type"] = "application/json",
    ["asapp-api-id"] = os.getenv("MW_BENCH_CLIENT"),
    ["asapp-api-secret"] = os.getenv("MW_BENCH_SECRET"),
  }
  reqs = {}
  for line in io.lines(args[1]) do
    if #line > 0 then
      reqs[#reqs + 1] = wrk.format("POST", "@ROUTE@", headers, line)
    end
  end
  pace_ms = tonumber(args[2] or "0")
  idx = (tid * 7919) % #reqs
  math.randomseed(tid * 104729)
end

function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end
@DELAY@
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""

# Each connection waits about pace_ms between an answer and its next request (uniform
# jitter of +-50%, so the 64 connections do not march in step); wrk rounds to whole ms.
DELAY_LUA = r"""
function delay()
  return math.floor(pace_ms * (0.5 + math.random()) + 0.5)
end
"""


# ---------------------------------------------------------------- the API process

class Api:
    """metadata-worker api on a fresh port, with its metrics, RSS and per-thread CPU."""

    def __init__(self, ctx, topic, keys_file):
        self.port = bench.free_port()
        self.metrics_port = bench.free_port()
        self.log_file = os.path.join(ctx["workdir"], "api.log")
        env = dict(os.environ, KAFKA_BROKERS=bench.BROKERS, KAFKA_INPUT_TOPIC=topic,
                   API_ADDR=f"127.0.0.1:{self.port}", API_KEYS_FILE=keys_file,
                   METRICS_ADDR=f"127.0.0.1:{self.metrics_port}", LOG_LEVEL="info")
        env.update(ctx["worker_env"])
        self.timeout_ms = int(env.get("API_PRODUCE_TIMEOUT_MS", "5000"))
        with open(self.log_file, "wb") as lf:
            self.proc = subprocess.Popen([bench.BIN, "api"], env=env, stdout=subprocess.DEVNULL,
                                         stderr=lf)
        self.pid = self.proc.pid

    def url(self):
        return f"http://127.0.0.1:{self.port}{ROUTE}"

    def check_alive(self, what):
        if self.proc.poll() is not None:
            raise BenchError(f"api: exited {self.proc.returncode} during {what}; log: "
                             f"{self.log_file}\n" + bench.tail(self.log_file))

    def get(self, path, timeout=5):
        c = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=timeout)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read().decode()
        finally:
            c.close()

    def ready(self):
        try:
            return self.get("/readyz", 2)[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.check_alive("start-up")
            if self.ready():
                return
            time.sleep(0.2)
        raise BenchError(f"api: /readyz not 200 after {timeout}s; log: {self.log_file}\n"
                         + bench.tail(self.log_file))

    def metrics(self):
        """{"status": {"200": n, ...}, "items": n, "in_flight": n, "buffered": n}"""
        out = {"status": {}}
        _, text = self.get("/metrics")
        for line in text.splitlines():
            if line.startswith("metadata_worker_api_requests_total{"):
                st = line.split('status="', 1)[1].split('"', 1)[0]
                out["status"][st] = int(float(line.rsplit(" ", 1)[1]))
            elif line.startswith("metadata_worker_api_items_accepted_total "):
                out["items"] = int(float(line.rsplit(" ", 1)[1]))
            elif line.startswith("metadata_worker_api_in_flight "):
                out["in_flight"] = int(float(line.rsplit(" ", 1)[1]))
            elif line.startswith("metadata_worker_api_buffered_bytes "):
                out["buffered"] = int(float(line.rsplit(" ", 1)[1]))
        return out

    def threads(self):
        """{(tid, name): CPU seconds} of the API's threads."""
        out = {}
        base = f"/proc/{self.pid}/task"
        for t in os.listdir(base):
            try:
                with open(f"{base}/{t}/comm") as f:
                    name = f.read().strip()
                with open(f"{base}/{t}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
                out[(int(t), name)] = (int(rest[11]) + int(rest[12])) / bench.CLK
            except OSError:
                pass
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "killed after 60 s"


def settled_metrics(api, timeout_s=None):
    """/metrics once no request is in hand any more: a request whose connection wrk closed at
    the end of its run is counted when Kafka answers it (or API_PRODUCE_TIMEOUT_MS passes)."""
    end = time.monotonic() + (timeout_s or api.timeout_ms / 1000 + 3)
    while True:
        m = api.metrics()
        if not m.get("in_flight") or time.monotonic() > end:
            return m
        time.sleep(0.1)


def status_delta(before, after):
    d = {k: after["status"].get(k, 0) - before["status"].get(k, 0) for k in after["status"]}
    return {k: v for k, v in d.items() if v}


def thread_names(api, before, after, wall):
    """The API's threads by CPU over a step, as shares of one CPU: [(label, share)], the
    largest first. The last MHD-single thread started is the API's (the first serves
    METRICS_ADDR)."""
    mhd = sorted(tid for tid, name in after if name == "MHD-single")
    rows = []
    for (tid, name), cpu in after.items():
        used = cpu - before.get((tid, name), 0.0)
        label = name
        if name == "MHD-single":
            label = "MHD-single (API)" if tid == mhd[-1] else "MHD-single (metrics)"
        elif name == "metadata-worker":
            label = "main (rd_kafka_poll)" if tid == api.pid else "metadata-worker (probe)"
        rows.append((label, used / wall if wall else None))
    rows.sort(key=lambda r: -(r[1] or 0))
    return [(l, round(s, 3)) for l, s in rows if s and s >= 0.01]


class Sampler(threading.Thread):
    """VmRSS of the API every 0.5 s, with the in-flight gauge and buffered bytes."""

    def __init__(self, api):
        super().__init__(daemon=True)
        self.api = api
        self.samples = []  # (monotonic, VmRSS MB, in_flight, buffered bytes)
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            try:
                rss, _ = vm_status(self.api.pid)
                m = {}
                try:
                    m = self.api.metrics()
                except OSError:
                    pass
                self.samples.append((time.monotonic(), rss, m.get("in_flight"), m.get("buffered")))
            except (OSError, TypeError):
                pass
            self.halt.wait(0.5)

    def window(self, t0, t1):
        return [s for s in self.samples if t0 <= s[0] <= t1]

    def stop(self):
        self.halt.set()
        self.join(5)




def peak(samples, i):
    vals = [s[i] for s in samples if s[i] is not None]
    return max(vals) if vals else None


# ---------------------------------------------------------------- wrk

class Wrk:
    """One wrk run: started with start(), finished with finish() (which can interrupt it with
    SIGINT: wrk then stops, reports and runs done())."""

    def __init__(self, ctx, api, secret, bodies_file, seconds, conns, pace_ms=0.0, timeout_s=10,
                 tag="wrk"):
        self.script = os.path.join(ctx["workdir"], f"{tag}.lua")
        with open(self.script, "w") as f:
            f.write(WRK_LUA.replace("@ROUTE@", ROUTE)
                    .replace("@DELAY@", DELAY_LUA if pace_ms > 0 else ""))
        self.out_file = os.path.join(ctx["workdir"], f"{tag}.out")
        self.cmd = ["wrk", "-t", str(THREADS), "-c", str(conns), "-d", f"{max(1, round(seconds))}s",
                    "--latency", "--timeout", f"{timeout_s}s", "-s", self.script, api.url(),
                    "--", bodies_file, f"{pace_ms:.3f}"]
        self.env = dict(os.environ, MW_BENCH_CLIENT="bench", MW_BENCH_SECRET=secret)
        self.tag = tag
        self.proc = None

    def start(self):
        self.out = open(self.out_file, "wb")
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self.out,
                                     stderr=subprocess.STDOUT)
        self.t0 = time.monotonic()
        return self

    def finish(self, interrupt=False):
        if interrupt and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        _, status, ru = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.t1 = time.monotonic()
        self.out.close()
        text = open(self.out_file, errors="replace").read()
        line = [l for l in text.splitlines() if l.startswith("WRK_JSON ")]
        if self.proc.returncode != 0 or not line:
            raise BenchError(f"{self.tag}: wrk exited {self.proc.returncode} without its "
                             f"figures:\n{text[-2000:]}")
        r = json.loads(line[-1].split(" ", 1)[1])
        r["cpu_s"] = ru.ru_utime + ru.ru_stime
        r["text"] = text
        return r


def wrk_figures(w, per_msg, status, items_delta):
    """requests/s, items/s and latency (ms) of a wrk run; status: answers by status (/metrics)."""
    secs = w["duration_us"] / 1e6
    ok = status.get("200", 0)
    lat = {k: v / 1000 for k, v in w["latency_us"].items()}
    sock = {k: v for k, v in w["errors"].items() if k != "status" and v}
    return {"seconds": secs, "requests": w["requests"], "ok_200": ok,
            "requests_per_s": w["requests"] / secs, "ok_per_s": ok / secs,
            "items_per_s": ok * per_msg / secs, "items_accepted": items_delta,
            "p50_ms": lat["p50"], "p90_ms": lat["p90"], "p99_ms": lat["p99"],
            "p999_ms": lat["p999"], "max_ms": lat["max"], "mean_ms": lat["mean"],
            "status": status,
            "non_200": sum(v for k, v in status.items() if k not in ("200", "other")),
            "cut_at_end": status.get("other", 0),
            "wrk_non_2xx": w["errors"]["status"], "socket_errors": sock,
            "wrk_cpu_s": w["cpu_s"], "mb_per_s": w["bytes"] / secs / 1e6}


def measured(ctx, api, secret, bodies_file, per_msg, seconds, conns, tag, pace_ms=0.0,
             sampler=None):
    """One wrk run with the API's counters, threads, RSS and the machine's CPU around it."""
    api.check_alive(tag)
    m0, th0, br0, busy0 = api.metrics(), api.threads(), bench.broker_cpu(), bench.sys_busy()
    cpu0 = bench.proc_times(api.pid)[0]
    w = Wrk(ctx, api, secret, bodies_file, seconds, conns, pace_ms, tag=tag).start()
    r = w.finish()
    api.check_alive(tag)
    th1, br1, busy1 = api.threads(), bench.broker_cpu(), bench.sys_busy()
    cpu1 = bench.proc_times(api.pid)[0]
    m1 = settled_metrics(api)
    wall = w.t1 - w.t0
    f = wrk_figures(r, per_msg, status_delta(m0, m1), m1.get("items", 0) - m0.get("items", 0))
    f.update({"api_cpu": (cpu1 - cpu0) / wall,
              "api_threads": thread_names(api, th0, th1, wall),
              "broker_cpu": per_s(bench.delta(br0, br1), wall),
              "wrk_cpu": r["cpu_s"] / wall, "machine_busy": (busy1 - busy0) / wall,
              "loadavg_at_end": loadavg()})
    # Everything else on the machine (other work; this script's sampler is a few %).
    f["other_cpu"] = max(0.0, f["machine_busy"] - f["api_cpu"] - f["wrk_cpu"]
                         - (f["broker_cpu"] or 0))
    if sampler:
        win = sampler.window(w.t0, w.t1)
        f["rss_peak_mb"] = peak(win, 1)
        f["in_flight_peak"] = peak(win, 2)
        f["buffered_peak_bytes"] = peak(win, 3)
    with open(os.path.join(ctx["workdir"], "wrk-all.out"), "a") as out:
        out.write(f"### {tag}: {' '.join(w.cmd)}\n{r['text']}\n")
    return f


def per_s(v, secs):
    return None if v is None or not secs else v / secs




# ---------------------------------------------------------------- the ceiling

def ceiling(topic, bodies, per_msg, seconds):
    """The bodies produced straight with librdkafka, as fast as it goes for `seconds`, timed to
    the last delivery report: the API's producer settings (idempotent, acks=all; linger 5 ms)
    and message (key = the client id, so one partition as the API's; its two headers)."""
    prod = Producer({"bootstrap.servers": bench.BROKERS, "enable.idempotence": True,
                     "acks": "all", "linger.ms": 5, "compression.type": "none",
                     "queue.buffering.max.kbytes": 65536, "message.timeout.ms": 30000})
    # The connection and the producer id first (not timed), as the API's warm-up does.
    prod.produce(topic, bodies[0], key=b"bench")
    if prod.flush(30):
        raise BenchError("ceiling: the first message was not delivered in 30 s")
    done = {"ok": 0, "bad": []}

    def on_delivery(err, _msg):
        if err:
            done["bad"].append(str(err))
        else:
            done["ok"] += 1

    t_cpu = os.times()
    br0, busy0 = bench.broker_cpu(), bench.sys_busy()
    t0 = time.monotonic()
    end = t0 + seconds
    i = sent = 0
    while True:
        if (sent & 63) == 0 and time.monotonic() >= end:
            break
        body = bodies[i]
        i = (i + 1) % len(bodies)
        hdrs = [("api.client.id", b"bench"), ("api.request.id", str(uuid.uuid4()).encode())]
        while True:
            try:
                prod.produce(topic, body, key=b"bench", headers=hdrs, on_delivery=on_delivery)
                break
            except BufferError:
                prod.poll(0.005)
        sent += 1
        prod.poll(0)
    left = prod.flush(60)
    secs = time.monotonic() - t0
    t_cpu2 = os.times()
    br1, busy1 = bench.broker_cpu(), bench.sys_busy()
    if left or done["bad"]:
        raise BenchError(f"ceiling ({per_msg} items): {left} undelivered; {done['bad'][:3]}")
    me = (t_cpu2.user + t_cpu2.system) - (t_cpu.user + t_cpu.system)
    busy = (busy1 - busy0) / secs
    broker = per_s(bench.delta(br0, br1), secs)
    return {"messages": done["ok"], "seconds": secs, "messages_per_s": done["ok"] / secs,
            "items_per_s": done["ok"] * per_msg / secs, "producer_cpu": me / secs,
            "broker_cpu": broker, "machine_busy": busy,
            "other_cpu": max(0.0, busy - me / secs - (broker or 0))}


# ---------------------------------------------------------------- the phase

def make_bodies(ctx, per_msg):
    """BODIES[per_msg] bodies of gen.Stream (their own key prefix), one a line in a file.
    Returns (file, bodies, invalid items, bodies holding an invalid item)."""
    n = BODIES[per_msg]
    stream = gen.Stream(n * per_msg, ctx["seed"], per_msg=per_msg, prefix=f"api{per_msg}-",
                        kind=ctx["kind"])
    bodies, invalid, with_bad = [], 0, 0
    for _m, _p, _off, payload, _items, inv in stream.payloads():
        if all(inv):
            continue  # all items invalid: a 400, not this benchmark's traffic
        bodies.append(payload)
        invalid += sum(inv)
        with_bad += any(inv)
    path = os.path.join(ctx["workdir"], f"api-bodies-{per_msg}.jsonl")
    with open(path, "wb") as f:
        for b in bodies:
            if b"\n" in b:
                raise BenchError("api: a body with a newline (the wrk script reads lines)")
            f.write(b + b"\n")
    return path, bodies, invalid, with_bad


def new_key(ctx):
    r = subprocess.run([bench.BIN, "api-key", "bench"], capture_output=True, timeout=10)
    if r.returncode != 0:
        raise BenchError(f"api-key failed: {r.stderr.decode()}")
    lines = r.stdout.decode().splitlines()
    secret = [l for l in lines if l.startswith("asapp-api-secret: ")][0].split(": ", 1)[1]
    line = [l for l in lines if l.startswith("bench sha256:")][0]
    path = os.path.join(ctx["workdir"], "api.keys")
    with open(path, "w") as f:
        f.write(line + "\n")
    return secret, path


def post_once(api, secret, body, timeout=15):
    c = http.client.HTTPConnection("127.0.0.1", api.port, timeout=timeout)
    try:
        c.request("POST", ROUTE, body=body, headers={
            "Content-Type": "application/json", "asapp-api-id": "bench",
            "asapp-api-secret": secret})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def stack(cmd):
    t0 = time.monotonic()
    r = subprocess.run(["bash", STACK_SH, cmd, os.environ["MW_STACK_DIR"]],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=180)
    if r.returncode != 0:
        raise BenchError(f"stack.sh {cmd} failed: {r.stderr.decode()[-1000:]}")
    return time.monotonic() - t0


def access_log_ms(log_file, t0_wall, t1_wall, status):
    """ms of the access-log lines of `status` logged between two wall-clock times."""
    out = []
    with open(log_file, errors="replace") as f:
        for line in f:
            if '"msg":"request"' not in line:
                continue
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("status") != status:
                continue
            t = datetime.datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp()
            if t0_wall <= t <= t1_wall:
                out.append(r.get("ms", 0))
    return out


def outage(ctx, api, secret, bodies_file, sampler, a, errors):
    """wrk flat out with 10-item bodies; the broker stopped under it for a.api_outage_seconds;
    then started again. Returns the section's outage part."""
    conns = a.api_connections
    before = api.metrics()
    w = Wrk(ctx, api, secret, bodies_file, 600, conns, timeout_s=30, tag="outage").start()
    time.sleep(3)
    api.check_alive("the outage run")
    m_stop = api.metrics()
    t_stop_wall = time.time()
    t_stop = time.monotonic()
    stop_s = stack("kafka-stop")
    t_down = time.monotonic()
    t_down_wall = time.time()
    log(f"api outage: broker stopped ({stop_s:.1f}s); wrk keeps posting for "
        f"{a.api_outage_seconds:.0f}s")
    ready_seen = []
    while time.monotonic() < t_down + a.api_outage_seconds:
        ready_seen.append(api.ready())
        time.sleep(0.5)
    api.check_alive("the outage")
    r = w.finish(interrupt=True)
    t_end = time.monotonic()
    t_end_wall = time.time()
    during = settled_metrics(api)
    win = sampler.window(t_down, t_end)
    rss_hwm = vm_status(api.pid)[1]
    log("api outage: starting the broker again")
    start_s = stack("kafka-start")
    t_up = time.monotonic()
    st, first_200 = None, None
    with open(bodies_file, "rb") as f:
        body = f.readline().rstrip(b"\n")
    while time.monotonic() < t_up + 90:
        try:
            st = post_once(api, secret, body)
        except OSError:
            st = None
        if st == 200:
            first_200 = time.monotonic() - t_up
            break
        time.sleep(0.5)
    if st != 200:
        errors.append(f"outage: no 200 within 90 s after the broker was back (last {st})")
    after_run = None
    if st == 200:
        after_run = measured(ctx, api, secret, bodies_file, 10, 3, conns, "after-outage",
                             sampler=sampler)
        if after_run["non_200"] or after_run["socket_errors"]:
            errors.append(f"after the outage: answers {after_run['status']}, socket errors "
                          f"{after_run['socket_errors']}")
    whole = status_delta(before, during)
    pre = status_delta(before, m_stop)
    odd = {k: v for k, v in whole.items() if k not in ("200", "503", "other")}
    if odd or any(k != "200" for k in pre):
        errors.append(f"outage: answers other than 200 before the stop / 200 and 503 after: "
                      f"before {pre}, whole run {whole}")
    ms503 = sorted(access_log_ms(api.log_file, t_stop_wall - 1, time.time(), 503))
    bound_ms = api.timeout_ms + 1500
    return {"seconds_down_under_load": t_end - t_down, "kafka_stop_s": stop_s,
            "kafka_start_s": start_s, "answers_whole_run": whole, "answers_before_stop": pre,
            "wrk_requests": r["requests"], "wrk_socket_errors":
                {k: v for k, v in r["errors"].items() if k != "status" and v},
            "n_503": len(ms503),
            "ms_503_p50": bench.percentile(ms503, 0.5), "ms_503_p99": bench.percentile(ms503, 0.99),
            "ms_503_max": max(ms503) if ms503 else None, "ms_503_bound": bound_ms,
            "fast_503": bool(ms503) and max(ms503) <= bound_ms,
            "readyz_false_seen": any(not x for x in ready_seen),
            "rss_peak_mb": peak(win, 1), "in_flight_peak": peak(win, 2),
            "buffered_peak_bytes": peak(win, 3), "vm_hwm_mb_after": rss_hwm,
            "first_200_after_start_s": first_200, "after": after_run,
            "since_stop_s": t_end - t_stop}


def run_api(ctx, a):
    """The api phase; returns the report section."""
    if not shutil.which("wrk"):
        raise BenchError("api: wrk is not installed (deps/packages.txt, section bench: "
                         "bash tests/harness/deps.sh all)")
    t0 = time.monotonic()
    conns = a.api_connections
    sec = {"date": bench.now_iso(), "loadavg_at_start": loadavg(),
           "worker": ctx["worker_info"], "connections": conns, "threads": THREADS,
           "seconds_per_run": a.api_seconds, "ceiling_seconds": a.api_ceiling_seconds,
           "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(" [")[0]
           .strip(), "sizes": {}}
    errors = []
    topic = f"bench-{bench.RUN_ID}-api-input"
    bench.create_topics([(topic, gen.PARTITIONS)])
    secret, keys_file = new_key(ctx)
    files = {}
    for per in SIZES:
        path, bodies, invalid, with_bad = make_bodies(ctx, per)
        files[per] = (path, bodies)
        sec["sizes"][str(per)] = {"bodies": len(bodies), "invalid_items": invalid,
                                  "bodies_with_invalid": with_bad,
                                  "body_bytes_mean": sum(map(len, bodies)) / len(bodies)}
    api = Api(ctx, topic, keys_file)
    sampler = Sampler(api)
    try:
        api.wait_ready()
        sampler.start()
        log(f"api: ready on 127.0.0.1:{api.port}; warm-up")
        measured(ctx, api, secret, files[10][0], 10, 2, conns, "warm-up")
        for per in SIZES:
            path, bodies = files[per]
            s = sec["sizes"][str(per)]
            log(f"api: {per}-item bodies, {conns} connections, {a.api_seconds:.0f}s flat out")
            mx = measured(ctx, api, secret, path, per, a.api_seconds, conns, f"max-{per}",
                          sampler=sampler)
            s["max"] = mx
            if mx["non_200"] or mx["socket_errors"]:
                errors.append(f"{per}-item bodies at full rate: answers {mx['status']}, socket "
                              f"errors {mx['socket_errors']}")
            log(f"api: {per}-item: {mx['requests_per_s']:,.0f} requests/s, "
                f"{mx['items_per_s']:,.0f} items/s, p50 {mx['p50_ms']:.1f} ms, p99 "
                f"{mx['p99_ms']:.1f} ms, answers {mx['status']}; API CPU {mx['api_cpu']:.2f} "
                f"({mx['api_threads'][:3]}), wrk {mx['wrk_cpu']:.2f}, broker "
                f"{bench.fmt(mx['broker_cpu'], 2)}, machine {mx['machine_busy']:.2f} CPUs")
            log(f"api: {per}-item ceiling: librdkafka for {a.api_ceiling_seconds:.0f}s")
            cl = ceiling(topic, bodies, per, a.api_ceiling_seconds)
            s["ceiling"] = cl
            s["x_ceiling"] = mx["items_per_s"] / cl["items_per_s"]
            s["ceiling_met"] = s["x_ceiling"] >= CEILING_SHARE
            log(f"api: {per}-item ceiling {cl['messages_per_s']:,.0f} messages/s, "
                f"{cl['items_per_s']:,.0f} items/s; API/ceiling {s['x_ceiling']:.2f}")
            # Half the maximum's rate: each connection waits conns/target s between requests,
            # less the answer time, estimated by a short calibration run.
            target = mx["ok_per_s"] / 2
            pace0 = 1000 * conns / target
            cal = measured(ctx, api, secret, path, per, 3, conns, f"calibrate-{per}", pace0)
            answer_ms = max(0.0, 1000 * conns / cal["requests_per_s"] - pace0)
            pace = max(0.0, pace0 - answer_ms)
            log(f"api: {per}-item at half rate: {target:,.0f} requests/s target, each "
                f"connection waiting {pace:.1f} ms (calibration {cal['requests_per_s']:,.0f}/s "
                f"with {pace0:.1f} ms)")
            hf = measured(ctx, api, secret, path, per, a.api_seconds, conns, f"half-{per}", pace,
                          sampler=sampler)
            hf.update({"target_requests_per_s": target, "pace_ms": pace,
                       "calibration_requests_per_s": cal["requests_per_s"]})
            s["half"] = hf
            s["p99_met"] = hf["p99_ms"] < P99_TARGET_MS
            if hf["non_200"] or hf["socket_errors"] or cal["non_200"]:
                errors.append(f"{per}-item bodies at half rate: answers {hf['status']}, socket "
                              f"errors {hf['socket_errors']}")
            log(f"api: {per}-item at half rate: {hf['requests_per_s']:,.0f} requests/s, p50 "
                f"{hf['p50_ms']:.1f} ms, p99 {hf['p99_ms']:.1f} ms")
        sec["rss_under_load_peak_mb"] = peak(sampler.samples, 1)
        sec["vm_hwm_before_outage_mb"] = vm_status(api.pid)[1]
        log(f"api: outage: wrk posting 10-item bodies flat out, broker stopped")
        sec["outage"] = outage(ctx, api, secret, files[10][0], sampler, a, errors)
        o = sec["outage"]
        log(f"api: outage: answers {o['answers_whole_run']}; 503 in p50 {o['ms_503_p50']} ms, "
            f"max {o['ms_503_max']} ms; RSS peak {bench.fmt(o['rss_peak_mb'], 1)} MB; first 200 "
            f"{bench.fmt(o['first_200_after_start_s'], 1)}s after the broker started")
        sampler.stop()
        sec["vm_hwm_mb"] = vm_status(api.pid)[1]
        sec["rss_samples"] = len(sampler.samples)
        t_term = time.monotonic()
        rc = api.stop()
        sec["sigterm_exit_s"] = time.monotonic() - t_term
        if rc != 0:
            errors.append(f"api exited {rc} on SIGTERM")
    finally:
        sampler.stop()
        if api.proc.poll() is None:
            api.proc.kill()
            api.proc.wait()
        for src, dst in ((api.log_file, "api.log"), (os.path.join(ctx["workdir"], "wrk-all.out"),
                                                     "api-wrk.txt")):
            if os.path.exists(src):
                shutil.copy(src, os.path.join(ctx["out"], f"{ctx['name']}-{dst}"))
    sec["errors"] = errors
    sec["ok"] = not errors
    sec["loadavg_at_end"] = loadavg()
    sec["phase_s"] = time.monotonic() - t0
    return sec


# ---------------------------------------------------------------- report

def f0(v):
    return bench.fmt(v, 0)


def f1(v):
    return bench.fmt(v, 1)


def met(ok, what):
    return f"{'met' if ok else 'MISSED'} ({what})"


HEADERS = ["batch", "run", "requests/s", "items/s", "p50 ms", "p99 ms", "max ms", "non-200",
           "API CPU", "wrk CPU", "broker CPU", "other load CPUs", "RSS peak MB"]


def rows(sec):
    out = []
    for per, s in sec["sizes"].items():
        for key, label in (("max", f"API, {sec['connections']} connections flat out"),
                           ("half", "API at half that rate")):
            r = s.get(key)
            if not r:
                continue
            out.append([f"{per} items", label, f0(r["requests_per_s"]), f0(r["items_per_s"]),
                        f1(r["p50_ms"]), f1(r["p99_ms"]), f1(r["max_ms"]), f0(r["non_200"]),
                        bench.fmt(r["api_cpu"], 2), bench.fmt(r["wrk_cpu"], 2),
                        bench.fmt(r["broker_cpu"], 2), bench.fmt(r["other_cpu"], 2),
                        f1(r.get("rss_peak_mb"))])
        c = s.get("ceiling")
        if c:
            out.append([f"{per} items", "ceiling: librdkafka straight", f0(c["messages_per_s"]),
                        f0(c["items_per_s"]), "—", "—", "—", "—",
                        f"{c['producer_cpu']:.2f} (producer)", "—", bench.fmt(c["broker_cpu"], 2),
                        bench.fmt(c["other_cpu"], 2), "—"])
    return out


def verdicts(sec):
    out = []
    for per, s in sec["sizes"].items():
        if "x_ceiling" in s:
            out.append(f"{per}-item batches: API items/s {s['x_ceiling']:.2f} x the ceiling: "
                       + met(s["ceiling_met"], f"target >= {CEILING_SHARE}"))
        if "half" in s:
            h = s["half"]
            out.append(f"{per}-item batches: p99 {h['p99_ms']:.1f} ms at "
                       f"{h['requests_per_s']:,.0f} requests/s (half the maximum: "
                       f"{h['target_requests_per_s']:,.0f}): "
                       + met(s["p99_met"], f"target < {P99_TARGET_MS:.0f} ms"))
        if "max" in s:
            th = ", ".join(f"{l} {v:.2f}" for l, v in s["max"]["api_threads"][:4])
            out.append(f"{per}-item batches flat out: the API's threads in CPUs: {th}")
    o = sec.get("outage")
    if o:
        out.append(
            f"Kafka outage ({o['seconds_down_under_load']:.0f}s down under load, stop took "
            f"{o['kafka_stop_s']:.1f}s): answers {o['answers_whole_run']} (before the stop "
            f"{o['answers_before_stop']}); {o['n_503']} answers 503, in p50 "
            f"{f0(o['ms_503_p50'])} ms, p99 {f0(o['ms_503_p99'])} ms, max {f0(o['ms_503_max'])} ms "
            f"(bound API_PRODUCE_TIMEOUT_MS + 1.5 s = {o['ms_503_bound']} ms: "
            f"{'ok' if o['fast_503'] else 'EXCEEDED'}); /readyz false seen: "
            f"{'yes' if o['readyz_false_seen'] else 'no'}; RSS peak {f1(o['rss_peak_mb'])} MB, "
            f"in flight at most {f0(o['in_flight_peak'])}, bodies buffered at most "
            f"{f1((o['buffered_peak_bytes'] or 0) / 1e6)} MB; broker back in "
            f"{o['kafka_start_s']:.0f}s, first 200 {f1(o['first_200_after_start_s'])}s later"
            + (f"; then 3 s flat out: {f0(o['after']['requests_per_s'])} requests/s, answers "
               f"{o['after']['status']}" if o.get("after") else ""))
    out.append(f"memory: API VmRSS sampled every 0.5 s: peak {f1(sec.get('rss_under_load_peak_mb'))}"
               f" MB under load, {f1((o or {}).get('rss_peak_mb'))} MB during the outage; VmHWM "
               f"{f1(sec.get('vm_hwm_mb'))} MB at the end; exit 0 "
               f"{bench.fmt(sec.get('sigterm_exit_s'), 2)}s after SIGTERM")
    for e in sec.get("errors", []):
        out.append(f"ERROR: {e}")
    return out


def api_text(sec):
    lines = [f"HTTP API ({sec['phase_s']:.0f}s; load average {' '.join(sec['loadavg_at_start'])} "
             f"at start, {' '.join(sec['loadavg_at_end'])} at end; {sec['wrk']}, "
             f"{sec['threads']} threads, {sec['connections']} connections, "
             f"{sec['seconds_per_run']:.0f}s a run)",
             bench_text_table(HEADERS, rows(sec))]
    lines += verdicts(sec)
    return "\n".join(lines)


def bench_text_table(headers, body):
    import phases
    return phases.text_table(headers, body)


def api_md(sec):
    import phases
    w = sec["worker"]
    sizes = "; ".join(f"{per} items: {s['bodies']} bodies of {s['body_bytes_mean']:,.0f} bytes "
                      f"on average, {s['bodies_with_invalid']} holding invalid items "
                      f"({s['invalid_items']} in all)" for per, s in sec["sizes"].items())
    md = ["## The HTTP API", "",
          f"- date: {sec['date']}; phase run time {sec['phase_s']:.0f}s; load average "
          f"{' '.join(sec['loadavg_at_start'])} at start, {' '.join(sec['loadavg_at_end'])} at end",
          f"- worker: `{w['git']}` (sha256 {w['sha256'][:12]}…), `metadata-worker api` with its "
          "defaults and METRICS_ADDR",
          f"- load: {sec['wrk']}, {sec['threads']} threads, {sec['connections']} keep-alive "
          f"connections, {sec['seconds_per_run']:.0f}s a run, a Lua script cycling through "
          f"pre-encoded gen.Stream bodies with the reference's headers ({sizes}); latency is "
          "wrk's (request sent → answer read); answers by status from the API's /metrics",
          "- half rate: each connection waits about 64/rate s (±50% jitter) between an answer "
          "and its next request (wrk's delay(); Debian has no wrk2), the wait corrected by a 3 s "
          "calibration run",
          f"- ceiling: the same bodies produced straight with librdkafka (confluent_kafka, "
          f"idempotent, acks=all, linger.ms 5, key = the client id as the API's messages, the "
          f"same headers) for {sec['ceiling_seconds']:.0f}s, timed to the last delivery report",
          "- CPU columns: CPUs used over the run (1.00 = one core busy); other load: the rest of "
          "the machine (2 CPUs: other work, this script), the noise; non-200: answers other than "
          "200 (requests whose connection wrk closed when its run ended are left out)", "",
          phases.md_table(HEADERS, rows(sec)), ""]
    md += [f"- {v}" for v in verdicts(sec)]
    md.append("")
    return md
