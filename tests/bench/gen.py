"""The benchmark's input streams and their expected final table states.

A seeded, deterministic stream of batch messages ({"items": [...]}, ITEMS_PER_MSG items each)
spread round-robin over PARTITIONS partitions: message m goes to partition m % PARTITIONS and,
on a fresh topic, gets offset m // PARTITIONS there. About 30% of the items reuse an earlier
key (an update of a row; 70% of those pick one of the 2,000 keys seen last, the others any
earlier key). About 1% of the items are invalid (blank ids, wrong types, too long, bad
attributes); they never touch the table. Every item carries an eventId. Two kinds:

  spread    (the default, real traffic: docs/contract.md "Real traffic") an update reuses a key
            seen before on ANY partition, so one key's items arrive on several partitions and
            two connections or workers write it at once. Every item sets every field and two
            attributes with low-cardinality values (3% of them null: a removal). Kafka orders
            nothing across partitions, so the final row of a key is the state after the last
            item of ONE of the partitions that carry it: each partition has its own three
            attribute names (the attributes map is then the same in every interleaving), and
            the row's fields and eventId are those of that last item. SpreadState computes
            every such candidate; the table is right when each row is one of its key's
            candidates.
  confined  (the earlier default) an update reuses a key first seen on its own partition: keys
            never cross partitions, so the final state is fully determined (State). Updates
            set some fields (status 60%, phone 10%, ...), and 2-5 attributes from 22 names.

    gen.py --items N [--seed S] [--kind K] --brokers HOST:PORT --topic T   produce the stream
    gen.py --items N [--kind K] --describe                           print the stream's statistics

Used by bench.py (import), with Debian's /usr/bin/python3.
"""

import argparse
import json
import random
import sys

PARTITIONS = 6
ITEMS_PER_MSG = 100
DEFAULT_SEED = 20240917
REPEAT_SHARE = 0.30
INVALID_SHARE = 0.01

FIRST = ["james", "mary", "wei", "fatima", "olga", "juan", "aiko", "pierre", "noah", "amara",
         "lucas", "sofia", "raj", "chen", "ingrid", "omar", "léa", "jürgen", "zoë", "tomás"]
LAST = ["smith", "garcia", "kim", "nguyen", "müller", "rossi", "silva", "ivanova", "haddad",
        "okafor", "tanaka", "dubois", "kowalski", "jensen", "patel", "lópez", "brown", "wang"]
DOMAINS = ["example.com", "example.org", "mail.example.net", "corp.example.io"]
STATUSES = ["new", "existing", "active", "pending", "verified", "churn-risk", "closed", "vip"]
ADDRESSES = [  # country, state, zipcode
    ("United-States", "New-York", "10001"), ("United-States", "California", "94107"),
    ("United-States", "Texas", "73301"), ("Brazil", "São Paulo", "01310-100"),
    ("Switzerland", "Zürich", "8001"), ("Germany", "Bayern", "80331"),
    ("Japan", "東京都", "100-0001"), ("France", "Île-de-France", "75001"),
    ("India", "Maharashtra", "400001"), ("Canada", "Québec", "H2X 1Y4"),
    ("Nigeria", "Lagos", "100001"), ("Poland", "Mazowieckie", "00-001"),
]
ATTR_NAMES = ["plan", "segment", "language", "channel", "tier", "source", "campaign",
              "last_product", "nps", "region", "timezone", "device", "consent_marketing",
              "consent_sms", "account_manager", "lifetime_value", "preferred_contact",
              "signup_week", "referral_code", "support_level", "churn_score", "cohort"]
ATTR_VALUES = ["gold", "silver", "bronze", "smb", "enterprise", "en", "es", "pt-BR", "de",
               "ja", "web", "ios", "android", "email", "sms", "phone", "true", "false",
               "Europe/Zürich", "America/New_York", "Asia/Tokyo", "spring-sale", "black-friday",
               "partner", "organic", "paid-search", "Ωmega", "ñandú"]

FIELDS = ("eventId", "status", "phoneNumber", "emailAddress", "userId", "addressCountry",
          "addressState", "addressZipcode")
# Row tuple: (event_id, status, phone, email, user_id, country, state, zip, attributes,
#             source_partition, source_offset, source_index)
N_FIELDS = len(FIELDS)
KINDS = ("spread", "confined")
SPREAD_NAMES = 3  # attribute names per partition in the spread stream


class Stream:
    """The deterministic stream. messages() may be iterated several times (same output)."""

    def __init__(self, n_items, seed=DEFAULT_SEED, partitions=PARTITIONS,
                 per_msg=ITEMS_PER_MSG, prefix="", kind="spread"):
        if kind not in KINDS:
            raise ValueError(f"stream kind {kind!r}: one of {', '.join(KINDS)}")
        if kind == "spread" and partitions * SPREAD_NAMES > len(ATTR_NAMES):
            raise ValueError(f"a spread stream has at most {len(ATTR_NAMES) // SPREAD_NAMES} partitions")
        self.kind = kind
        self.n_items = n_items
        self.seed = seed
        self.partitions = partitions
        self.per_msg = per_msg
        self.prefix = prefix
        self.n_messages = (n_items + per_msg - 1) // per_msg

    def new_state(self):
        """An empty expected state for this kind of stream."""
        return SpreadState() if self.kind == "spread" else State()

    def messages(self):
        """Yields (m, partition, offset, items, invalid_flags) in production order."""
        rng = random.Random(self.seed)
        P, pre = self.partitions, self.prefix
        spread = self.kind == "spread"
        # Keys (and customer ids) an update may reuse: per partition (confined), or one list
        # for all partitions (spread).
        keys = [[] for _ in range(P)] if not spread else [[]] * P
        customers = [[] for _ in range(P)] if not spread else [[]] * P
        n_conv = n_cust = item_no = 0
        for m in range(self.n_messages):
            p = m % P
            count = min(self.per_msg, self.n_items - m * self.per_msg)
            items, invalid = [], []
            for _ in range(count):
                item_no += 1
                eid = f"{pre}evt-{self.seed}-{item_no:09d}"
                r = rng.random()
                if r < INVALID_SHARE:
                    items.append(_invalid_item(rng, eid, keys[p], pre, item_no))
                    invalid.append(True)
                    continue
                invalid.append(False)
                if keys[p] and rng.random() < REPEAT_SHARE / (1 - INVALID_SHARE):
                    ks = keys[p]
                    if rng.random() < 0.7:  # hot keys: recently seen
                        k = ks[len(ks) - 1 - int(rng.random() * min(len(ks), 2000))]
                    else:
                        k = ks[int(rng.random() * len(ks))]
                    items.append(_spread_item(rng, eid, k[0], k[1], None, p) if spread
                                 else _update_item(rng, eid, k))
                else:
                    n_conv += 1
                    conv = f"{pre}conv-{n_conv:09d}"
                    cs = customers[p]
                    if cs and rng.random() < 0.25:  # a known customer, a new conversation
                        cid = cs[int(rng.random() * len(cs))]
                    else:
                        n_cust += 1
                        cid = (f"{pre}555.{rng.randrange(1000):03d}.{rng.randrange(10000):04d}-"
                               f"{rng.choice(FIRST)}{n_cust}@{rng.choice(DOMAINS)}")
                        cs.append(cid)
                    keys[p].append((cid, conv))
                    items.append(_spread_item(rng, eid, cid, conv, n_cust, p) if spread
                                 else _new_item(rng, eid, cid, conv, n_cust))
            yield m, p, m // P, items, invalid

    def payloads(self):
        """Yields (m, partition, offset, payload bytes, items, invalid_flags)."""
        dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        for m, p, off, items, invalid in self.messages():
            yield m, p, off, dumps({"items": items}).encode(), items, invalid


def _attrs(rng, lo, hi, null_share):
    names = rng.sample(ATTR_NAMES, rng.randint(lo, hi))
    out = []
    for n in names:
        if rng.random() < null_share:
            out.append({"name": n, "value": None})
        elif rng.random() < 0.3:
            out.append({"name": n, "value": str(rng.randrange(100000))})
        else:
            out.append({"name": n, "value": rng.choice(ATTR_VALUES)})
    if rng.random() < 0.01:  # a duplicate name: the last one wins
        out.append({"name": names[0], "value": rng.choice(ATTR_VALUES)})
    return out


def _new_item(rng, eid, cid, conv, n_cust):
    it = {"externalConversationId": conv, "externalCustomerId": cid, "eventId": eid}
    if rng.random() < 0.95:
        it["status"] = rng.choice(STATUSES)
    if rng.random() < 0.8:
        it["phoneNumber"] = f"(555)555-{rng.randrange(10000):04d}"
    if rng.random() < 0.7:
        it["emailAddress"] = f"{rng.choice(FIRST)}.{rng.choice(LAST)}{n_cust}@{rng.choice(DOMAINS)}"
    if rng.random() < 0.6:
        it["userId"] = f"user{rng.randrange(10**7)}"
    if rng.random() < 0.75:
        c, s, z = rng.choice(ADDRESSES)
        it["addressCountry"], it["addressState"], it["addressZipcode"] = c, s, z
    if rng.random() < 0.85:
        it["attributes"] = _attrs(rng, 2, 5, 0.0)
    return it


def _spread_item(rng, eid, cid, conv, n_cust, p):
    """An item of the spread stream: every field, two of partition p's attribute names."""
    c, s, z = rng.choice(ADDRESSES)
    n = n_cust if n_cust is not None else rng.randrange(10**6)
    names = ATTR_NAMES[p * SPREAD_NAMES:(p + 1) * SPREAD_NAMES]
    attrs = [{"name": nm, "value": None if rng.random() < 0.03 else rng.choice(ATTR_VALUES)}
             for nm in rng.sample(names, 2)]
    return {"externalConversationId": conv, "externalCustomerId": cid, "eventId": eid,
            "status": rng.choice(STATUSES), "phoneNumber": f"(555)555-{rng.randrange(10000):04d}",
            "emailAddress": f"{rng.choice(FIRST)}.{rng.choice(LAST)}{n}@{rng.choice(DOMAINS)}",
            "userId": f"user{rng.randrange(10**7)}", "addressCountry": c, "addressState": s,
            "addressZipcode": z, "attributes": attrs}


def _update_item(rng, eid, key):
    it = {"externalConversationId": key[1], "externalCustomerId": key[0], "eventId": eid}
    if rng.random() < 0.6:
        it["status"] = rng.choice(STATUSES)
    if rng.random() < 0.1:
        it["phoneNumber"] = f"(555)555-{rng.randrange(10000):04d}"
    elif rng.random() < 0.05:
        it["phoneNumber"] = None  # null keeps the stored value
    if rng.random() < 0.1:
        it["emailAddress"] = f"{rng.choice(FIRST)}.{rng.choice(LAST)}@{rng.choice(DOMAINS)}"
    if rng.random() < 0.05:
        it["userId"] = f"user{rng.randrange(10**7)}"
    if rng.random() < 0.08:
        c, s, z = rng.choice(ADDRESSES)
        it["addressCountry"], it["addressState"], it["addressZipcode"] = c, s, z
    r = rng.random()
    if r < 0.65:
        it["attributes"] = _attrs(rng, 2, 5, 0.15)
    elif r < 0.68:
        it["attributes"] = None
    elif r < 0.70:
        it["attributes"] = []
    return it


def _invalid_item(rng, eid, keys, pre, item_no):
    if keys:
        cid, conv = keys[int(rng.random() * len(keys))]
    else:
        cid, conv = f"{pre}bad-cust-{item_no}", f"{pre}bad-conv-{item_no}"
    it = {"externalConversationId": conv, "externalCustomerId": cid, "eventId": eid,
          "status": "invalid-should-not-be-stored"}
    kind = rng.randrange(6)
    if kind == 0:
        it["externalCustomerId"] = rng.choice(["", "   ", "\t"])
    elif kind == 1:
        del it["externalConversationId"]
    elif kind == 2:
        it["phoneNumber"] = "+1-555-" + "9" * 30
    elif kind == 3:
        it["status"] = 42
    elif kind == 4:
        it["attributes"] = {"plan": "gold"}
    else:
        it["attributes"] = [{"name": "plan", "value": "gold"}, {"name": "", "value": "x"}]
    return it


def _applied(old, item, p, off, idx):
    """The row tuple after applying item (docs/contract.md §4) to old (None: no row yet)."""
    row = list(old) if old else [None] * (N_FIELDS + 4)
    for i, f in enumerate(FIELDS):
        v = item.get(f)
        if isinstance(v, str):
            row[i] = v
    a = item.get("attributes")
    if isinstance(a, list):
        cur = dict(row[N_FIELDS]) if row[N_FIELDS] is not None else {}
        for e in a:  # in order: within one item the last duplicate name wins
            if e.get("value") is None:
                cur.pop(e["name"], None)
            else:
                cur[e["name"]] = e["value"]
        row[N_FIELDS] = cur
    row[N_FIELDS + 1], row[N_FIELDS + 2], row[N_FIELDS + 3] = p, off, idx
    return tuple(row)


class State:
    """The table as contract §4 defines it: key -> row tuple (see N_FIELDS above). Rows and
    attribute maps are never mutated in place, so copy() is cheap and safe."""

    def __init__(self, rows=None):
        self.rows = dict(rows.rows) if isinstance(rows, State) else {}

    def copy(self):
        return State(self)

    def apply(self, item, p, off, idx):
        key = (item["externalCustomerId"], item["externalConversationId"])
        self.rows[key] = _applied(self.rows.get(key), item, p, off, idx)

    def apply_message(self, p, off, items, invalid):
        for idx, (it, bad) in enumerate(zip(items, invalid)):
            if not bad:
                self.apply(it, p, off, idx)

    def write_copy_file(self, path):
        """Writes the rows in PostgreSQL COPY text format, columns: cid, conv, eid, status,
        phone, email, uid, country, state, zip, attrs (jsonb), part, off, idx."""
        _write_rows(path, self.rows.items())

    def write_candidates_file(self, path):
        """The rows the table may hold (the same format): here exactly the final rows."""
        self.write_copy_file(path)


class SpreadState:
    """The expected state of a spread stream. Per key and partition: the state of applying
    that partition's items of the key alone (fields of its last item, its attribute names'
    map, its source). A final row is one partition's fields and source with the union of
    every partition's attributes (their names are disjoint). rows: key -> {partition: entry},
    the partition of the key's last item in production order first."""

    def __init__(self, rows=None):
        self.rows = {k: dict(v) for k, v in rows.rows.items()} if rows else {}

    def copy(self):
        return SpreadState(self)

    def apply(self, item, p, off, idx):
        key = (item["externalCustomerId"], item["externalConversationId"])
        per = self.rows.get(key)
        if per is None:
            per = self.rows[key] = {}
        # Re-inserted: the dict's last entry is the partition of the key's latest item.
        per[p] = _applied(per.pop(p, None), item, p, off, idx)

    apply_message = State.apply_message

    @staticmethod
    def _row(per, p):
        attrs = None
        for e in per.values():
            if e[N_FIELDS] is not None:
                attrs = {**(attrs or {}), **e[N_FIELDS]}
        r = list(per[p])
        r[N_FIELDS] = attrs
        return tuple(r)

    def write_copy_file(self, path):
        """One final row per key (the interleaving of production order)."""
        _write_rows(path, ((k, self._row(per, next(reversed(per)))) for k, per in self.rows.items()))

    def write_candidates_file(self, path):
        """Every row the table may hold: for each key, one per partition carrying it."""
        _write_rows(path, ((k, self._row(per, p)) for k, per in self.rows.items() for p in per))


def _write_rows(path, rows):
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode
    with open(path, "w", encoding="utf-8") as f:
        w = f.write
        for (cid, conv), row in rows:
            cols = [_copy_text(cid), _copy_text(conv)]
            cols += [_copy_text(v) for v in row[:N_FIELDS]]
            cols.append(r"\N" if row[N_FIELDS] is None else _copy_text(dumps(row[N_FIELDS])))
            cols += [str(row[N_FIELDS + 1]), str(row[N_FIELDS + 2]), str(row[N_FIELDS + 3])]
            w("\t".join(cols))
            w("\n")


def _copy_text(v):
    if v is None:
        return r"\N"
    if "\\" in v or "\t" in v or "\n" in v or "\r" in v:
        v = v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--brokers")
    ap.add_argument("--topic")
    ap.add_argument("--kind", choices=KINDS, default="spread")
    ap.add_argument("--describe", action="store_true")
    a = ap.parse_args()
    s = Stream(a.items, a.seed, kind=a.kind)
    if a.describe or not a.topic:
        st = s.new_state()
        invalid = 0
        size = 0
        for m, p, off, payload, items, inv in s.payloads():
            invalid += sum(inv)
            size += len(payload)
            st.apply_message(p, off, items, inv)
        print(json.dumps({"items": a.items, "messages": s.n_messages, "invalid": invalid,
                          "rows": len(st.rows), "bytes": size}))
        return 0
    from confluent_kafka import Producer
    prod = Producer({"bootstrap.servers": a.brokers, "linger.ms": 50, "batch.num.messages": 100000,
                     "compression.type": "none", "enable.idempotence": True,
                     "queue.buffering.max.kbytes": 1048576})
    for m, p, off, payload, items, inv in s.payloads():
        while True:
            try:
                prod.produce(a.topic, payload, partition=p)
                break
            except BufferError:
                prod.poll(0.1)
        prod.poll(0)
    return 0 if prod.flush(120) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
