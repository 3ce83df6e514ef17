"""A deterministic stream of batch messages for the reliability tests, and the table a
clean run of it must leave.

Keys repeat across messages and across partitions, so order and merging matter. Each
partition owns a disjoint set of optional fields and attribute names: the final state is
then the same whatever the interleaving of partitions (SPEC §4 orders items only within a
partition), and a test can compare every column of every row."""

import json
import random

OPTIONAL = ["status", "phoneNumber", "emailAddress", "userId", "addressCountry",
            "addressState", "addressZipcode"]
COLUMNS = ["status", "phone_number", "email_address", "user_id", "address_country",
           "address_state", "address_zipcode"]


class Stream:
    def __init__(self, n_items, partitions, seed=1, per_msg=100, bad_item_rate=0.01,
                 bad_msg_every=53, keys=None):
        rng = random.Random(seed)
        self.partitions = partitions
        self.messages = []          # (partition, bytes) in production order
        self.expected_results = 0   # one per item, one per bad message
        self.items = 0
        self.expected_errors = 0
        n_keys = keys or max(1, n_items // 4)
        state = {}
        seq = 0
        while self.items < n_items:
            p = seq % partitions
            seq += 1
            if bad_msg_every and seq % bad_msg_every == 0:
                garbage = rng.choice([b"", b"\xff\xfe garbage", b"{\"items\": []}", b"not json",
                                      b"{'items': [{}]}", b"[" * 1000])
                self.messages.append((p, garbage))
                self.expected_results += 1
                self.expected_errors += 1
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


def table_rows(query):
    """The table in the shape of Stream.expected_rows(); query(sql) returns rows."""
    rows = query("SELECT external_customer_id, external_conversation_id, "
                 + ", ".join(COLUMNS) + ", attributes FROM customer_metadata")
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}
