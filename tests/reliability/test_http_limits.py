"""HTTP endpoint limits (issue 9, item 5): ~1,100 slow connections from one source address must
not starve /healthz. While 127.0.0.2 holds (and keeps reopening) ~1,100 connections, each with a
partial request dripping one header byte every 2 s, probes from 127.0.0.1 must all get 200 within
2 s, the worker must keep ingesting, exit 0 on SIGTERM, and write only JSON lines to stderr
(libmicrohttpd's own messages included)."""

import http.client
import os
import resource
import socket
import statistics
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
from harness import E2ECase  # noqa: E402
from test_ops import free_port  # noqa: E402

FLOOD_SOURCE = "127.0.0.2"   # the whole 127.0.0.0/8 is loopback
PROBE_SOURCE = "127.0.0.1"
FLOOD_CONNECTIONS = 1100     # above select()'s FD_SETSIZE (1024)
FLOOD_SECONDS = 18
DRIP_EVERY = 2.0             # one header byte per connection every 2 s
PROBE_TIMEOUT = 2.0
MAX_HELD_FROM_ONE_SOURCE = 64  # one address must not be able to take (nearly) every slot


def probe(host, port):
    """GET /healthz from PROBE_SOURCE; returns (status or error text, seconds)."""
    t0 = time.monotonic()
    c = http.client.HTTPConnection(host, port, timeout=PROBE_TIMEOUT,
                                   source_address=(PROBE_SOURCE, 0))
    try:
        c.request("GET", "/healthz")
        r = c.getresponse()
        r.read()
        return r.status, time.monotonic() - t0
    except (OSError, http.client.HTTPException) as e:
        return f"{type(e).__name__}: {e}", time.monotonic() - t0
    finally:
        c.close()


class Flood:
    """FLOOD_CONNECTIONS slow connections from FLOOD_SOURCE; ones the server closes are reopened
    on the next drip, as an attacker would."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.socks = []
        self.attempts = 0
        self.connect_failures = 0
        self.closed_by_server = 0
        self.held_samples = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def open_one(self):
        self.attempts += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((FLOOD_SOURCE, 0))
            s.settimeout(1.0)
            s.connect((self.host, self.port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            s.setblocking(False)
        except OSError:
            self.connect_failures += 1
            s.close()
            return None
        return s

    def alive(self, s):
        try:
            if s.recv(1, socket.MSG_PEEK) == b"":
                return False  # EOF: the server closed it
        except BlockingIOError:
            pass
        except OSError:
            return False
        try:
            s.send(b"X")  # one more byte of an endless header name
        except BlockingIOError:
            pass
        except OSError:
            return False
        return True

    def fill(self):
        while len(self.socks) < FLOOD_CONNECTIONS and not self.stop.is_set():
            s = self.open_one()
            if s is not None:
                self.socks.append(s)

    def drip(self):
        """Keeps the connections dripping; records how many were still held each round."""
        while not self.stop.wait(DRIP_EVERY):
            with self.lock:
                kept = []
                for s in self.socks:
                    if self.alive(s):
                        kept.append(s)
                    else:
                        self.closed_by_server += 1
                        s.close()
                self.socks = kept
                self.held_samples.append(len(kept))
                self.fill()

    def close(self):
        self.stop.set()
        with self.lock:
            for s in self.socks:
                s.close()
            self.socks = []


class TestHttpLimits(E2ECase):

    def test_slow_connection_flood_does_not_starve_healthz(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if hard != resource.RLIM_INFINITY and hard < FLOOD_CONNECTIONS + 200:
            self.skipTest(f"RLIMIT_NOFILE hard limit {hard} is too low for the flood")

        host, port = "127.0.0.1", free_port()
        w = self.start_worker(extra_env={"METRICS_ADDR": f"{host}:{port}"})
        deadline = time.monotonic() + 15
        while probe(host, port)[0] != 200:
            if time.monotonic() > deadline or w.proc.poll() is not None:
                self.fail("no /healthz:\n" + w.dump())
            time.sleep(0.1)

        flood = Flood(host, port)
        probes = []
        drip = threading.Thread(target=flood.drip, daemon=True)
        try:
            t_fill = time.monotonic()
            with flood.lock:
                flood.fill()
            t_fill = time.monotonic() - t_fill
            drip.start()

            def prober():
                end = time.monotonic() + FLOOD_SECONDS
                while time.monotonic() < end:
                    probes.append(probe(host, port))
                    time.sleep(0.25)

            pt = threading.Thread(target=prober, daemon=True)
            pt.start()
            # Meanwhile the worker must keep doing its job.
            time.sleep(2)
            self.produce({"items": [{"externalCustomerId": "flood", "externalConversationId": "1"}]})
            res = self.wait_results(1, w, timeout=30)
            pt.join(FLOOD_SECONDS + 10)
            self.assertFalse(pt.is_alive())
        finally:
            flood.close()
            drip.join(10)

        self.assertEqual(res[0]["error"], "", res)
        self.assertEqual(self.query("SELECT count(*) FROM customer_metadata WHERE "
                                    "external_customer_id = 'flood'"), [(1,)])

        lat = [t for st, t in probes if st == 200]
        bad = [(st, round(t, 3)) for st, t in probes if st != 200 or t > PROBE_TIMEOUT]
        held = max(flood.held_samples) if flood.held_samples else len(flood.socks)
        print(f"\n  flood from {FLOOD_SOURCE}: {flood.attempts} connection attempts "
              f"({FLOOD_CONNECTIONS} opened in {t_fill:.1f}s), at most {held} still held at a "
              f"drip, {flood.closed_by_server} closed by the server, "
              f"{flood.connect_failures} connects failed; /healthz from {PROBE_SOURCE}: "
              f"{len(probes) - len(bad)}/{len(probes)} probes 200 within {PROBE_TIMEOUT:.0f}s"
              + (f", latency median {statistics.median(lat) * 1000:.1f} ms, "
                 f"max {max(lat) * 1000:.1f} ms" if lat else ""), end=" ")
        self.assertGreaterEqual(len(probes), 20)
        self.assertEqual(len(bad), 0, f"{len(bad)} of {len(probes)} probes failed or took over "
                                      f"{PROBE_TIMEOUT:.0f}s, e.g. {bad[:3]}; worker log:\n"
                                      + "\n".join(w.lines()[-15:]))
        self.assertLessEqual(held, MAX_HELD_FROM_ONE_SOURCE,
                             f"one source address held {held} connections")
        self.assertEqual(probe(host, port)[0], 200)
        self.stop_worker(w)  # exit 0 on SIGTERM; tearDown checks every stderr line is JSON


if __name__ == "__main__":
    unittest.main()
