"""A throwaway PostgreSQL primary and its streaming standby, for the failover tests
(tests/reliability/test_pg_failover.py). Made like tests/harness/stack.sh makes the suite's
PostgreSQL (initdb in a temporary folder, its own port and socket, run as mwtest when we are
root), but beside it: killing this primary leaves the suite's server alone.

The standby is made by `pg_basebackup -R` (streaming, asynchronous: synchronous_standby_names
is empty, so a commit does not wait for it and the last commits can be lost). detach_standby
stops its WAL receiver (primary_conninfo emptied, configuration reloaded), so that the commits
from then on are certainly missing from it, as from a standby lagging behind; kill_primary
SIGKILLs the postmaster and its children (a machine crash: no backend survives to finish
anything); promote makes the standby the primary."""

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import psycopg2

PGBIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
               key=lambda p: int(p.split("/")[-2]))[-1]
ROOT_RUN = os.getuid() == 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def as_pg(*args, **kw):
    cmd = list(args)
    if ROOT_RUN:
        cmd = ["runuser", "-u", "mwtest", "--"] + cmd
    return subprocess.run(cmd, check=True, capture_output=True, timeout=120, **kw)


class PgCluster:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mw-pgfo-")
        os.chmod(self.dir, 0o755)
        if ROOT_RUN:
            shutil.chown(self.dir, "mwtest")
        self.p1, self.p2 = free_port(), free_port()
        self.primary = os.path.join(self.dir, "primary")
        self.standby = os.path.join(self.dir, "standby")

    def url(self, port, db="postgres", extra=""):
        return f"postgresql://postgres@127.0.0.1:{port}/{db}{extra}"

    def multi_url(self, db):
        return (f"postgresql://postgres@127.0.0.1:{self.p1},127.0.0.1:{self.p2}/{db}"
                "?target_session_attrs=read-write")

    def connect(self, port, db="postgres"):
        c = psycopg2.connect(self.url(port, db))
        c.autocommit = True
        return c

    def query(self, port, sql, db="postgres"):
        c = self.connect(port, db)
        try:
            with c.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall() if cur.description else None
        finally:
            c.close()

    def _ctl(self, data, *args):
        as_pg(f"{PGBIN}/pg_ctl", "-D", data, "-l", data + ".log", "-w", "-t", "60", *args)

    def start_primary(self):
        as_pg(f"{PGBIN}/initdb", "-D", self.primary, "-U", "postgres", "--auth=trust", "-E",
              "UTF8", "--locale=C.UTF-8")
        # initdb's pg_hba already trusts replication connections from 127.0.0.1.
        with open(os.path.join(self.primary, "postgresql.conf"), "a") as f:
            f.write(f"""
port = {self.p1}
listen_addresses = '127.0.0.1'
unix_socket_directories = '{self.dir}'
fsync = off
full_page_writes = off
shared_buffers = 64MB
max_connections = 50
wal_level = replica
max_wal_senders = 5
synchronous_standby_names = ''
hot_standby = on
""")
        self._ctl(self.primary, "start")

    def make_standby(self):
        """pg_basebackup -R from the primary, started on its own port: a streaming standby."""
        as_pg(f"{PGBIN}/pg_basebackup", "-h", "127.0.0.1", "-p", str(self.p1), "-U", "postgres",
              "-D", self.standby, "-R", "-X", "stream", "-c", "fast")
        with open(os.path.join(self.standby, "postgresql.conf"), "a") as f:
            f.write(f"\nport = {self.p2}\n")
        self._ctl(self.standby, "start")
        self.wait_streaming()

    def wait_streaming(self, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.query(self.p1, "SELECT count(*) FROM pg_stat_replication"
                                   " WHERE state = 'streaming'")[0][0]:
                return
            time.sleep(0.2)
        raise RuntimeError("the standby does not stream")

    def wait_replayed(self, timeout=30):
        """Until the standby replayed all the primary wrote so far."""
        lsn = self.query(self.p1, "SELECT pg_current_wal_lsn()")[0][0]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.query(self.p2, f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'")[0][0]:
                return
            time.sleep(0.1)
        raise RuntimeError("the standby did not catch up")

    def detach_standby(self):
        """Stops the standby's WAL receiver: what the primary commits from now on is missing
        from it (a standby lagging behind, at its worst)."""
        auto = os.path.join(self.standby, "postgresql.auto.conf")
        with open(auto) as f:
            lines = [l for l in f if not l.startswith("primary_conninfo")]
        with open(auto, "w") as f:  # written in place: keeps its owner
            f.writelines(lines + ["primary_conninfo = ''\n"])
        self.query(self.p2, "SELECT pg_reload_conf()")
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if not self.query(self.p2, "SELECT count(*) FROM pg_stat_wal_receiver")[0][0]:
                return
            time.sleep(0.05)
        raise RuntimeError("the standby's WAL receiver did not stop")

    def postmaster_pid(self, data):
        with open(os.path.join(data, "postmaster.pid")) as f:
            return int(f.readline())

    def kill_primary(self):
        """SIGKILL to the primary's postmaster and every child of it, at once."""
        pm = self.postmaster_pid(self.primary)
        kids = []
        for st in glob.glob("/proc/[0-9]*/stat"):
            try:
                with open(st) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pm:
                    kids.append(int(st.split("/")[2]))
            except (OSError, IndexError, ValueError):
                pass
        for pid in [pm] + kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                os.kill(pm, 0)
                time.sleep(0.02)
            except ProcessLookupError:
                break
        return len(kids)

    def promote(self):
        """The standby becomes the primary (pg_promote waits until it is done)."""
        return self.query(self.p2, "SELECT pg_promote(true, 60)")[0][0]

    def stop(self):
        for data in (self.primary, self.standby):
            if os.path.exists(os.path.join(data, "postmaster.pid")):
                try:
                    as_pg(f"{PGBIN}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
                except subprocess.CalledProcessError:
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)
