"""Merged rows only while the table is plain (schema 4; README "How a transaction is applied").

The worker reads customer_metadata_plain() at its first transaction and then every 30 s, and
sends one merged row per key while the table has only the schema's own rules. An owner who adds
a constraint in between must not get merged rows: the database checks plainness again inside
the transaction and refuses them with MW001, and the worker sends the items in generations at
once. With merged rows {status: closed, phone} then {status: open} would be stored as
open + phone with no error; applied one by one (the contract) the first item is refused by the
owner's CHECK and the second applies."""

import json
import time
import unittest

from harness import E2ECase

CONSTRAINT = ("ALTER TABLE customer_metadata ADD CONSTRAINT no_phone_when_closed"
              " CHECK (status IS DISTINCT FROM 'closed' OR phone_number IS NULL)")


def item(cust, conv, **fields):
    d = {"externalCustomerId": cust, "externalConversationId": conv}
    d.update(fields)
    return d


class PlainTableTest(E2ECase):
    partitions = 1

    def test_constraint_added_while_running_is_honoured_at_once(self):
        w = self.start_worker({"LOG_LEVEL": "debug"})
        self.produce({"items": [item("c1", "v", status="new"), item("c1", "v", phoneNumber="1")]})
        self.wait_results(2, w)
        merged = [json.loads(l) for l in w.lines() if '"batch done"' in l]
        self.assertEqual([(b["items"], b["rows"]) for b in merged], [(2, 1)],
                         "a plain table takes one merged row per key:\n" + w.dump())
        self.query(CONSTRAINT)  # within the worker's 30 s: it still believes the table plain
        t0 = time.monotonic()
        self.produce({"items": [item("c2", "v", status="closed", phoneNumber="+1555"),
                                item("c2", "v", status="open")]})
        res = self.wait_results(4, w)
        self.stop_worker(w)
        self.assertLess(time.monotonic() - t0, 25, "the switch waited for the next re-read")
        errors = {(r["source"]["offset"], r["source"]["index"]): r["error"] for r in res}
        self.assertTrue(errors[(1, 0)].startswith("FAIL_DB_REJECTED: "), errors)
        self.assertIn("no_phone_when_closed", errors[(1, 0)])
        self.assertEqual(errors[(1, 1)], "", errors)
        self.assertEqual(self.query("SELECT status, phone_number FROM customer_metadata"
                                    " WHERE external_customer_id = 'c2'"), [("open", None)])
        self.assertTrue(any("rules of its own" in l for l in w.lines()), w.dump())


if __name__ == "__main__":
    unittest.main()
