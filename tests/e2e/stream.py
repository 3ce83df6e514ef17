"""A deterministic stream of batch messages for the reliability tests, and the table a
clean run of it must leave.

Keys repeat across messages and across partitions, so order and merging matter. Each
partition owns a disjoint set of optional fields and attribute names: the final state is
then the same whatever the interleaving of partitions (docs/contract.md §4 orders items only
within a partition), and a test can compare every column of every row.

What the interleaving does decide is which item was applied last to a row (its `event_id`
and `source_*` columns): that is the last item of the key on one of the partitions where
the key occurs, so the stream knows the candidates (`candidates()`). It also knows the
result every item and every bad message must get (`expected_results_map()`): offsets on a
fresh topic follow the production order per partition (bad messages take one too)."""

import json
import random
import uuid

OPTIONAL = ["status", "phoneNumber", "emailAddress", "userId", "addressCountry",
            "addressState", "addressZipcode"]
COLUMNS = ["status", "phone_number", "email_address", "user_id", "address_country",
           "address_state", "address_zipcode"]
# Namespace of generated eventIds (docs/design.md "Generated eventIds"): a bad message's result has
# the eventId generated for index 0 of its source.
EVENT_NS = uuid.UUID("6b3c2e0a-9d41-4f7e-8a55-1c93d207e46f")


def generated_event_id(topic, partition, offset, index):
    return str(uuid.uuid5(EVENT_NS, f"{topic}/{partition}/{offset}/{index}"))


class Stream:
    def __init__(self, n_items, partitions, seed=1, per_msg=100, bad_item_rate=0.01,
                 bad_msg_every=53, keys=None):
        rng = random.Random(seed)
        self.partitions = partitions
        self.messages = []          # (partition, bytes) in production order
        self.expected_results = 0   # one per item, one per bad message
        self.items = 0
        self.expected_errors = 0
        # (partition, offset, index) -> (eventId, error code) of every expected result;
        # eventId None for a bad message (generated: see expected_results_map).
        self.result_kinds = {}
        # key -> {partition: (eventId, partition, offset, index)} of the key's last valid item
        # on that partition.
        self.last = {}
        next_offset = [0] * partitions
        n_keys = keys or max(1, n_items // 4)
        state = {}
        seq = 0
        while self.items < n_items:
            p = seq % partitions
            seq += 1
            offset = next_offset[p]
            next_offset[p] += 1
            if bad_msg_every and seq % bad_msg_every == 0:
                garbage = rng.choice([b"", b"\xff\xfe garbage", b"{\"items\": []}", b"not json",
                                      b"{'items': [{}]}", b"[" * 1000])
                self.messages.append((p, garbage))
                self.expected_results += 1
                self.expected_errors += 1
                self.result_kinds[(p, offset, 0)] = (None, "FAIL_BAD_REQUEST")
                continue
            own = [f for i, f in enumerate(OPTIONAL) if i % partitions == p]
            items = []
            for i in range(min(per_msg, n_items - self.items)):
                k = rng.randrange(n_keys)
                key = (f"cust-{k}", f"conv-{k % 5}")
                it = {"externalCustomerId": key[0], "externalConversationId": key[1],
                      "eventId": f"ev-{seq}-{i}"}
                if rng.random() < bad_item_rate:
                    it["externalCustomerId"] = "   "
                    self.expected_errors += 1
                    self.result_kinds[(p, offset, i)] = (it["eventId"], "FAIL_BAD_PARAMS")
                    items.append(it)
                    continue
                for f in own:
                    r = rng.random()
                    if r < 0.5:
                        it[f] = f"{f[:4]}-{seq}-{i}"
                    elif r < 0.6:
                        it[f] = None
                if rng.random() < 0.7:
                    it["attributes"] = [
                        {"name": f"p{p}-a{rng.randrange(4)}",
                         "value": None if rng.random() < 0.2 else f"v{seq}-{i}"}
                        for _ in range(rng.randrange(1, 4))]
                items.append(it)
                self.apply(state, it)
                self.result_kinds[(p, offset, i)] = (it["eventId"], "")
                self.last.setdefault(key, {})[p] = (it["eventId"], p, offset, i)
            self.items += len(items)
            self.expected_results += len(items)
            self.messages.append((p, json.dumps({"items": items}).encode()))
        self.expected = state

    @staticmethod
    def apply(state, it):
        key = (it["externalCustomerId"], it["externalConversationId"])
        row = state.setdefault(key, {"fields": dict.fromkeys(OPTIONAL), "attributes": None})
        for f in OPTIONAL:
            if it.get(f) is not None:
                row["fields"][f] = it[f]
        if it.get("attributes") is not None:
            attrs = dict(row["attributes"] or {})
            for a in it["attributes"]:
                if a.get("value") is None:
                    attrs.pop(a["name"], None)
                else:
                    attrs[a["name"]] = a["value"]
            row["attributes"] = attrs

    def expected_rows(self):
        return {k: tuple(v["fields"][f] for f in OPTIONAL) + (v["attributes"],)
                for k, v in self.expected.items()}

    def candidates(self, key):
        """The items that may be the last applied to the key's row, one per partition where
        the key has a valid item: (eventId, partition, offset, index)."""
        return sorted(self.last.get(key, {}).values(), key=lambda c: c[1])

    def expected_results_map(self, topic):
        """(partition, offset, index) -> (eventId, error code) of every result a run of the
        stream on `topic` (a fresh topic) must give; error code "" for success, else the part
        of the error before the first colon (FAIL_BAD_PARAMS, FAIL_BAD_REQUEST)."""
        return {k: (ev if ev is not None else generated_event_id(topic, *k), code)
                for k, (ev, code) in self.result_kinds.items()}


def result_kind(result):
    """A result message in the shape of expected_results_map()'s values."""
    return (result["eventId"], result["error"].split(":", 1)[0] if result["error"] else "")


def compare_results(expected, by_source, topic):
    """Differences between expected_results_map(topic) and ResultsReader.by_source: a dict of
    lists (missing sources, unexpected sources, wrong eventId/error, wrong topic), each
    empty when they agree."""
    got = {k: result_kind(r) for k, r in by_source.items()}
    return {
        "missing": sorted(k for k in expected if k not in got),
        "unexpected": sorted(k for k in got if k not in expected),
        "wrong": sorted((k, expected[k], got[k]) for k in expected
                        if k in got and got[k] != expected[k]),
        "wrong_topic": sorted(k for k, r in by_source.items() if r["source"]["topic"] != topic),
    }


def table_rows(query):
    """The table in the shape of Stream.expected_rows(); query(sql) returns rows."""
    rows = query("SELECT external_customer_id, external_conversation_id, "
                 + ", ".join(COLUMNS) + ", attributes FROM customer_metadata")
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def table_sources(query):
    """(event_id, source_topic, source_partition, source_offset, source_index) of every row,
    by key; query(sql) returns rows."""
    rows = query("SELECT external_customer_id, external_conversation_id, event_id, source_topic,"
                 " source_partition, source_offset, source_index FROM customer_metadata")
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def compare_sources(stream, sources, topic):
    """Checks each row's event_id and source_* against stream.candidates(): the same
    candidate for both, on `topic`. Returns (wrong, single, multi): the keys whose columns
    match no candidate, as (key, columns, candidates), and how many keys occur on one
    partition / on several."""
    wrong, single, multi = [], 0, 0
    for key in stream.expected:
        cands = stream.candidates(key)
        if len(cands) == 1:
            single += 1
        else:
            multi += 1
        got = sources.get(key)
        if got is None:
            continue  # a missing row is reported by the comparison of the fields
        ev, tpc, part, off, idx = got
        if tpc != topic or (ev, part, off, idx) not in cands:
            wrong.append((key, got, cands))
    return wrong, single, multi
