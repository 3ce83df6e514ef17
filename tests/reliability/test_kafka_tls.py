"""Kafka over TLS and SASL (issue 13, item 1), against the SASL_SSL listener of
tests/harness/stack.sh (a throwaway CA signed the broker's certificate for 127.0.0.1; user
`worker`, KAFKA_SASL_PASSWORD):

  - a stream ingests end to end through -X security.protocol=SASL_SSL … (results and rows
    checked as the fault tests do);
  - a wrong password, and a broker certificate that the CA given does not trust, are
    configuration errors: `run` and `api` stop with one clear line and exit 1 within
    REFUSED_BOUND_S (docs/design.md), instead of retrying for ever;
  - a broker that is merely down is still waited for over SASL_SSL (docs/contract.md §6);
  - no log line of any of these runs shows the password (librdkafka's security debug on);
  - the same settings from KAFKA_CONFIG_FILE (a properties file) work, with the password in
    no command line.

The worker authenticates with PLAIN over TLS: librdkafka before 2.6.1 (Debian's 2.0.2) sends
a SCRAM final message that Kafka 4.x refuses (the client nonce twice); test_scram pins what
the worker does with SCRAM-SHA-512 on this librdkafka (docs/operations.md).
"""

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
from harness import ResultsReader, stack  # noqa: E402
from stream import Stream, compare_results, table_rows  # noqa: E402
from test_api import ApiCase, free_port  # noqa: E402

SASL_BROKERS = os.environ.get("KAFKA_SASL_BROKERS")
CA = os.environ.get("KAFKA_CA")
USER = os.environ.get("KAFKA_SASL_USER")
PASSWORD = os.environ.get("KAFKA_SASL_PASSWORD")
MECHANISM = os.environ.get("KAFKA_SASL_MECHANISM", "PLAIN")
WRONG_PASSWORD = "wrong-Swordfish-7c1e"
# librdkafka answers a refused login in about 0.3 s and a failed verification at once; the
# worker stops at its next poll. Measured 0.1-0.5 s (2 busy cores): the bound leaves room.
REFUSED_BOUND_S = 10.0
AUTH_MSG = "Kafka refused the worker's SASL credentials"
CERT_MSG = "the Kafka broker's TLS certificate is not trusted"


def librdkafka_version():
    """(major, minor, patch) of the librdkafka the worker links (the system's)."""
    lib = ctypes.CDLL("librdkafka.so.1")
    lib.rd_kafka_version.restype = ctypes.c_int
    v = lib.rd_kafka_version()
    return (v >> 24) & 0xff, (v >> 16) & 0xff, (v >> 8) & 0xff


def sasl_args(password=PASSWORD, ca=CA, mechanism=MECHANISM, debug=True):
    args = ["-X", "security.protocol=SASL_SSL", "-X", f"sasl.mechanisms={mechanism}",
            "-X", f"sasl.username={USER}", "-X", f"sasl.password={password}",
            "-X", f"ssl.ca.location={ca}"]
    # librdkafka's own security and broker debug lines go through the worker's log too: the
    # password must not appear in them either.
    return args + (["-X", "debug=security,broker"] if debug else [])


def other_ca(folder):
    """A CA that did not sign the broker's certificate."""
    key, pem = os.path.join(folder, "other-ca.key"), os.path.join(folder, "other-ca.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=not-the-broker-CA", "-keyout", key, "-out", pem],
                   check=True, capture_output=True, timeout=30)
    return pem


class SaslCase:
    """Shared by the run and api tests (mixed into E2ECase subclasses)."""

    def setUp(self):
        if not (SASL_BROKERS and CA and USER and PASSWORD):
            self.fail("KAFKA_SASL_BROKERS, KAFKA_CA, KAFKA_SASL_USER, KAFKA_SASL_PASSWORD are not"
                      " set: the stack's env file (tests/harness/stack.sh) provides them")
        super().setUp()
        self.env["KAFKA_BROKERS"] = SASL_BROKERS
        self.tmp = tempfile.mkdtemp(prefix="mw-tls-")

    def tearDown(self):
        for w in self.workers:
            for line in w.lines():
                self.assertNotIn(PASSWORD, line, "the SASL password is in a log line")
                self.assertNotIn(WRONG_PASSWORD, line, "a SASL password is in a log line")
        shutil.rmtree(self.tmp, ignore_errors=True)
        super().tearDown()

    def assert_refused(self, w, expected_msg, what):
        """Waits for w to exit; checks exit 1 within REFUSED_BOUND_S and the one clear line.
        Returns the seconds it took."""
        t0 = time.monotonic()
        try:
            rc = w.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.fail(f"{what}: still running after 60 s (retrying for ever?):\n" + w.dump())
        took = time.monotonic() - t0
        self.assertEqual(rc, 1, f"{what}: exit status\n" + w.dump())
        clear = [l for l in w.lines() if expected_msg in l and '"level":"error"' in l]
        self.assertEqual(len(clear), 1, f"{what}: one clear error line\n" + w.dump())
        self.assertLess(took, REFUSED_BOUND_S, f"{what}: took {took:.1f} s\n" + w.dump())
        return took


class TestKafkaTlsRun(SaslCase, ApiCase):

    def test_1_ingest_over_sasl_ssl(self):
        stream = Stream(2000, self.partitions, seed=131)
        reader = ResultsReader(self.results_topic)
        w = self.start_worker(extra_env={"LOG_LEVEL": "debug"}, args=("run", *sasl_args()))
        t0 = time.monotonic()
        for part, value in stream.messages:
            self.producer.produce(self.topic, value, partition=part)
        self.producer.flush(60)
        self.assertTrue(reader.wait_for(stream.expected_results, 120), w.dump())
        took = time.monotonic() - t0
        reader.poll(1)
        self.stop_worker(w)
        diff = compare_results(stream.expected_results_map(self.topic), reader.by_source,
                               self.topic)
        self.assertEqual(diff, {k: [] for k in diff}, "results differ from a clean run")
        self.assertEqual(reader.differing, [])
        self.assertEqual(table_rows(self.query), stream.expected_rows(), "the table differs")
        reader.close()
        tls = [l for l in w.lines() if "sasl_ssl://" in l]
        self.assertTrue(tls, "no librdkafka line shows a SASL_SSL connection:\n" + w.dump())
        print(f"\n  SASL_SSL ({MECHANISM}): {stream.items} items in {len(stream.messages)} "
              f"messages, {stream.expected_results} results and {len(stream.expected)} rows as a "
              f"clean run, in {took:.1f} s; {len(w.lines())} debug lines without the password",
              end=" ")

    def test_2_wrong_password(self):
        w = self.start_worker(args=("run", *sasl_args(password=WRONG_PASSWORD)))
        took = self.assert_refused(w, AUTH_MSG, "wrong password")
        print(f"\n  wrong password: exit 1 after {took:.2f} s", end=" ")

    def test_3_untrusted_certificate(self):
        w = self.start_worker(args=("run", *sasl_args(ca=other_ca(self.tmp))))
        took = self.assert_refused(w, CERT_MSG, "untrusted certificate")
        print(f"\n  untrusted broker certificate: exit 1 after {took:.2f} s", end=" ")

    def test_4_api_refused_too(self):
        took = []
        for password, ca, msg in ((WRONG_PASSWORD, CA, AUTH_MSG),
                                  (PASSWORD, other_ca(self.tmp), CERT_MSG)):
            env = {"API_KEYS_FILE": self.keys.name, "API_ADDR": f"127.0.0.1:{free_port()}"}
            w = self.start_worker(env, name="api", args=("api", *sasl_args(password, ca)))
            took.append(self.assert_refused(w, msg, f"api, {msg}"))
        print(f"\n  api: wrong password exit 1 after {took[0]:.2f} s, untrusted certificate "
              f"after {took[1]:.2f} s", end=" ")

    def test_5_broker_down_is_waited_for(self):
        # Over SASL_SSL, a broker that is down (connection refused, then a restart) is not a
        # refusal: the worker waits, and ingests once it is back.
        stack("kafka-stop")
        try:
            w = self.start_worker(args=("run", *sasl_args(debug=False)))
            time.sleep(8)
            self.assertIsNone(w.proc.poll(), "the worker stopped while the broker was down:\n"
                              + w.dump())
        finally:
            stack("kafka-start")
        self.produce({"items": [{"externalCustomerId": "tls", "externalConversationId": "down"}]})
        self.wait_results(1, w, timeout=90)
        self.stop_worker(w)
        self.assertFalse([l for l in w.lines() if AUTH_MSG in l or CERT_MSG in l], w.dump())
        print("\n  broker down 8 s: waited for over SASL_SSL, then ingested", end=" ")

    def test_6_scram(self):
        # SCRAM-SHA-512 with the right password: librdkafka < 2.6.1 repeats the client nonce in
        # its final message, which Kafka 4.x refuses as invalid credentials: the worker must
        # then stop cleanly like for a wrong password. A fixed librdkafka must ingest.
        version = librdkafka_version()
        w = self.start_worker(args=("run", *sasl_args(mechanism="SCRAM-SHA-512")))
        if version < (2, 6, 1):
            took = self.assert_refused(w, AUTH_MSG, "SCRAM with librdkafka %d.%d.%d" % version)
            print(f"\n  SCRAM-SHA-512 with librdkafka {'.'.join(map(str, version))}: refused by "
                  f"the broker, exit 1 after {took:.2f} s (use PLAIN over TLS, or librdkafka "
                  ">= 2.6.1)", end=" ")
        else:
            self.produce({"items": [{"externalCustomerId": "tls", "externalConversationId": "s"}]})
            self.wait_results(1, w)
            self.stop_worker(w)

    def test_7_credentials_from_a_file(self):
        # KAFKA_CONFIG_FILE (kcat's -F): the same settings from a properties file, so that the
        # password is in no command line. A wrong password there is refused like one in -X
        # (the file is read); the right one ingests, and -X still wins over the file.
        def props(password):
            path = os.path.join(self.tmp, "kafka.properties")
            with open(path, "w") as f:
                f.write("# from a Kubernetes Secret, say\n"
                        + "".join(f"{a}\n" for a in sasl_args(password, debug=False)[1::2]))
            os.chmod(path, 0o600)
            return {"KAFKA_CONFIG_FILE": path}
        w = self.start_worker(extra_env=props(WRONG_PASSWORD), args=("run",))
        took = self.assert_refused(w, AUTH_MSG, "wrong password in KAFKA_CONFIG_FILE")
        w = self.start_worker(extra_env=props(PASSWORD),
                              args=("run", "-X", "client.id=from-the-command-line"))
        with open(f"/proc/{w.proc.pid}/cmdline", "rb") as f:
            cmdline = f.read().decode(errors="replace")
        self.assertNotIn(PASSWORD, cmdline)
        self.produce({"items": [{"externalCustomerId": "tls", "externalConversationId": "file"}]})
        self.wait_results(1, w)
        self.stop_worker(w)
        print(f"\n  KAFKA_CONFIG_FILE: wrong password exit 1 after {took:.2f} s; the right one "
              "ingests, password in no command line", end=" ")


if __name__ == "__main__":
    unittest.main()
