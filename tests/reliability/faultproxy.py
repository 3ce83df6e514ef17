"""A TCP fault proxy for the silent-network tests (issue 13, item 4): listens on a local port
and forwards each connection to a target, in one of these modes (set at any time, for every
connection at once):

  forward     bytes pass as they come
  blackhole   nothing passes in either direction and nothing is closed: the proxy stops
              reading both sides (what was in flight waits in its buffers and in the kernel's),
              new connections are accepted and held without reaching the target; when the
              mode ends, held bytes go on and held connections are made, as TCP would
              retransmit them after a real black hole
  latency N   each chunk is delayed N ms in each direction (order kept)
  drop P      a fraction P of new connections is closed at once, and, when the mode is set,
              each established connection is reset (RST) with probability P

What it is, and is not: the proxy is a user-space process, so the worker's TCP connection to
it stays healthy at the kernel level during a black hole (the proxy's kernel acknowledges
data and keepalive probes). It therefore stands for a peer that keeps the connection but
answers nothing: a proxy, sidecar or load balancer whose upstream went silent, or a hung
server. That is the harder case for the worker, which must notice it by its own timeouts
(librdkafka's socket.timeout.ms, the worker's answer deadline for PostgreSQL); a path that
drops packets is also caught earlier by TCP (libpq's tcp_user_timeout and keepalives), which
this proxy cannot show: that would need packet filtering on the shared loopback (root, and
every other process on the machine affected), which the tests do not do.

Kafka: the broker tells clients where to reconnect (its advertised listeners), so a proxy in
front of the bootstrap address alone would be bypassed after the first metadata answer. The
harness broker (tests/harness/stack.sh) has a second listener, PROXIED, on
KAFKA_PROXIED_LISTENER, whose advertised address is 127.0.0.1:KAFKA_PROXY_PORT: a client
bootstrapped through a proxy listening on KAFKA_PROXY_PORT and forwarding to
KAFKA_PROXIED_LISTENER gets metadata naming the proxy (the broker answers with the addresses
of the listener the request came in on), so every connection of that client, to the
coordinator and the partition leaders alike, goes through the proxy. Clients on the
PLAINTEXT listener (the test's producer and results reader) are not affected.
"""

import random
import socket
import struct
import threading
import time
from collections import deque


class FaultProxy:
    def __init__(self, target, listen_port=0, host="127.0.0.1"):
        self.target = target  # (host, port)
        self.mode = "forward"
        self.latency_ms = 0
        self.drop = 0.0
        self.rng = random.Random(13)
        self.lock = threading.Condition()
        self.conns = []  # [client socket, upstream socket or None]
        self.accepted = 0
        self.refused = 0
        self.resets = 0
        self.closed = False
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind((host, listen_port))
        self.srv.listen(128)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._accept_loop, daemon=True).start()

    # -- modes --
    def set_mode(self, mode, latency_ms=0, drop=0.0):
        with self.lock:
            self.mode, self.latency_ms, self.drop = mode, latency_ms, drop
            victims = []
            if mode == "drop":
                victims = [c for c in self.conns if self.rng.random() < drop]
            self.lock.notify_all()
        for c in victims:
            self._reset(c)

    def forward(self):
        self.set_mode("forward")

    def blackhole(self):
        self.set_mode("blackhole")

    def latency(self, ms):
        self.set_mode("latency", latency_ms=ms)

    def drops(self, fraction, latency_ms=0):
        """Drops as above, with latency_ms added (latency and drops together)."""
        self.set_mode("drop", latency_ms=latency_ms, drop=fraction)

    def close(self):
        self.closed = True
        with self.lock:
            self.lock.notify_all()
            conns = list(self.conns)
        try:
            self.srv.close()
        except OSError:
            pass
        for c in conns:
            self._close(c)

    # -- internals --
    def _holding(self):
        return self.mode == "blackhole" and not self.closed

    def _reset(self, conn):
        self.resets += 1
        for s in conn:
            if s is None:
                continue
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self._close(conn)

    def _close(self, conn):
        for s in conn:
            if s is None:
                continue
            try:
                s.close()
            except OSError:
                pass
        with self.lock:
            if conn in self.conns:
                self.conns.remove(conn)

    def _accept_loop(self):
        while not self.closed:
            try:
                cs, _ = self.srv.accept()
            except OSError:
                return
            with self.lock:
                refuse = self.mode == "drop" and self.rng.random() < self.drop
            if refuse:
                self.refused += 1
                cs.close()
                continue
            self.accepted += 1
            conn = [cs, None]
            with self.lock:
                self.conns.append(conn)
            threading.Thread(target=self._connect, args=(conn,), daemon=True).start()

    def _connect(self, conn):
        with self.lock:  # a connection made in a black hole waits for its end
            while self._holding():
                self.lock.wait(0.1)
        try:
            up = socket.create_connection(self.target, timeout=10)
            up.settimeout(None)
        except OSError:
            self._close(conn)
            return
        conn[1] = up
        for a, b in ((conn[0], up), (up, conn[0])):
            q = deque()
            qc = threading.Condition()
            threading.Thread(target=self._reader, args=(conn, a, q, qc), daemon=True).start()
            threading.Thread(target=self._writer, args=(conn, b, q, qc), daemon=True).start()

    def _reader(self, conn, src, q, qc):
        src.settimeout(0.1)
        while not self.closed:
            with self.lock:
                while self._holding():
                    self.lock.wait(0.1)
                delay = self.latency_ms / 1000.0
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                data = b""
            with qc:
                q.append((time.monotonic() + delay, data))
                qc.notify()
            if not data:
                return

    def _writer(self, conn, dst, q, qc):
        while not self.closed:
            with qc:
                while not q and not self.closed:
                    qc.wait(0.1)
                if not q:
                    return
                due, data = q[0]
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            with self.lock:
                while self._holding():
                    self.lock.wait(0.1)
            with qc:
                q.popleft()
            if not data:  # the other side closed: close this one too
                self._close(conn)
                return
            try:
                dst.sendall(data)
            except OSError:
                self._close(conn)
                return
