"""A three-node Apache Kafka cluster on localhost for the reliability tests (issue 13, item 2).

Three combined broker+controller KRaft processes (process.roles=broker,controller), each with
its own node.id, log dir and free PLAINTEXT/CONTROLLER ports, formatted with one dynamic quorum
(StorageTool format --initial-controllers id@127.0.0.1:port:directory-id, the same list on all
three; Kafka 4.1). Replication factor 3 and min.insync.replicas 2 everywhere: topics created
without a factor, and the internal topics (__consumer_offsets, __transaction_state, the share
coordinator's). The jars are the ones tests/harness/deps.sh cached (KAFKA_LIBS from the stack's
env file, or deps.sh is asked); the JVM options are stack.sh's, with -Xmx384m per node.

    c = Cluster("/tmp/x"); c.start()   # prints the start time; c.bootstrap is "h:p,h:p,h:p"
    c.kill(2)                          # SIGKILL node 2
    c.restart(2)                       # start it again on its own log dir and ports
    c.stop()                           # SIGTERM all (SIGKILL after 30 s), keep DIR

Command line: python3 kcluster.py start DIR   (prints `export KAFKA_CLUSTER_BROKERS=...`)
              python3 kcluster.py stop DIR    (stops the nodes of DIR/pids and removes DIR)
"""

import base64
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODES = (1, 2, 3)


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def kafka_uuid():
    """A Kafka Uuid (what StorageTool random-uuid prints) without starting a JVM: 16 random
    bytes, base64url without padding; Kafka's own never starts with '-' (it would read as an
    option), so neither does this."""
    while True:
        s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not s.startswith("-"):
            return s


def kafka_libs():
    libs = os.environ.get("KAFKA_LIBS")
    if libs:
        return libs
    out = subprocess.run(["bash", os.path.join(ROOT, "tests", "harness", "deps.sh"), "test"],
                         check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


class Cluster:
    def __init__(self, dir_, heap="384m"):
        self.dir = os.path.abspath(dir_)
        self.heap = heap
        self.libs = kafka_libs()
        self.procs = {}
        self.ports = {}  # node -> (plaintext, controller)
        self.start_s = None

    @property
    def bootstrap(self):
        return ",".join(f"127.0.0.1:{self.ports[n][0]}" for n in NODES)

    def node_dir(self, n):
        return os.path.join(self.dir, f"node{n}")

    def configure(self):
        os.makedirs(self.dir, exist_ok=True)
        self.ports = {n: (free_port(), free_port()) for n in NODES}
        quorum = ",".join(f"127.0.0.1:{self.ports[n][1]}" for n in NODES)
        self.dir_ids = {n: kafka_uuid() for n in NODES}
        self.cluster_id = kafka_uuid()
        for n in NODES:
            d = self.node_dir(n)
            os.makedirs(os.path.join(d, "logs"), exist_ok=True)
            kport, cport = self.ports[n]
            with open(os.path.join(d, "server.properties"), "w") as f:
                f.write(f"""process.roles=broker,controller
node.id={n}
controller.quorum.bootstrap.servers={quorum}
listeners=PLAINTEXT://127.0.0.1:{kport},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=PLAINTEXT://127.0.0.1:{kport},CONTROLLER://127.0.0.1:{cport}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={d}/logs
num.partitions=3
auto.create.topics.enable=true
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=1000000
""")
            with open(os.path.join(d, "log4j2.properties"), "w") as f:
                f.write("rootLogger.level=WARN\nrootLogger.appenderRef.stdout.ref=STDOUT\n"
                        "appender.stdout.type=Console\nappender.stdout.name=STDOUT\n"
                        "appender.stdout.layout.type=PatternLayout\n"
                        "appender.stdout.layout.pattern=[%d] %p %m (%c)%n\n")
        with open(os.path.join(self.dir, "cluster"), "w") as f:
            f.write(self.bootstrap + "\n")

    def format(self):
        """Formats the three log dirs with one initial quorum: id@host:controller-port:dir-id
        for all three, each node's own dir-id being the one its entry names. The three JVMs
        run at once (about 3 s on 2 cores instead of 3 x 2 s)."""
        initial = ",".join(f"{n}@127.0.0.1:{self.ports[n][1]}:{self.dir_ids[n]}" for n in NODES)
        procs = []
        for n in NODES:
            d = self.node_dir(n)
            log = open(os.path.join(d, "format.log"), "w")
            procs.append((n, log, subprocess.Popen(
                ["java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                 "-cp", f"{self.libs}/*", "kafka.tools.StorageTool", "format",
                 "-t", self.cluster_id, "-c", os.path.join(d, "server.properties"),
                 "--initial-controllers", initial], stdout=log, stderr=subprocess.STDOUT)))
        for n, log, p in procs:
            rc = p.wait(120)
            log.close()
            if rc != 0:
                with open(log.name) as f:
                    raise RuntimeError(f"format of node {n} failed ({rc}):\n{f.read()}")

    def launch(self, n):
        d = self.node_dir(n)
        log = open(os.path.join(d, "log"), "a")
        # Its own session (as stack.sh's broker): a Ctrl-C for the test does not reach it.
        p = subprocess.Popen(
            ["java", "-Xms128m", f"-Xmx{self.heap}", "-XX:+UseSerialGC",
             "-XX:TieredStopAtLevel=1",
             f"-Dlog4j2.configurationFile={d}/log4j2.properties",
             "-cp", f"{self.libs}/*", "kafka.Kafka", "server.properties"],
            cwd=d, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs[n] = p
        self.write_pids()

    def write_pids(self):
        with open(os.path.join(self.dir, "pids"), "w") as f:
            for n, p in self.procs.items():
                if p.poll() is None:
                    f.write(f"{n} {p.pid}\n")

    def brokers_up(self):
        """The node ids the cluster's metadata lists as brokers (asked of any live node)."""
        from confluent_kafka.admin import AdminClient
        # log_level 0: "connection refused" from nodes still starting is expected, not news.
        a = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 3000,
                         "log_level": 0})
        try:
            return set(a.list_topics(timeout=3).brokers)
        except Exception:  # noqa: BLE001 - not up yet
            return set()

    def wait_brokers(self, nodes, timeout=120):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            dead = [n for n in nodes if self.procs[n].poll() is not None]
            if dead:
                raise RuntimeError(f"node {dead[0]} exited:\n" + self.tail(dead[0]))
            if set(nodes) <= self.brokers_up():
                return
            time.sleep(0.3)
        raise RuntimeError(f"nodes {nodes} not all registered within {timeout}s:\n"
                           + self.tail(nodes[0]))

    def tail(self, n, lines=30):
        try:
            with open(os.path.join(self.node_dir(n), "log")) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def start(self, timeout=150):
        t0 = time.monotonic()
        self.configure()
        self.format()
        t_format = time.monotonic() - t0
        for n in NODES:
            self.launch(n)
        self.wait_brokers(NODES, timeout)
        self.start_s = time.monotonic() - t0
        print(f"kcluster: 3 nodes on {self.bootstrap} up in {self.start_s:.1f}s "
              f"(format {t_format:.1f}s, -Xmx{self.heap} each)", file=sys.stderr)
        return self.start_s

    def pid(self, n):
        return self.procs[n].pid

    def kill(self, n):
        """SIGKILL node n (no clean shutdown: its leaderships move only when the controller
        notices, after broker.session.timeout.ms)."""
        p = self.procs[n]
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
        self.write_pids()

    def restart(self, n):
        self.launch(n)

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        end = time.monotonic() + 30
        for p in self.procs.values():
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        self.procs = {}
        self.write_pids()


def stop_dir(dir_):
    """Stops the nodes a `kcluster.py start` left running (DIR/pids) and removes DIR."""
    path = os.path.join(dir_, "pids")
    pids = []
    if os.path.exists(path):
        with open(path) as f:
            pids = [int(line.split()[1]) for line in f if line.strip()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.monotonic() + 30
    for pid in pids:
        while time.monotonic() < end:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    shutil.rmtree(dir_, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit("usage: kcluster.py start|stop DIR")
    if sys.argv[1] == "start":
        c = Cluster(sys.argv[2])
        c.start()
        print(f"export KAFKA_CLUSTER_BROKERS='{c.bootstrap}'")
        # The nodes are in their own sessions: they outlive this process (stop DIR ends them).
    else:
        stop_dir(sys.argv[2])
