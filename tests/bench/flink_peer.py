"""The benchmark's real peer: the Apache Flink SQL job a data engineer would write instead of
metadata-worker, run on the same topic into the same PostgreSQL (docs/benchmarks.md; its text
below).

    fetch()  -> class path (jars cached on first use, Peer.java compiled once per version)
    run(brokers, topic, pg, n_valid_items, parallelism=2, flush_rows=5000) -> dict of figures
    flink_peer.py --produce 200000 [--flush-rows 2000,5000,10000]   standalone (stack.sh env)

### The peer: Apache Flink SQL (text for docs/benchmarks.md)

tests/bench/flink/Peer.java: Flink 1.20.3 in a local mini-cluster inside one JVM (`-Xmx1g`,
parallelism 2), the Table API in streaming mode. Its source is the Kafka table connector
(flink-connector-kafka 3.4.0-1.20, `'format'='json'`) reading the input topic from the earliest
offset to the offsets that were the latest when it started (`'scan.bounded.mode'='latest-offset'`,
so the job ends), typed as `items ARRAY<ROW<externalCustomerId STRING, …, attributes
ARRAY<ROW<name STRING, value STRING>>>>` plus the `topic`, `partition` and `offset` metadata
columns. One `INSERT INTO … SELECT … FROM src CROSS JOIN UNNEST(items)` writes one row per item
through Flink's JDBC upsert sink (flink-connector-jdbc 3.3.0-1.20, PostgreSQL driver 42.7.4;
`PRIMARY KEY (external_customer_id, external_conversation_id) NOT ENFORCED`, so each flush is a
batch of `INSERT … ON CONFLICT (key) DO UPDATE SET` every column, the buffer keeping the last
row of each key) into a table with the worker's columns (`flink_peer_metadata`, key columns NOT
NULL, the others nullable). Settings: `sink.buffer-flush.max-rows` 5000,
`sink.buffer-flush.interval` 1 s, `sink.max-retries` 3, `table.exec.sink.keyed-shuffle` FORCE
(the items of one key all go through one sink connection; without it the two connections upsert
one key at once -- keys cross partitions -- and can block or deadlock each other),
`?stringtype=unspecified` in the JDBC URL (a STRING into jsonb), no checkpointing (the job is
bounded; nothing is committed to Kafka). Tuning tried (200,000 items, 3 runs each, the machine
shared with another benchmark): max-rows 2000, 5000 and 10000 all within the run-to-run noise
(9,200-17,800 items/s; 5000 kept, the best median); keyed-shuffle AUTO (chained, no shuffle:
no deadlock in 2 runs) and `reWriteBatchedInserts=true` (2 runs) not faster.

What it does not do, unlike the worker:
- It validates nothing. Items with a JSON null or absent id are filtered out
  (`WHERE externalCustomerId IS NOT NULL AND externalConversationId IS NOT NULL`: a NULL key
  would fail the sink); blank ids (`""`, `"   "`), too-long values and the rest are written as
  they come. `'json.ignore-parse-errors'='true'`: a field of the wrong type becomes NULL (an
  attributes object instead of an array) or, for a number where a string is declared, its
  text (`"status": 42` -> '42'); the item is kept. `'json.fail-on-missing-field'='false'`.
- No result per item, no offsets in the database, no exactly-once: a restart would re-read from
  the earliest offset (or lose whatever a crash left in the sink's buffer).
- Fields are replaced wholesale: an absent or null field sets the column NULL (the worker keeps
  the stored value), and `attributes` is replaced by the item's own map (the worker merges by
  name, a null value removing the name); an invalid item overwrites its row like any other.
  The attributes array is turned into a JSON object text by a small scalar UDF (ATTRS_JSON in
  Peer.java: `[{"name":n,"value":v},…]` -> `{"n":v,…}`, a null value kept as JSON null, a
  duplicate name: the later one wins in jsonb): Flink SQL has no per-row array-to-object
  function.
- Across partitions a key's items are applied in the order they reach the sink's subtask.
- source_topic, source_partition, source_offset come from the Kafka metadata columns;
  source_index is NULL (Flink 1.20's planner rejects `UNNEST … WITH ORDINALITY` on this row
  type). created_at/updated_at keep their defaults (updated_at is not moved on update).

How it is timed (run() below): the JVM prints the wall-clock time at which the first item reached
the projection in front of the sink (the first ATTRS_JSON call: read, decoded, unnested) and the
time `executeSql(insert).await()` returned -- the job FINISHED, which it reaches only after the
JDBC sink's close() flushed and committed its last batch. items_per_s = valid items / (job end -
first item); items_per_s_launch = valid items / (job end - JVM launch). The Python side also
polls the table every 0.1 s until its first row exists (launch_to_first_write_s).

Measured on 2026-11-30 (2 cores, 1-minute load 4-5 from another benchmark running alongside;
200,000 items in 100-item messages over 6 partitions, gen.py's default "spread" stream, 197,970
valid items; 138,202 rows, 340 of them with a blank id):
`/usr/bin/python3 tests/bench/flink_peer.py --produce 200000` (stack.sh's env sourced) ->
14,000-17,200 items/s from the first item to the job's end, 9,300-11,200 items/s from JVM
launch (18-21 s, of which 6-8 s before the first item), 29-32 s of CPU, peak RSS 1.25-1.4 GB.

Needs Java 17 (a JRE is enough: see fetch()), Maven (first use only) and Debian's
/usr/bin/python3 with psycopg2 (and confluent_kafka for --produce).
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FLINK_DIR = os.path.join(HERE, "flink")
POM = os.path.join(FLINK_DIR, "pom.xml")
SRC = os.path.join(FLINK_DIR, "Peer.java")
FLINK_VERSION = "1.20.3"
TABLE = "flink_peer_metadata"
LOG4J2 = """rootLogger.level = WARN
rootLogger.appenderRef.err.ref = err
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %d{HH:mm:ss,SSS} %-5p %c{1} - %m%n
"""

# The peer table: the worker's columns (schemas/001_customer_metadata.sql), the key NOT NULL,
# every other column nullable (the peer validates nothing; a NULL would fail its sink).
TABLE_DDL = """CREATE TABLE {t} (
    external_customer_id     text        NOT NULL,
    external_conversation_id text        NOT NULL,
    event_id                 text,
    status                   text,
    phone_number             text,
    email_address            text,
    user_id                  text,
    address_country          text,
    address_state            text,
    address_zipcode          text,
    attributes               jsonb,
    source_topic             text,
    source_partition         integer,
    source_offset            bigint,
    source_index             integer,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (external_customer_id, external_conversation_id)
)"""


class PeerError(Exception):
    pass


def cache_dir():
    base = os.environ.get("MW_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "metadata-worker")
    return os.path.join(base, "flink-" + FLINK_VERSION)


def _log(msg):
    print("flink_peer: " + msg, file=sys.stderr, flush=True)


def fetch():
    """Ensures Flink's jars are in the cache (mvn copy-dependencies, first use only) and
    Peer.java is compiled there (once per content of the file); returns the class path.
    Compiles with javac, or where only a JRE is installed (Debian's openjdk-17-jre-headless
    ships the jdk.compiler module) with `java -m jdk.compiler/com.sun.tools.javac.Main`."""
    cache = cache_dir()
    libs = os.path.join(cache, "libs")
    if not os.path.isfile(os.path.join(libs, ".complete")):
        _log(f"fetching Apache Flink {FLINK_VERSION} from Maven Central into {libs}")
        shutil.rmtree(libs, ignore_errors=True)
        os.makedirs(libs)
        r = subprocess.run(["mvn", "-q", "-B", "-f", POM, "dependency:copy-dependencies",
                            "-DoutputDirectory=" + libs, "-DincludeScope=runtime"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise PeerError("mvn failed:\n" + r.stdout[-3000:])
        open(os.path.join(libs, ".complete"), "w").close()
    with open(os.path.join(cache, "log4j2.properties"), "w") as f:
        f.write(LOG4J2)
    with open(SRC, "rb") as f:
        digest = hashlib.sha1(f.read()).hexdigest()[:12]
    classes = os.path.join(cache, "classes-" + digest)
    if not os.path.isfile(os.path.join(classes, "Peer.class")):
        jars = os.pathsep.join(sorted(os.path.join(libs, n) for n in os.listdir(libs)
                                      if n.endswith(".jar")))
        javac = (["javac"] if shutil.which("javac")
                 else ["java", "-m", "jdk.compiler/com.sun.tools.javac.Main"])
        tmp = tempfile.mkdtemp(dir=cache)
        r = subprocess.run(javac + ["-nowarn", "-cp", jars, "-d", tmp, SRC],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise PeerError("compiling Peer.java failed:\n" + r.stdout[-3000:])
        for n in os.listdir(cache):  # earlier versions of Peer.java
            if n.startswith("classes-"):
                shutil.rmtree(os.path.join(cache, n), ignore_errors=True)
        os.rename(tmp, classes)
    return classes + os.pathsep + os.path.join(libs, "*")


def _connect(pg, dbname=None):
    import psycopg2
    kw = {k: pg[k] for k in ("host", "port", "user", "password") if pg.get(k) is not None}
    conn = psycopg2.connect(dbname=dbname or pg["dbname"], **kw)
    conn.autocommit = True
    return conn


def run(brokers, topic, pg, n_valid_items, parallelism=2, flush_rows=5000, table=TABLE,
        heap="1g", flush_interval="1s", keyed_shuffle="FORCE", jdbc_params="", timeout=900):
    """Creates `table` anew in pg's database, runs the peer on the whole topic and returns its
    figures. pg: dict(host, port, user, dbname[, password]). n_valid_items: the stream's
    valid items (the numerator of both rates)."""
    cp = fetch()
    conn = _connect(pg)
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(TABLE_DDL.format(t=table))
    url = f"jdbc:postgresql://{pg['host']}:{pg['port']}/{pg['dbname']}?stringtype=unspecified"
    if jdbc_params:
        url += "&" + jdbc_params
    cmd = ["java", "-Xmx" + heap,
           "-Dlog4j2.configurationFile=" + os.path.join(cache_dir(), "log4j2.properties"),
           "-cp", cp]
    cmd += ["Peer", brokers, topic, url, pg["user"], table, str(parallelism), str(flush_rows),
            flush_interval, keyed_shuffle]
    settings = (f"Flink {FLINK_VERSION} mini-cluster, 1 JVM -Xmx{heap}, parallelism {parallelism}, "
                f"sink.buffer-flush.max-rows {flush_rows}, sink.buffer-flush.interval "
                f"{flush_interval}, table.exec.sink.keyed-shuffle {keyed_shuffle}, "
                f"json.ignore-parse-errors true, no checkpointing"
                + (f", JDBC {jdbc_params}" if jdbc_params else ""))
    env = dict(os.environ)
    if pg.get("password"):
        env["PGPASSWORD"] = pg["password"]
    out = tempfile.TemporaryFile(mode="w+")
    err = tempfile.NamedTemporaryFile(mode="w+", prefix="flink-peer-", suffix=".log", delete=False)
    t_launch = time.time()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, start_new_session=True)
    first_write = None
    ru = None
    try:
        with conn.cursor() as cur:
            while True:
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.time() - t_launch > timeout:
                    os.killpg(proc.pid, signal.SIGKILL)
                    raise PeerError(f"the peer ran over {timeout} s (log: {err.name})")
                if first_write is None:
                    cur.execute(f"SELECT 1 FROM {table} LIMIT 1")
                    if cur.fetchone():
                        first_write = time.time()
                time.sleep(0.1)
        t_exit = time.time()
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    out.seek(0)
    lines = [ln for ln in out.read().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err.seek(0)
        raise PeerError(f"the peer exited with {proc.returncode} (log: {err.name}):\n"
                        + err.read()[-3000:])
    j = json.loads(lines[-1])
    err.seek(0)
    retries = err.read().count("executeBatch error")  # JdbcOutputFormat's log of a retried flush
    err.close()
    os.unlink(err.name)
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        rows = cur.fetchone()[0]
    conn.close()
    first, end = j["first_row_ms"] / 1000.0, j["end_ms"] / 1000.0
    if not first:
        raise PeerError("the peer saw no item (empty topic?)")
    res = {
        "items_per_s": round(n_valid_items / (end - first)),
        "items_per_s_launch": round(n_valid_items / (end - t_launch)),
        "seconds": round(end - t_launch, 2),
        "first_to_end_s": round(end - first, 2),
        "launch_to_first_row_s": round(first - t_launch, 2),
        "launch_to_first_write_s": round(first_write - t_launch, 2) if first_write else None,
        "launch_to_exit_s": round(t_exit - t_launch, 2),
        "net_runtime_s": round(j["net_runtime_ms"] / 1000.0, 2),
        "rows_in_table": rows,
        "rows_seen": j["rows_seen"],
        "sink_retries": retries,
        "n_valid_items": n_valid_items,
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
        "peak_rss_mb": round(ru.ru_maxrss / 1024.0),
        "settings": settings,
    }
    return res


def _produce(brokers, topic, items, kind):
    """A fresh 6-partition topic holding gen.py's stream; returns the stream's valid items."""
    from confluent_kafka.admin import AdminClient, NewTopic
    import gen
    adm = AdminClient({"bootstrap.servers": brokers})
    for f in adm.create_topics([NewTopic(topic, gen.PARTITIONS, 1)]).values():
        f.result()
    gen_py = os.path.join(HERE, "gen.py")
    extra = ["--kind", kind] if kind else []
    subprocess.run([sys.executable, gen_py, "--items", str(items), "--brokers", brokers,
                    "--topic", topic] + extra, check=True)
    d = json.loads(subprocess.run([sys.executable, gen_py, "--items", str(items), "--describe"]
                                  + extra, check=True, stdout=subprocess.PIPE, text=True).stdout)
    return items - d["invalid"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--brokers", default=os.environ.get("KAFKA_BROKERS"))
    ap.add_argument("--topic", help="an existing topic (with --valid), or the one --produce makes")
    ap.add_argument("--produce", type=int, metavar="ITEMS",
                    help="produce gen.py's stream of ITEMS items to a fresh 6-partition topic")
    ap.add_argument("--kind", help="gen.py --kind for --produce")
    ap.add_argument("--valid", type=int, help="valid items in --topic (default: from --produce)")
    ap.add_argument("--dbname", default="flink_peer", help="created when missing")
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--flush-rows", default="5000", help="one run per comma-separated value")
    ap.add_argument("--flush-interval", default="1s")
    ap.add_argument("--keyed-shuffle", default="FORCE", choices=["FORCE", "AUTO", "NONE"])
    ap.add_argument("--heap", default="1g")
    ap.add_argument("--jdbc-params", default="", help="more JDBC URL parameters (a=b&c=d)")
    a = ap.parse_args()
    if not a.brokers:
        ap.error("--brokers or KAFKA_BROKERS (source the env of tests/harness/stack.sh)")
    pg = {"host": os.environ.get("PGHOST", "127.0.0.1"), "port": os.environ.get("PGPORT", "5432"),
          "user": os.environ.get("PGUSER", "postgres"), "password": os.environ.get("PGPASSWORD"),
          "dbname": a.dbname}
    t0 = time.time()
    cp = fetch()
    _log(f"fetch: {time.time() - t0:.1f} s ({cp})")
    topic, valid = a.topic, a.valid
    if a.produce:
        topic = topic or f"flink-peer-{int(time.time())}"
        valid = _produce(a.brokers, topic, a.produce, a.kind)
        _log(f"produced {a.produce} items ({valid} valid) to {topic}")
    if not topic or not valid:
        ap.error("--topic with --valid, or --produce")
    c = _connect(pg, "postgres")
    with c.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (a.dbname,))
        if not cur.fetchone():
            cur.execute(f'CREATE DATABASE "{a.dbname}"')
    c.close()
    for fr in a.flush_rows.split(","):
        res = run(a.brokers, topic, pg, valid, a.parallelism, int(fr), heap=a.heap,
                  flush_interval=a.flush_interval, keyed_shuffle=a.keyed_shuffle,
                  jdbc_params=a.jdbc_params)
        print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
