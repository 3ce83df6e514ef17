-- Schema version 4: concurrent writers on shared keys, and one row version per key and
-- transaction where that is exact (issue 10; docs/design.md "How a transaction is applied").
--
-- Real producers send a key's updates to any partition, so two connections of one worker, or
-- two workers, write the same key at the same moment. MERGE (schema 1 and 3) inserts a new
-- key without handling a concurrent insert of it: the second writer failed with 23505 on
-- customer_metadata_pkey and its whole transaction was retried. INSERT … ON CONFLICT DO
-- UPDATE resolves that itself (it waits for the other writer, then updates its row), and
-- takes its row locks in the order of its input: every writer sends its rows in one global
-- key order (bytewise), so two writers never wait for each other in a cycle (no 40P01).
--
-- ON CONFLICT checks the table's CHECK and NOT NULL constraints on the row it proposes to
-- insert before it finds the conflict, and fires BEFORE INSERT triggers for it: on a table an
-- owner gave constraints or triggers of their own, an update carrying only some fields could
-- be refused where applying it as an update (docs/contract.md §4) is fine. And merging a
-- key's items into one row skips the intermediate states an owner's rules would check
-- (issue 9). So:
--
--  * a plain table (customer_metadata_plain(): the columns, indexes and constraints of these
--    migrations, no triggers, rules, policies or inheritance of anyone else's) takes merged
--    rows, one per key (the worker composes a key's items in order: later fields win, the
--    attributes patches compose), through customer_metadata_upsert: on such a table every
--    intermediate state is accepted whenever the final one is, so one row version per key
--    is exactly the one-by-one outcome;
--  * any other table takes the generations of schema 3 (one record per item) through MERGE,
--    as before; a generation that meets a key another writer inserted first is run again
--    (in a subtransaction: the other writer has committed by then), instead of failing the
--    transaction.
--
-- The worker asks customer_metadata_plain() (every 30 s) to choose. The check is repeated
-- here, in the transaction, after a ROW EXCLUSIVE lock on the table (which the DDL that adds
-- constraints, triggers or indexes must wait for): merged rows for a table that stopped
-- being plain are refused with SQLSTATE MW001, and the worker sends generations instead.

CREATE FUNCTION customer_metadata_plain() RETURNS boolean
LANGUAGE sql STABLE AS $$
    WITH t AS (SELECT 'customer_metadata'::regclass AS oid)
    SELECT
        -- Our columns, with their types and NOT NULL, and no other column that could refuse
        -- a row (NOT NULL without a default, generated).
        (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                           || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END, ', '
                           ORDER BY a.attname COLLATE "C")
           FROM pg_attribute a, t
          WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
            AND a.attname IN ('external_customer_id', 'external_conversation_id', 'event_id',
                              'status', 'phone_number', 'email_address', 'user_id',
                              'address_country', 'address_state', 'address_zipcode',
                              'attributes', 'source_topic', 'source_partition',
                              'source_offset', 'source_index', 'created_at', 'updated_at'))
        = 'address_country text, address_state text, address_zipcode text, attributes jsonb, '
          'created_at timestamp with time zone not null, email_address text, event_id text not null, '
          'external_conversation_id text not null, external_customer_id text not null, '
          'phone_number text, source_index integer not null, source_offset bigint not null, '
          'source_partition integer not null, source_topic text not null, status text, '
          'updated_at timestamp with time zone not null, user_id text'
        AND NOT EXISTS (SELECT 1 FROM pg_attribute a, t
                         WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
                           AND a.attname NOT IN ('external_customer_id', 'external_conversation_id',
                                'event_id', 'status', 'phone_number', 'email_address', 'user_id',
                                'address_country', 'address_state', 'address_zipcode',
                                'attributes', 'source_topic', 'source_partition',
                                'source_offset', 'source_index', 'created_at', 'updated_at')
                           AND ((a.attnotnull AND NOT a.atthasdef) OR a.attgenerated <> ''))
        -- Our indexes exactly (a unique or expression index could refuse a state).
        AND (SELECT string_agg(d, '; ' ORDER BY d COLLATE "C")
               FROM (SELECT regexp_replace(pg_get_indexdef(i.indexrelid), ' ON \S+ USING ',
                                           ' ON customer_metadata USING ') AS d
                       FROM pg_index i, t WHERE i.indrelid = t.oid) x)
            = 'CREATE INDEX customer_metadata_attributes_idx ON customer_metadata USING gin '
              '(attributes jsonb_path_ops) WITH (gin_pending_list_limit=''512''); '
              'CREATE INDEX customer_metadata_customer_idx ON customer_metadata USING btree '
              '(external_customer_id); '
              'CREATE UNIQUE INDEX customer_metadata_pkey ON customer_metadata USING btree '
              '(external_customer_id, external_conversation_id)'
        AND NOT EXISTS (SELECT 1 FROM pg_constraint c, t WHERE c.conrelid = t.oid AND c.contype <> 'p')
        AND NOT EXISTS (SELECT 1 FROM pg_trigger g, t WHERE g.tgrelid = t.oid AND NOT g.tgisinternal)
        AND NOT EXISTS (SELECT 1 FROM pg_rewrite r, t WHERE r.ev_class = t.oid)
        AND NOT EXISTS (SELECT 1 FROM pg_inherits h, t WHERE h.inhparent = t.oid OR h.inhrelid = t.oid)
        AND (SELECT c.relkind = 'r' AND NOT c.relrowsecurity FROM pg_class c, t WHERE c.oid = t.oid)
$$;

-- Upserts records (customer_metadata_merge's record, at most one per key, in key order) with
-- INSERT … ON CONFLICT DO UPDATE and contract §4's merge rules. The names an attributes patch
-- removes ("adel") are not a column of the proposed row: they are looked up by the record's
-- source (partition/offset/index, unique within a transaction) in a map built only when the
-- document has removals.
CREATE FUNCTION customer_metadata_upsert(tpc text, doc json) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    dels jsonb;
BEGIN
    IF strpos(doc::text, '"adel"') > 0 THEN
        SELECT jsonb_object_agg(r.part || '/' || r.off || '/' || r.idx, r.adel) INTO dels
          FROM json_to_recordset(doc) AS r(part integer, off bigint, idx integer, adel jsonb)
         WHERE r.adel IS NOT NULL;
    END IF;
    INSERT INTO customer_metadata AS t (
        external_customer_id, external_conversation_id, event_id, status, phone_number,
        email_address, user_id, address_country, address_state, address_zipcode, attributes,
        source_topic, source_partition, source_offset, source_index)
    SELECT s.cid, s.conv, s.eid, s.status, s.phone, s.email, s.uid, s.country, s.state, s.zip,
           s.aset, tpc, s.part, s.off, s.idx
      FROM json_to_recordset(doc) AS s(
               cid text, conv text, eid text, status text, phone text, email text,
               uid text, country text, state text, zip text, aset jsonb,
               part integer, off bigint, idx integer)
    ON CONFLICT (external_customer_id, external_conversation_id) DO UPDATE SET
        event_id = EXCLUDED.event_id,
        status = COALESCE(EXCLUDED.status, t.status),
        phone_number = COALESCE(EXCLUDED.phone_number, t.phone_number),
        email_address = COALESCE(EXCLUDED.email_address, t.email_address),
        user_id = COALESCE(EXCLUDED.user_id, t.user_id),
        address_country = COALESCE(EXCLUDED.address_country, t.address_country),
        address_state = COALESCE(EXCLUDED.address_state, t.address_state),
        address_zipcode = COALESCE(EXCLUDED.address_zipcode, t.address_zipcode),
        attributes = CASE
            WHEN EXCLUDED.attributes IS NULL THEN t.attributes
            WHEN dels IS NULL THEN COALESCE(t.attributes, '{}'::jsonb) || EXCLUDED.attributes
            ELSE (COALESCE(t.attributes, '{}'::jsonb)
                  - ARRAY(SELECT jsonb_array_elements_text(
                              dels -> (EXCLUDED.source_partition || '/' || EXCLUDED.source_offset
                                       || '/' || EXCLUDED.source_index))))
                 || EXCLUDED.attributes END,
        source_topic = EXCLUDED.source_topic, source_partition = EXCLUDED.source_partition,
        source_offset = EXCLUDED.source_offset, source_index = EXCLUDED.source_index,
        updated_at = now();
END
$$;

-- One MERGE of records (at most one per key), run again when it meets a key another writer
-- inserted first: MERGE waited for that writer's transaction, which has committed, so the
-- next try sees the row and updates it. Other unique violations are the data's (an owner's
-- UNIQUE constraint) and go up.
CREATE FUNCTION customer_metadata_merge_retrying(tpc text, doc json) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    cname text;
BEGIN
    FOR attempt IN 1 .. 10 LOOP
        BEGIN
            PERFORM customer_metadata_merge(tpc, doc);
            RETURN;
        EXCEPTION WHEN unique_violation THEN
            GET STACKED DIAGNOSTICS cname = CONSTRAINT_NAME;
            IF cname IS DISTINCT FROM 'customer_metadata_pkey' OR attempt = 10 THEN
                RAISE;
            END IF;
        END;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION customer_metadata_apply(grp text, tpc text, parts integer[],
                                                   expected bigint[], nexts bigint[],
                                                   acked bigint[], doc json) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    gen json;
BEGIN
    IF json_typeof(doc -> 0) = 'object' THEN
        -- Merged rows: only for a plain table (see above), checked under a lock that keeps
        -- it plain until the transaction ends.
        LOCK TABLE customer_metadata IN ROW EXCLUSIVE MODE;
        IF NOT customer_metadata_plain() THEN
            RAISE EXCEPTION 'customer_metadata has rules of its own (constraints, triggers or '
                            'indexes): items must apply in generations'
                USING ERRCODE = 'MW001';
        END IF;
        PERFORM customer_metadata_advance_offsets(grp, tpc, parts, expected, nexts, acked);
        PERFORM customer_metadata_upsert(tpc, doc);
        RETURN;
    END IF;
    PERFORM customer_metadata_advance_offsets(grp, tpc, parts, expected, nexts, acked);
    FOR gen IN SELECT value FROM json_array_elements(doc) LOOP
        PERFORM customer_metadata_merge_retrying(tpc, gen);
    END LOOP;
END
$$;

-- The slow path (schema 1), with the same treatment of a key another writer inserted first:
-- that item is tried again instead of failing the transaction. The worker now sends the items
-- in generation order (each key's items in order, keys in key order), so its row locks are
-- taken in the global key order here too.
CREATE OR REPLACE FUNCTION customer_metadata_apply_isolated(grp text, tpc text, parts integer[],
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
            PERFORM customer_metadata_merge_retrying(tpc, json_build_array(item));
        EXCEPTION
            WHEN data_exception OR integrity_constraint_violation OR raise_exception
                 OR program_limit_exceeded THEN
                GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                                        cname = CONSTRAINT_NAME;
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
