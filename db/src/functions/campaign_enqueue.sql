-- Add messages to a run: p_items is a JSON array of {"recipient": text, "payload":
-- object (default {}), "scheduled_at": timestamptz as a JSON string (default the server
-- clock at the call)}. All or nothing: the first malformed item (counted from 0) raises,
-- naming its index and field, before anything is stored. A field that is present must
-- have its type (a JSON null is no payload), and an unknown field is refused (a typo in
-- "scheduled_at" must not send at once). A paused run takes messages (they wait for it);
-- a cancelled or finished one refuses them. Messages scheduled at the same instant are
-- stored in groups of up to 15 (see 030_campaigns.sql); enqueue order is claim order
-- among them. When the run is running, the workers are told once of the first message
-- enqueued (campaign_wake: when it is due within 5 seconds, the longest an idle
-- campaign worker sleeps), unless its workers have said they are busy and none is idle
-- (campaign_notify_wanted): busy workers find the messages by their next claims, and
-- enqueues that notify no one never take turns at the commit.
CREATE OR REPLACE FUNCTION pgcoord.campaign_enqueue(p_run_id bigint, p_items jsonb)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_count integer;
    v_index bigint;
    v_field text;
    v_item jsonb;
    v_status text;
    v_first timestamptz;
    v_low bigint;
    v_high bigint;
    v_notify boolean := FALSE;
BEGIN
    IF p_run_id IS NULL THEN
        PERFORM pgcoord.raise_bad_argument('p_run_id', p_run_id, 'a run id');
    END IF;
    IF coalesce(jsonb_typeof(p_items), '') <> 'array' THEN
        PERFORM pgcoord.raise_bad_argument('p_items', p_items, 'a JSON array of items');
    END IF;

    -- the first item of the wrong shape, without casting anything
    SELECT s.n, s.field, s.item INTO v_index, v_field, v_item
    FROM (
        SELECT
            t.n - 1 AS n,
            t.item,
            CASE
                WHEN jsonb_typeof(t.item) <> 'object' THEN ''
                WHEN t.item - '{recipient,payload,scheduled_at}'::text[] <> '{}'::jsonb
                    THEN 'unknown'
                WHEN
                    coalesce(jsonb_typeof(t.item -> 'recipient'), '') <> 'string'
                    OR octet_length(t.item ->> 'recipient') NOT BETWEEN 1 AND 1024
                    THEN 'recipient'
                WHEN jsonb_typeof(t.item -> 'payload') <> 'object' THEN 'payload'
                WHEN jsonb_typeof(t.item -> 'scheduled_at') <> 'string' THEN 'scheduled_at'
            END AS field
        FROM jsonb_array_elements(p_items) WITH ORDINALITY AS t (item, n)
    ) AS s
    WHERE s.field IS NOT NULL
    ORDER BY s.n
    LIMIT 1;
    IF NOT FOUND AND p_items @? '$[*].scheduled_at' THEN
        -- every scheduled_at is a string: the first that is no timestamp a client can
        -- read (years 1 to 9999; a block with an exception handler costs a
        -- subtransaction, so only when some item has one)
        BEGIN
            SELECT t.n - 1, t.item INTO v_index, v_item
            FROM jsonb_array_elements(p_items) WITH ORDINALITY AS t (item, n)
            WHERE
                t.item ? 'scheduled_at'
                AND NOT (
                    (t.item ->> 'scheduled_at')::timestamptz
                    >= timestamptz '0001-01-01 00:00:00+00'
                    AND (t.item ->> 'scheduled_at')::timestamptz
                    < timestamptz '10000-01-01 00:00:00+00'
                )
            ORDER BY t.n
            LIMIT 1;
        EXCEPTION
            WHEN data_exception THEN
                -- a text that is no timestamp at all: find it one item at a time
                v_index := NULL;
                FOR v_index, v_item IN
                    SELECT t.n - 1, t.item
                    FROM jsonb_array_elements(p_items) WITH ORDINALITY AS t (item, n)
                    WHERE t.item ? 'scheduled_at'
                    ORDER BY t.n
                LOOP
                    BEGIN
                        PERFORM (v_item ->> 'scheduled_at')::timestamptz;
                    EXCEPTION
                        WHEN data_exception THEN EXIT;
                    END;
                END LOOP;
        END;
        IF v_item IS NOT NULL THEN
            v_field := 'scheduled_at';
        END IF;
    END IF;
    IF v_field IS NOT NULL THEN
        RAISE EXCEPTION '%', CASE v_field
            WHEN '' THEN format('p_items[%s] must be a JSON object, got %s',
                v_index, left(v_item::text, 80))
            WHEN 'unknown' THEN format(
                'p_items[%s] has an unknown field %s (the fields are recipient, payload, '
                'scheduled_at)', v_index, left((
                    SELECT string_agg(k.key, ', ')
                    FROM jsonb_object_keys(v_item - '{recipient,payload,scheduled_at}'::text[]) AS k (key)
                ), 80))
            WHEN 'recipient' THEN format(
                'p_items[%s].recipient must be a JSON string of 1 to 1024 bytes, got %s',
                v_index, left(coalesce((v_item -> 'recipient')::text, 'nothing'), 80))
            WHEN 'payload' THEN format(
                'p_items[%s].payload must be a JSON object, got %s',
                v_index, left((v_item -> 'payload')::text, 80))
            ELSE format(
                'p_items[%s].scheduled_at must be a timestamp with time zone in the years 1 '
                'to 9999, as a JSON string, got %s',
                v_index, left((v_item -> 'scheduled_at')::text, 80))
        END
            USING ERRCODE = '22023';
    END IF;

    -- the run's row, share-locked: a concurrent change of its status (which locks it for
    -- update) waits for this call or this call for it, while enqueues into one run never
    -- wait for each other (an exclusive lock held to the commit made them take turns,
    -- one commit at a time)
    SELECT r.status INTO v_status
    FROM pgcoord.campaign_runs AS r
    WHERE r.id = p_run_id
    FOR SHARE;
    IF NOT FOUND THEN
        PERFORM pgcoord.raise_bad_argument('p_run_id', p_run_id, 'the id of a campaign run');
    END IF;
    IF v_status IN ('cancelled', 'finished') THEN
        RAISE EXCEPTION 'p_run_id: run % is %; it takes no more messages', p_run_id, v_status
            USING ERRCODE = '22023';
    END IF;
    v_count := jsonb_array_length(p_items);
    IF v_count = 0 THEN
        RETURN 0;
    END IF;
    IF v_status = 'running' THEN
        v_notify := pgcoord.campaign_notify_wanted(p_run_id);
    END IF;

    IF v_count = 1 THEN
        -- one message (a producer handing messages over as they come): a group of its
        -- own, by two plain inserts (half the work of the statement below)
        INSERT INTO pgcoord.campaign_messages AS m (run_id, recipient, payload, scheduled_at)
        VALUES (
            p_run_id,
            p_items -> 0 ->> 'recipient',
            coalesce(p_items -> 0 -> 'payload', '{}'::jsonb),
            coalesce((p_items -> 0 ->> 'scheduled_at')::timestamptz, v_now)
        )
        RETURNING m.id, m.id, m.scheduled_at INTO v_low, v_high, v_first;
        INSERT INTO pgcoord.campaign_queue (token, run_id, due_at, scheduled_at, message_ids)
        VALUES (nextval('pgcoord.campaign_token'), p_run_id, v_first, v_first, ARRAY[v_low]);
    ELSE
        -- messages in item order (the ids grow with it); then groups of up to 15 messages
        -- scheduled at the same instant
        WITH stored AS (
            INSERT INTO pgcoord.campaign_messages AS m (run_id, recipient, payload, scheduled_at)
            SELECT
                p_run_id,
                t.item ->> 'recipient',
                coalesce(t.item -> 'payload', '{}'::jsonb),
                coalesce((t.item ->> 'scheduled_at')::timestamptz, v_now)
            FROM jsonb_array_elements(p_items) AS t (item)
            RETURNING m.id, m.scheduled_at
        ),

        grouped AS (
            SELECT
                s.scheduled_at,
                array_agg(s.id ORDER BY s.id) AS ids
            FROM (
                SELECT
                    stored.id,
                    stored.scheduled_at,
                    (row_number() OVER (PARTITION BY stored.scheduled_at ORDER BY stored.id) - 1)
                    / 15 AS part
                FROM stored
            ) AS s
            GROUP BY s.scheduled_at, s.part
        ),

        queued AS (
            INSERT INTO pgcoord.campaign_queue AS q (token, run_id, due_at, scheduled_at, message_ids)
            SELECT nextval('pgcoord.campaign_token'), p_run_id, g.scheduled_at, g.scheduled_at, g.ids
            FROM grouped AS g
            ORDER BY g.scheduled_at, g.ids[1]
            RETURNING q.due_at
        )

        SELECT (SELECT min(queued.due_at) FROM queued), ids.low, ids.high
        INTO v_first, v_low, v_high
        FROM (SELECT min(stored.id) AS low, max(stored.id) AS high FROM stored) AS ids;
    END IF;

    INSERT INTO pgcoord.campaign_enqueues (run_id, first_message_id, last_message_id, messages)
    VALUES (p_run_id, v_low, v_high, v_count);

    IF v_notify THEN
        PERFORM pgcoord.campaign_wake(p_run_id, v_now, v_first);
    END IF;
    RETURN v_count;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_enqueue(bigint, jsonb) IS
'Enqueue the items of the JSON array p_items ({"recipient": 1 to 1024 bytes, "payload": '
'object, default {}, "scheduled_at": timestamptz string in the years 1 to 9999, default '
'now}) into run p_run_id, all or nothing; returns how many. Errors: 22004 NULL argument, '
'22023 p_items not an array, a malformed item (named by its index from 0 and its '
'field), unknown run, or a cancelled or finished run.';
