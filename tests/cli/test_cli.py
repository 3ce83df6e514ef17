"""Tests of the command line with no services: `validate`, `--help`, settings errors,
and that secrets given in settings never appear in what the worker prints."""

import json
import os
import subprocess
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("MW_BIN", os.path.join(ROOT, "build", "metadata-worker"))
EXAMPLE = os.path.join(ROOT, "schemas", "example-request.json")
SECRET = "s3cr3t-Pa55word"


def run(args, stdin=None, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_URL"))}
    e.update(env or {})
    return subprocess.run([BIN, *args], input=stdin, capture_output=True, env=e, timeout=30)


class TestValidate(unittest.TestCase):
    def test_api_example(self):
        r = run(["validate", EXAMPLE])
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual(out["errorCount"], 0)
        self.assertEqual(len(out["results"]), 5)
        self.assertEqual([x["error"] for x in out["results"]], [""] * 5)
        self.assertEqual(out["results"][0]["eventId"], "eventId-1938")
        # Deterministic: the same input gives the same generated eventIds.
        self.assertEqual(json.loads(run(["validate", EXAMPLE]).stdout), out)

    def test_mixed_batch_exact_errors(self):
        batch = {"items": [
            {"externalCustomerId": "c", "externalConversationId": "v"},
            {"externalCustomerId": "", "externalConversationId": "v"},
            {"externalCustomerId": "c", "externalConversationId": "v", "emailAddress": "x" * 321},
            {"externalCustomerId": "c", "externalConversationId": "v", "userId": ["u"]},
            {"externalCustomerId": "c", "externalConversationId": "v", "addressZipcode": "1\u00002"},
            None,
        ]}
        r = run(["validate", "-"], stdin=json.dumps(batch).encode())
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual(out["errorCount"], 5)
        self.assertEqual([x["error"] for x in out["results"]], [
            "",
            "FAIL_BAD_PARAMS: ERROR: externalCustomerId cannot be blank",
            "FAIL_BAD_PARAMS: ERROR: emailAddress exceeds maximum length of 320",
            "FAIL_BAD_PARAMS: ERROR: userId must be a string",
            "FAIL_BAD_PARAMS: ERROR: addressZipcode cannot contain U+0000",
            "FAIL_BAD_PARAMS: ERROR: item must be an object",
        ])

    def test_not_a_batch_exits_1(self):
        for payload, reason in [(b"", "message is empty"), (b"[1]", "must be a JSON object"),
                                (b'{"items": []}', "items cannot be empty"),
                                (b"{'items': [{}]}", "not valid JSON"),
                                (b"\xc0\xaf", "not valid UTF-8")]:
            r = run(["validate", "-"], stdin=payload)
            self.assertEqual(r.returncode, 1, payload)
            out = json.loads(r.stdout)
            self.assertEqual(out["errorCount"], 1)
            self.assertTrue(out["results"][0]["error"].startswith("FAIL_BAD_REQUEST: ERROR: "))
            self.assertIn(reason, out["results"][0]["error"])

    def test_missing_file(self):
        r = run(["validate", "/nonexistent/file.json"])
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"/nonexistent/file.json", r.stderr)


class TestSettings(unittest.TestCase):
    def test_help_for_each_command(self):
        for args in (["--help"], ["run", "--help"], ["migrate", "--help"], ["validate", "--help"]):
            r = run(args, env={"DATABASE_URL": f"postgresql://u:{SECRET}@h/db"})
            self.assertEqual(r.returncode, 0, args)
            self.assertIn(b"KAFKA_BROKERS", r.stdout)
            self.assertNotIn(SECRET.encode(), r.stdout + r.stderr)

    def test_bad_setting_names_it(self):
        r = run(["run"], env={"MAX_BATCH_ITEMS": "lots"})
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"MAX_BATCH_ITEMS", r.stderr)
        r = run(["run", "--txn-max-wait-ms", "-5"])
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"TXN_MAX_WAIT_MS", r.stderr)
        r = run(["run", "--no-such-flag"])
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"--no-such-flag", r.stderr)
        r = run(["frobnicate"])
        self.assertEqual(r.returncode, 2)

    def test_bad_kafka_property_does_not_echo_value(self):
        r = run(["run", "-X", f"no.such.property={SECRET}",
                 "--database-url", "postgresql://nobody@127.0.0.1:1/x?connect_timeout=1"])
        self.assertNotEqual(r.returncode, 0)
        self.assertNotIn(SECRET.encode(), r.stdout + r.stderr)

    def test_database_password_never_logged(self):
        # Nothing listens on port 1: the worker logs its connection failure and, stopped
        # by the timeout, must never have printed the password.
        try:
            r = subprocess.run([BIN, "migrate"], capture_output=True, timeout=4,
                               env={"DATABASE_URL": f"postgresql://u:{SECRET}@127.0.0.1:1/db"})
            out = r.stdout + r.stderr
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"") + (e.stderr or b"")
        self.assertIn(b"cannot connect", out)
        self.assertNotIn(SECRET.encode(), out)

    def test_malformed_database_url_stops_without_quoting_it(self):
        # libpq's parse errors quote the offending token (issue 9, item 2): whatever the
        # malformation and wherever the secret sits, nothing of it may be printed, at any
        # log level; a DATABASE_URL that does not parse is a configuration error (exit 1).
        s = SECRET
        urls = [
            f"postgresql://postgres:{s}%zz@127.0.0.1:5432/postgres",     # bad percent-encoding
            f"postgresql://postgres:%zz{s}@127.0.0.1:5432/postgres",
            f"postgresql://postgres:{s[:4]}%zz{s[4:]}@127.0.0.1/postgres",
            f"postgresql://u:{s}@[::1",                                    # unclosed IPv6 bracket
            f"postgresql://u:{s}@[::1/db",
            f"postgresql://u:{s}@h/db?bogus={s}",                          # unknown parameter
            f"postgresql://u:{s}@h/db?{s}=1",
            f"postgresql://u:{s}@h/db?sslmode",                            # parameter without =
            f"postgresql://u@h/db?password={s}&bogus=1",
            f"postgresql://u@h/db?password={s}%zz",
            f"host=127.0.0.1 password={s[:6]} {s[6:]}",                    # space in a value
            f"host=127.0.0.1 password={s} {s}",
            f"password={s} host=127.0.0.1 dbname",                         # key without =
            f"password={s} {s}=x",
            f"{s} password={s}",
            f"host='127.0.0.1 password={s}",                               # unterminated quote
            f"password='{s}",
            f"password={s} bogus_option={s}",                              # unknown option
            f"{s}=1 password={s}",
        ]
        for url in urls:
            for cmd in ("migrate", "run"):
                for level in ("debug", "error"):
                    r = run([cmd], env={"DATABASE_URL": url, "LOG_LEVEL": level})
                    out = r.stdout + r.stderr
                    self.assertEqual(r.returncode, 1, (url, cmd, out))
                    self.assertIn(b"DATABASE_URL is not a valid", out, url)
                    for part in (s, s[:6], s[6:], s[4:]):
                        self.assertNotIn(part.encode(), out, (url, cmd, level, out))

    def test_secrets_scrubbed_from_every_line(self):
        # A password that parses is a secret the logger knows: it is scrubbed from whatever
        # line would carry it (here PGPASSWORD and a URI password while PostgreSQL is
        # unreachable, at debug level).
        for env in ({"DATABASE_URL": f"postgresql://u:{SECRET}@127.0.0.1:1/{SECRET}"},
                    {"DATABASE_URL": f"host=127.0.0.1 port=1 user={SECRET} password={SECRET}"},
                    {"PGPASSWORD": SECRET, "PGHOST": "127.0.0.1", "PGPORT": "1",
                     "PGDATABASE": SECRET}):
            env = dict(env, LOG_LEVEL="debug")
            try:
                p = subprocess.run([BIN, "migrate"], capture_output=True, timeout=3,
                                   env=env)
                out = p.stdout + p.stderr
            except subprocess.TimeoutExpired as e:
                out = (e.stdout or b"") + (e.stderr or b"")
            self.assertIn(b"cannot connect", out, env)
            self.assertNotIn(SECRET.encode(), out, env)


if __name__ == "__main__":
    unittest.main()
