"""Checks schemas/batch.schema.json and schemas/result.schema.json (docs/contract.md §2, §3, §5).

Run from the repository root with Debian's interpreter:
    /usr/bin/python3 -m unittest discover -s tests/compose -v
It needs the jsonschema module from Debian's python3-jsonschema package
(apt-get install python3-jsonschema), hence /usr/bin/python3. Nothing else outside the
standard library.

Besides fixed valid and invalid documents, WorkerAgreementTest feeds every document to
`build/metadata-worker validate -` (when it is built) and checks that the schema accepts an
item exactly when the worker does, so the schema cannot drift from worker/batch.c.
"""

import copy
import json
import os
import subprocess
import unittest

try:
    import jsonschema
    from jsonschema import Draft202012Validator
except ImportError as e:  # pragma: no cover - depends on the machine
    raise ImportError(
        "jsonschema is missing: run with /usr/bin/python3 after "
        "`apt-get install python3-jsonschema`"
    ) from e

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCHEMAS = os.path.join(ROOT, "schemas")
WORKER = os.environ.get("METADATA_WORKER", os.path.join(ROOT, "build", "metadata-worker"))


def load(name):
    with open(os.path.join(SCHEMAS, name), encoding="utf-8") as f:
        return json.load(f)


def validator(name):
    schema = load(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def batch(*items):
    return {"items": list(items)}


def item(**fields):
    base = {"externalConversationId": "conv-1", "externalCustomerId": "cust-1"}
    for k, v in fields.items():
        if v is DROP:
            base.pop(k, None)
        else:
            base[k] = v
    return base


DROP = object()

# (description, item) pairs: each item alone in a batch. VALID_ITEMS pass §3, INVALID fail.
VALID_ITEMS = [
    ("minimal", item()),
    ("every field", item(eventId="e-1", status="new", phoneNumber="(555)555-0100",
                         emailAddress="a@example.com", userId="u", addressCountry="US",
                         addressState="NY", addressZipcode="10001",
                         attributes=[{"name": "a", "value": "b"}, {"name": "c", "value": None}])),
    ("optional fields null", item(eventId=None, status=None, phoneNumber=None, emailAddress=None,
                                  userId=None, addressCountry=None, addressState=None,
                                  addressZipcode=None, attributes=None)),
    ("unknown field", item(somethingNew={"x": [1, 2]})),
    ("phoneNumber 32 chars", item(phoneNumber="1" * 32)),
    ("phoneNumber 32 code points, 64 bytes", item(phoneNumber="é" * 32)),
    ("ids 256 code points", item(externalCustomerId="😀" * 256, externalConversationId="c" * 256)),
    ("emailAddress 320", item(emailAddress="e" * 320)),
    ("addressZipcode 16", item(addressZipcode="1" * 16)),
    ("addressCountry 128", item(addressCountry="x" * 128)),
    ("empty optional string", item(status="")),
    ("id with inner blanks", item(externalCustomerId=" a b ")),
    ("empty attributes", item(attributes=[])),
    ("attribute without value", item(attributes=[{"name": "a"}])),
    ("attribute name blank", item(attributes=[{"name": " "}])),
    ("attribute name 256, value 4096",
     item(attributes=[{"name": "n" * 256, "value": "v" * 4096}])),
    ("attribute with unknown field", item(attributes=[{"name": "a", "value": "b", "x": 1}])),
    ("duplicate attribute names", item(attributes=[{"name": "a", "value": "1"},
                                                   {"name": "a", "value": "2"}])),
]

INVALID_ITEMS = [
    ("missing externalCustomerId", item(externalCustomerId=DROP)),
    ("missing externalConversationId", item(externalConversationId=DROP)),
    ("externalCustomerId null", item(externalCustomerId=None)),
    ("externalCustomerId empty", item(externalCustomerId="")),
    ("externalCustomerId white space", item(externalCustomerId=" \t\n")),
    ("externalCustomerId ideographic space", item(externalCustomerId="\u3000\u00a0")),
    ("externalCustomerId NEL", item(externalCustomerId="\u0085")),
    ("externalConversationId a number", item(externalConversationId=12)),
    ("externalCustomerId 257", item(externalCustomerId="c" * 257)),
    ("phoneNumber 33 chars", item(phoneNumber="1" * 33)),
    ("phoneNumber 33 code points", item(phoneNumber="é" * 33)),
    ("emailAddress 321", item(emailAddress="e" * 321)),
    ("addressZipcode 17", item(addressZipcode="1" * 17)),
    ("addressState 129", item(addressState="s" * 129)),
    ("status a number", item(status=5)),
    ("userId an object", item(userId={"id": 1})),
    ("eventId empty", item(eventId="")),
    ("eventId blank", item(eventId="  ")),
    ("eventId 257", item(eventId="e" * 257)),
    ("U+0000 in userId", item(userId="a\u0000b")),
    ("U+0000 in an id", item(externalCustomerId="\u0000")),
    ("attributes an object", item(attributes={"a": "b"})),
    ("attributes a string", item(attributes="a=b")),
    ("attribute not an object", item(attributes=["a"])),
    ("attribute without name", item(attributes=[{"value": "b"}])),
    ("attribute name null", item(attributes=[{"name": None, "value": "b"}])),
    ("attribute name empty", item(attributes=[{"name": "", "value": "b"}])),
    ("attribute name 257", item(attributes=[{"name": "n" * 257, "value": "b"}])),
    ("attribute name a number", item(attributes=[{"name": 1, "value": "b"}])),
    ("attribute value a number", item(attributes=[{"name": "a", "value": 1}])),
    ("attribute value 4097", item(attributes=[{"name": "a", "value": "v" * 4097}])),
    ("attribute value with U+0000", item(attributes=[{"name": "a", "value": "\u0000"}])),
    ("item a number", 5),
    ("item null", None),
    ("item an array", [item()]),
]

# Messages that are not a batch at all (FAIL_BAD_REQUEST).
BAD_MESSAGES = [
    ("empty items", {"items": []}),
    ("no items", {"item": [item()]}),
    ("items null", {"items": None}),
    ("items an object", {"items": item()}),
    ("a bare array", [item()]),
    ("a string", "items"),
    ("too many items", {"items": [item()] * 10001}),
]

# Hand-written results, exactly as worker/result.c result_message writes them.
RESULT_OK = {
    "eventId": "eventId-1938",
    "error": "",
    "externalCustomerId": "555.555.0100-jdoe@example.com",
    "externalConversationId": "id-509",
    "source": {"topic": "customer-metadata.batches", "partition": 3, "offset": 1234, "index": 0},
    "batch": {"itemCount": 5, "errorCount": 1},
}
RESULT_BAD_PARAMS = {
    "eventId": "8f49b43a-faf9-5c04-b209-7b7754100148",
    "error": "FAIL_BAD_PARAMS: ERROR: externalCustomerId cannot be blank",
    "externalCustomerId": None,
    "externalConversationId": "id-69221",
    "source": {"topic": "customer-metadata.batches", "partition": 3, "offset": 1234, "index": 2},
    "batch": {"itemCount": 5, "errorCount": 1},
}
RESULT_BAD_REQUEST = {
    "eventId": "6c1d1c36-4a41-5b0e-9d0e-0b1f9f4a2c11",
    "error": "FAIL_BAD_REQUEST: ERROR: items cannot be empty",
    "externalCustomerId": None,
    "externalConversationId": None,
    "source": {"topic": "customer-metadata.batches", "partition": 0, "offset": 7, "index": 0},
    "batch": {"itemCount": 0, "errorCount": 1},
}
RESULT_DB_REJECTED = dict(
    RESULT_OK,
    error="FAIL_DB_REJECTED: ERROR: value too long for type character varying(8) (SQLSTATE 22001)",
)


class BatchSchemaTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.v = validator("batch.schema.json")

    def assertValid(self, doc, what=""):
        errors = [e.message for e in self.v.iter_errors(doc)]
        self.assertEqual(errors, [], what)

    def assertInvalid(self, doc, what=""):
        self.assertFalse(self.v.is_valid(doc), "accepted: %s" % what)

    def test_example_request_is_valid(self):
        self.assertValid(load("example-request.json"), "schemas/example-request.json")

    def test_named_rejections(self):
        self.assertInvalid({"items": []}, "empty items")
        self.assertInvalid(batch(item(externalCustomerId=DROP)), "missing externalCustomerId")
        self.assertInvalid(batch(item(phoneNumber="5" * 33)), "phoneNumber of 33 chars")
        self.assertValid(batch(item(phoneNumber="5" * 32)), "phoneNumber of 32 chars")

    def test_valid_items(self):
        for what, it in VALID_ITEMS:
            with self.subTest(what):
                self.assertValid(batch(it), what)

    def test_invalid_items(self):
        for what, it in INVALID_ITEMS:
            with self.subTest(what):
                self.assertInvalid(batch(it), what)
                # One bad item makes the whole document invalid, next to good ones.
                self.assertInvalid(batch(item(), it), what)

    def test_bad_messages(self):
        for what, doc in BAD_MESSAGES:
            with self.subTest(what):
                self.assertInvalid(doc, what)

    def test_size_limits(self):
        self.assertValid({"items": [item()] * 10000})
        self.assertValid(dict(batch(item()), producer="svc-a"), "unknown top-level field")


class ResultSchemaTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.v = validator("result.schema.json")

    def test_samples_are_valid(self):
        for sample in (RESULT_OK, RESULT_BAD_PARAMS, RESULT_BAD_REQUEST, RESULT_DB_REJECTED):
            with self.subTest(sample["error"]):
                self.assertEqual([e.message for e in self.v.iter_errors(sample)], [])

    def test_invalid_results(self):
        bad = []
        for key in RESULT_OK:
            doc = copy.deepcopy(RESULT_OK)
            del doc[key]
            bad.append(("missing " + key, doc))
        for key in ("topic", "partition", "offset", "index"):
            doc = copy.deepcopy(RESULT_OK)
            del doc["source"][key]
            bad.append(("missing source." + key, doc))
        for key in ("itemCount", "errorCount"):
            doc = copy.deepcopy(RESULT_OK)
            del doc["batch"][key]
            bad.append(("missing batch." + key, doc))
        bad += [
            ("error null", dict(RESULT_OK, error=None)),
            ("error without a kind", dict(RESULT_OK, error="something broke")),
            ("eventId null", dict(RESULT_OK, eventId=None)),
            ("eventId empty", dict(RESULT_OK, eventId="")),
            ("offset a string", dict(RESULT_OK, source=dict(RESULT_OK["source"], offset="1234"))),
            ("negative partition", dict(RESULT_OK, source=dict(RESULT_OK["source"], partition=-1))),
            ("errorCount a float", dict(RESULT_OK, batch={"itemCount": 5, "errorCount": 1.5})),
            ("not an object", [RESULT_OK]),
        ]
        for what, doc in bad:
            with self.subTest(what):
                self.assertFalse(self.v.is_valid(doc), "accepted: %s" % what)


@unittest.skipUnless(os.access(WORKER, os.X_OK),
                     "%s is not built (run make); schema/worker agreement not checked" % WORKER)
class WorkerAgreementTest(unittest.TestCase):
    """The schema accepts an item exactly when `metadata-worker validate` does."""

    @classmethod
    def setUpClass(cls):
        cls.v = validator("batch.schema.json")

    def run_validate(self, doc):
        env = {k: v for k, v in os.environ.items() if k != "MAX_BATCH_ITEMS"}
        res = subprocess.run([WORKER, "validate", "-"], input=json.dumps(doc).encode(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=60)
        self.assertIn(res.returncode, (0, 1), res.stderr.decode(errors="replace"))
        return res.returncode, json.loads(res.stdout)

    def item_is_valid(self, it):
        return self.v.is_valid(batch(it))

    def test_items_agree(self):
        cases = VALID_ITEMS + INVALID_ITEMS
        doc = batch(*(it for _, it in cases))
        rc, response = self.run_validate(doc)
        self.assertEqual(rc, 0)
        self.assertEqual(len(response["results"]), len(cases))
        disagreements = []
        for (what, it), result in zip(cases, response["results"]):
            worker_ok = result["error"] == ""
            if worker_ok != self.item_is_valid(it):
                disagreements.append("%s: worker says %r, schema %s" % (
                    what, result["error"] or "valid",
                    "valid" if self.item_is_valid(it) else "invalid"))
        self.assertEqual(disagreements, [])
        self.assertEqual(response["errorCount"], len(INVALID_ITEMS))

    def test_bad_messages_agree(self):
        for what, doc in BAD_MESSAGES:
            with self.subTest(what):
                rc, response = self.run_validate(doc)
                self.assertEqual(rc, 1, what)
                self.assertRegex(response["results"][0]["error"], r"^FAIL_BAD_REQUEST: ERROR: ")
                self.assertFalse(self.v.is_valid(doc))

    def test_example_request_agrees(self):
        rc, response = self.run_validate(load("example-request.json"))
        self.assertEqual((rc, response["errorCount"]), (0, 0))


if __name__ == "__main__":
    unittest.main()
