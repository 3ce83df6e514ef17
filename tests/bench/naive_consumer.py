"""The "naive" contender of the benchmark: the consumer a team would write in an afternoon.

confluent_kafka Consumer; for each message, for each item: validate it, then one
INSERT ... ON CONFLICT DO UPDATE (COALESCE merges, a jsonb merge of the attributes), one round
trip per item; commit the database transaction and then the Kafka offset (synchronously) per
message; produce one result per item. Same merge rules as the worker (docs/contract.md §4).

    naive_consumer.py --brokers B --topic T --group G --results-topic R --dsn URL
                      --total-messages M [--max-items N]

Stops after N items (rounded up to whole messages) or after M messages, flushes the results,
and prints a JSON summary on stdout: items, messages, per-partition last offset applied,
seconds from start to first message and to done.
"""

import argparse
import json
import sys
import time

import psycopg2
from confluent_kafka import Consumer, Producer

T0 = time.monotonic()

FIELDS = [  # JSON name, column, max length, required
    ("externalConversationId", "external_conversation_id", 256, True),
    ("externalCustomerId", "external_customer_id", 256, True),
    ("eventId", "event_id", 256, False),
    ("status", "status", 256, False),
    ("phoneNumber", "phone_number", 32, False),
    ("emailAddress", "email_address", 320, False),
    ("userId", "user_id", 256, False),
    ("addressCountry", "address_country", 128, False),
    ("addressState", "address_state", 128, False),
    ("addressZipcode", "address_zipcode", 16, False),
]

UPSERT = """
INSERT INTO customer_metadata AS t
    (external_customer_id, external_conversation_id, event_id, status, phone_number,
     email_address, user_id, address_country, address_state, address_zipcode, attributes,
     source_topic, source_partition, source_offset, source_index)
VALUES (%(cid)s, %(conv)s, %(eid)s, %(status)s, %(phone)s, %(email)s, %(uid)s, %(country)s,
        %(state)s, %(zip)s, %(attrs)s::jsonb, %(topic)s, %(part)s, %(off)s, %(idx)s)
ON CONFLICT (external_customer_id, external_conversation_id) DO UPDATE SET
    event_id = EXCLUDED.event_id,
    status = COALESCE(EXCLUDED.status, t.status),
    phone_number = COALESCE(EXCLUDED.phone_number, t.phone_number),
    email_address = COALESCE(EXCLUDED.email_address, t.email_address),
    user_id = COALESCE(EXCLUDED.user_id, t.user_id),
    address_country = COALESCE(EXCLUDED.address_country, t.address_country),
    address_state = COALESCE(EXCLUDED.address_state, t.address_state),
    address_zipcode = COALESCE(EXCLUDED.address_zipcode, t.address_zipcode),
    attributes = CASE WHEN %(has_attrs)s
                      THEN (COALESCE(t.attributes, '{}'::jsonb) - %(removed)s::text[])
                           || EXCLUDED.attributes
                      ELSE t.attributes END,
    source_topic = EXCLUDED.source_topic,
    source_partition = EXCLUDED.source_partition,
    source_offset = EXCLUDED.source_offset,
    source_index = EXCLUDED.source_index,
    updated_at = now()
"""


def validate(item):
    """Returns an error string or None (the rules of contract §3, simplified where the
    benchmark's stream does not go)."""
    if not isinstance(item, dict):
        return "FAIL_BAD_PARAMS: ERROR: item must be an object"
    for name, _col, maxlen, required in FIELDS:
        v = item.get(name)
        if v is None:
            if required:
                return f"FAIL_BAD_PARAMS: ERROR: {name} cannot be blank"
            continue
        if not isinstance(v, str):
            return f"FAIL_BAD_PARAMS: ERROR: {name} must be a string"
        if (required or name == "eventId") and not v.strip():
            return f"FAIL_BAD_PARAMS: ERROR: {name} cannot be blank"
        if "\x00" in v:
            return f"FAIL_BAD_PARAMS: ERROR: {name} cannot contain U+0000"
        if len(v) > maxlen:
            return f"FAIL_BAD_PARAMS: ERROR: {name} exceeds maximum length of {maxlen}"
    a = item.get("attributes")
    if a is None:
        return None
    if not isinstance(a, list):
        return "FAIL_BAD_PARAMS: ERROR: attributes must be an array or null"
    for i, e in enumerate(a):
        if not isinstance(e, dict):
            return f"FAIL_BAD_PARAMS: ERROR: attributes[{i}] must be an object"
        n, v = e.get("name"), e.get("value")
        if not isinstance(n, str):
            return f"FAIL_BAD_PARAMS: ERROR: attributes[{i}].name must be a string"
        if not n:
            return f"FAIL_BAD_PARAMS: ERROR: attributes[{i}].name cannot be empty"
        if len(n) > 256:
            return f"FAIL_BAD_PARAMS: ERROR: attributes[{i}].name exceeds maximum length of 256"
        if v is not None and not isinstance(v, str):
            return f"FAIL_BAD_PARAMS: ERROR: attributes[{i}].value must be a string or null"
        if v is not None and len(v) > 4096:
            return f"FAIL_BAD_PARAMS: ERROR: attributes[{i}].value exceeds maximum length of 4096"
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--results-topic", required=True)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--total-messages", type=int, required=True)
    ap.add_argument("--max-items", type=int, default=0)
    a = ap.parse_args()

    db = psycopg2.connect(a.dsn)
    consumer = Consumer({"bootstrap.servers": a.brokers, "group.id": a.group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    producer = Producer({"bootstrap.servers": a.brokers, "enable.idempotence": True})
    consumer.subscribe([a.topic])
    failed = []

    def on_delivery(err, _msg):
        if err:
            failed.append(str(err))

    items_done = msgs_done = 0
    last = {}
    t_first = None
    while msgs_done < a.total_messages and not (a.max_items and items_done >= a.max_items):
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            print(f"naive: consumer error {msg.error()}", file=sys.stderr)
            continue
        if t_first is None:
            t_first = time.monotonic()
        part, off = msg.partition(), msg.offset()
        items = json.loads(msg.value())["items"]
        errors = [validate(it) for it in items]
        with db.cursor() as cur:
            for idx, (it, err) in enumerate(zip(items, errors)):
                if err:
                    continue
                attrs = it.get("attributes")
                final = {e["name"]: e.get("value") for e in attrs or ()}  # last one wins
                patch = {n: v for n, v in final.items() if v is not None}
                removed = [n for n, v in final.items() if v is None]
                cur.execute(UPSERT, {
                    "cid": it["externalCustomerId"], "conv": it["externalConversationId"],
                    "eid": it["eventId"], "status": it.get("status"),
                    "phone": it.get("phoneNumber"), "email": it.get("emailAddress"),
                    "uid": it.get("userId"), "country": it.get("addressCountry"),
                    "state": it.get("addressState"), "zip": it.get("addressZipcode"),
                    "attrs": json.dumps(patch) if attrs is not None else None,
                    "has_attrs": attrs is not None, "removed": removed,
                    "topic": a.topic, "part": part, "off": off, "idx": idx})
        db.commit()
        n_err = sum(1 for e in errors if e)
        for idx, (it, err) in enumerate(zip(items, errors)):
            res = {"eventId": it.get("eventId"), "error": err or "",
                   "externalCustomerId": it.get("externalCustomerId"),
                   "externalConversationId": it.get("externalConversationId"),
                   "source": {"topic": a.topic, "partition": part, "offset": off, "index": idx},
                   "batch": {"itemCount": len(items), "errorCount": n_err}}
            while True:
                try:
                    producer.produce(a.results_topic, json.dumps(res), key=it.get("eventId"),
                                     on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        consumer.commit(message=msg, asynchronous=False)
        items_done += len(items)
        msgs_done += 1
        last[part] = max(last.get(part, -1), off)
    left = producer.flush(60)
    consumer.close()
    db.close()
    t_done = time.monotonic()
    print(json.dumps({"items": items_done, "messages": msgs_done,
                      "last_offsets": {str(k): v for k, v in sorted(last.items())},
                      "first_message_s": (t_first or t_done) - T0, "done_s": t_done - T0,
                      "undelivered": left, "delivery_failures": len(failed)}))
    return 0 if left == 0 and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
