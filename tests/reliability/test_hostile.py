"""Hostile input (issue 3, point 7) and injection attempts: each message gets the outcome of
docs/contract.md §2/§3, none crashes or stalls the worker, and the message after them is
ingested."""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
from harness import E2ECase  # noqa: E402

BR = "FAIL_BAD_REQUEST: ERROR: "
BP = "FAIL_BAD_PARAMS: ERROR: "
INJECT = "'); DROP TABLE customer_metadata; --"


def it(cust, conv, **kw):
    d = {"externalCustomerId": cust, "externalConversationId": conv}
    d.update(kw)
    return d


class TestHostileInput(E2ECase):
    partitions = 1

    def test_hostile_messages(self):
        cases = [  # (payload, expected errors by index; a str = one bad-request reason part)
            (b"", "message is empty"),
            (bytes(range(256)) * 4, "not valid UTF-8"),
            (b'{"items":[{"externalCustomerId":"\xc3\x28","externalConversationId":"x"}]}',
             "not valid UTF-8"),
            (b'{"items":' + b"[" * 100000 + b"]" * 100000 + b"}", "nesting too deep"),
            (json.dumps({"items": [it("huge", "x", status="x" * 500000)]}),
             [BP + "status exceeds maximum length of 256"]),
            (json.dumps({"items": [it(f"max-{i}", "x") for i in range(10000)]}), [""] * 10000),
            (json.dumps({"items": [it(f"over-{i}", "x") for i in range(10001)]}),
             "items exceeds maximum of 10000 items"),
            (b'{"items":[{"externalCustomerId":"first","externalCustomerId":"dup",'
             b'"externalConversationId":"x"}]}', [""]),
            (json.dumps({"items": [it(123, "x"), it("n", 4.5), it("b", True)]}),
             [BP + "externalCustomerId must be a string",
              BP + "externalConversationId must be a string",
              BP + "externalConversationId must be a string"]),
            (json.dumps({"items": [[1, 2], None, "s", 7]}), [BP + "item must be an object"] * 4),
            (json.dumps({"items": [it(INJECT, "x\\'\"", status="$1; SELECT pg_sleep(10)",
                                      attributes=[{"name": INJECT, "value": "') --"}])]}), [""]),
            (json.dumps({"items": [it("nul", "x", userId="a\u0000b")]}),
             [BP + "userId cannot contain U+0000"]),
            (b"{'items': [{}]}", "not valid JSON"),
            (b'{"items": [{"externalCustomerId": NaN}]}', "not valid JSON"),
            (json.dumps({"items": [it("\U0001F600" * 256, "x")]}), [""]),
            (json.dumps({"items": [it("after", "all")]}), [""]),
        ]
        for payload, _ in cases:
            self.produce(payload, partition=0)
        expected = sum(1 if isinstance(e, str) else len(e) for _, e in cases)
        w = self.start_worker()
        res = self.wait_results(expected, w, timeout=120, exact_wait=2.0)
        self.assertEqual(len(res), expected)
        by_offset = {}
        for r in res:
            by_offset.setdefault(r["source"]["offset"], []).append(r)
        for off, (payload, want) in enumerate(cases):
            got = sorted(by_offset[off], key=lambda r: r["source"]["index"])
            if isinstance(want, str):
                self.assertEqual(len(got), 1, off)
                self.assertTrue(got[0]["error"].startswith(BR), (off, got[0]["error"]))
                self.assertIn(want, got[0]["error"], off)
            else:
                self.assertEqual([r["error"] for r in got], want, off)
        dlq = self.consume_all(self.dlq_topic, 7, exact_wait=1.0)
        self.assertEqual(len(dlq), sum(1 for _, e in cases if isinstance(e, str)))
        rows = self.rows()
        self.assertIn(("after", "all"), rows)
        self.assertIn(("dup", "x"), rows)                 # duplicate keys: the last one wins
        self.assertNotIn(("first", "x"), rows)
        self.assertIn((INJECT, "x\\'\""), rows)            # stored verbatim, nothing executed
        self.assertEqual(rows[(INJECT, "x\\'\"")][3], "$1; SELECT pg_sleep(10)")
        self.assertEqual(rows[(INJECT, "x\\'\"")][10], {INJECT: "') --"})
        self.assertEqual(sum(1 for k in rows if k[0].startswith("max-")), 10000)
        self.assertIn(("\U0001F600" * 256, "x"), rows)  # 256 code points, 1024 bytes
        self.assertIsNone(w.proc.poll(), "the worker died:\n" + w.dump())
        self.stop_worker(w)


if __name__ == "__main__":
    unittest.main()
