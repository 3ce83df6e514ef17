-- Schema version 1: the customer_metadata table (docs/contract.md §4), the offsets the worker has
-- applied per (consumer group, topic, partition), and the items PostgreSQL rejected.
-- Applied by `metadata-worker migrate` in one transaction; see docs/design.md "The table".

CREATE TABLE customer_metadata (
    external_customer_id     text        NOT NULL,
    external_conversation_id text        NOT NULL,
    event_id                 text        NOT NULL,
    status                   text,
    phone_number             text,
    email_address            text,
    user_id                  text,
    address_country          text,
    address_state            text,
    address_zipcode          text,
    attributes               jsonb,
    source_topic             text        NOT NULL,
    source_partition         integer     NOT NULL,
    source_offset            bigint      NOT NULL,
    source_index             integer     NOT NULL,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT customer_metadata_pkey PRIMARY KEY (external_customer_id, external_conversation_id)
);

COMMENT ON TABLE customer_metadata IS
    'Customer metadata upserted by metadata-worker from Kafka, one row per (external_customer_id, external_conversation_id).';
COMMENT ON COLUMN customer_metadata.event_id IS 'eventId of the last item applied to this row (given or generated).';
COMMENT ON COLUMN customer_metadata.attributes IS 'name → value map; merged by name, a null value removes the name.';
COMMENT ON COLUMN customer_metadata.source_topic IS 'Kafka topic of the last item applied.';
COMMENT ON COLUMN customer_metadata.source_partition IS 'Kafka partition of the last item applied.';
COMMENT ON COLUMN customer_metadata.source_offset IS 'Kafka offset of the message of the last item applied.';
COMMENT ON COLUMN customer_metadata.source_index IS 'Index within its message of the last item applied.';

-- Data engineers look rows up by customer alone and by attribute.
CREATE INDEX customer_metadata_customer_idx ON customer_metadata (external_customer_id);
CREATE INDEX customer_metadata_attributes_idx ON customer_metadata USING gin (attributes jsonb_path_ops);

-- The next offset to apply per partition: written in the same transaction as the rows,
-- so a message below it is never applied twice (exactly-once into PostgreSQL).
-- acked_offset: every message below it also had its results acknowledged by Kafka (it lags
-- by about one transaction); a group without committed offsets resumes from there.
CREATE TABLE customer_metadata_offsets (
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    next_offset    bigint      NOT NULL,
    acked_offset   bigint      NOT NULL DEFAULT -1,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Items that passed validation but that PostgreSQL rejected, so that a replayed message
-- gets results identical to the first ones.
CREATE TABLE customer_metadata_rejects (
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    "offset"       bigint      NOT NULL,
    item_index     integer     NOT NULL,
    event_id       text        NOT NULL,
    error          text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition, "offset", item_index)
);

-- Applies an attributes patch (name → string|null) to a stored map.
CREATE FUNCTION customer_metadata_attrs_apply(cur jsonb, patch jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN patch IS NULL OR jsonb_typeof(patch) <> 'object' THEN cur
        ELSE (COALESCE(cur, '{}'::jsonb)
              - ARRAY(SELECT e.key FROM jsonb_each(patch) e WHERE jsonb_typeof(e.value) = 'null'))
             || jsonb_strip_nulls(patch)
    END
$$;

-- Moves the next offsets of a batch's partitions, checking that nobody else moved them
-- since the worker read them (another worker after a rebalance): a mismatch raises
-- serialization_failure, which the worker retries after reading the offsets again.
-- expected = -1 means "no row yet".
CREATE FUNCTION customer_metadata_advance_offsets(grp text, tpc text, parts integer[],
                                                  expected bigint[], nexts bigint[],
                                                  acked bigint[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    n integer;
BEGIN
    FOR i IN 1 .. COALESCE(array_length(parts, 1), 0) LOOP
        IF expected[i] < 0 THEN
            INSERT INTO customer_metadata_offsets (consumer_group, topic, partition, next_offset,
                                                   acked_offset)
            VALUES (grp, tpc, parts[i], nexts[i], acked[i]) ON CONFLICT DO NOTHING;
        ELSE
            UPDATE customer_metadata_offsets
               SET next_offset = nexts[i], acked_offset = GREATEST(acked_offset, acked[i]),
                   updated_at = now()
             WHERE consumer_group = grp AND topic = tpc AND partition = parts[i]
               AND next_offset = expected[i];
        END IF;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n <> 1 THEN
            RAISE EXCEPTION 'offset of %/% moved since it was read (expected %)', tpc, parts[i], expected[i]
                USING ERRCODE = 'serialization_failure';
        END IF;
    END LOOP;
END
$$;

-- Upserts rows (a JSON array of merged rows, at most one per key) with the merge rules of
-- contract §4: a field given replaces, a field absent or null keeps the stored value. An
-- attributes patch comes as aset (names set) and adel (names removed; null when none);
-- aset null means the item had no attributes.
CREATE FUNCTION customer_metadata_merge(tpc text, doc json) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    MERGE INTO customer_metadata t
    USING (SELECT * FROM json_to_recordset(doc) AS r(
               cid text, conv text, eid text, status text, phone text, email text,
               uid text, country text, state text, zip text, aset jsonb, adel text[],
               part integer, off bigint, idx integer)) s
       ON t.external_customer_id = s.cid AND t.external_conversation_id = s.conv
    WHEN MATCHED THEN UPDATE SET
        event_id = s.eid,
        status = COALESCE(s.status, t.status),
        phone_number = COALESCE(s.phone, t.phone_number),
        email_address = COALESCE(s.email, t.email_address),
        user_id = COALESCE(s.uid, t.user_id),
        address_country = COALESCE(s.country, t.address_country),
        address_state = COALESCE(s.state, t.address_state),
        address_zipcode = COALESCE(s.zip, t.address_zipcode),
        attributes = CASE WHEN s.aset IS NULL THEN t.attributes
                          WHEN s.adel IS NULL THEN COALESCE(t.attributes, '{}'::jsonb) || s.aset
                          ELSE (COALESCE(t.attributes, '{}'::jsonb) - s.adel) || s.aset END,
        source_topic = tpc, source_partition = s.part, source_offset = s.off,
        source_index = s.idx, updated_at = now()
    WHEN NOT MATCHED THEN INSERT (
        external_customer_id, external_conversation_id, event_id, status, phone_number,
        email_address, user_id, address_country, address_state, address_zipcode, attributes,
        source_topic, source_partition, source_offset, source_index)
    VALUES (s.cid, s.conv, s.eid, s.status, s.phone, s.email, s.uid, s.country, s.state,
            s.zip, s.aset, tpc, s.part, s.off, s.idx);
END
$$;

-- The happy path: one statement, one round trip, one transaction per batch.
CREATE FUNCTION customer_metadata_apply(grp text, tpc text, parts integer[], expected bigint[],
                                        nexts bigint[], acked bigint[], doc json) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM customer_metadata_advance_offsets(grp, tpc, parts, expected, nexts, acked);
    PERFORM customer_metadata_merge(tpc, doc);
END
$$;

-- The slow path, after PostgreSQL rejected something in a batch: the items (not merged)
-- are applied one by one, each in its own subtransaction; an item rejected for its data
-- is recorded and returned, the others are applied. Any other error aborts the batch.
CREATE FUNCTION customer_metadata_apply_isolated(grp text, tpc text, parts integer[],
                                                 expected bigint[], nexts bigint[],
                                                 acked bigint[], doc json)
RETURNS TABLE (part integer, off bigint, idx integer, error text)
LANGUAGE plpgsql AS $$
DECLARE
    item json;
    st text;
    msg text;
    cname text;
BEGIN
    PERFORM customer_metadata_advance_offsets(grp, tpc, parts, expected, nexts, acked);
    FOR item IN SELECT value FROM json_array_elements(doc) LOOP
        BEGIN
            PERFORM customer_metadata_merge(tpc, json_build_array(item));
        EXCEPTION
            WHEN data_exception OR integrity_constraint_violation OR raise_exception
                 OR program_limit_exceeded THEN
                GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                                        cname = CONSTRAINT_NAME;
                -- Two workers inserting one new key at once: not the item's fault.
                IF st = '23505' AND cname = 'customer_metadata_pkey' THEN
                    RAISE EXCEPTION 'concurrent insert of one key: %', msg
                        USING ERRCODE = 'serialization_failure';
                END IF;
                part := (item->>'part')::integer;
                off := (item->>'off')::bigint;
                idx := (item->>'idx')::integer;
                error := 'FAIL_DB_REJECTED: ERROR: ' || msg || ' (SQLSTATE ' || st || ')';
                INSERT INTO customer_metadata_rejects
                    (consumer_group, topic, partition, "offset", item_index, event_id, error)
                VALUES (grp, tpc, part, off, idx, item->>'eid', error)
                ON CONFLICT (consumer_group, topic, partition, "offset", item_index)
                DO UPDATE SET error = EXCLUDED.error;
                RETURN NEXT;
        END;
    END LOOP;
END
$$;
