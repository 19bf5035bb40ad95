-- Store an inbound message once and buffer it for its conversation's next flush.
-- The insert settles every race on the unique (provider, provider_message_id): a
-- repeat, however concurrent, waits for the first delivery and returns its row with
-- duplicate = true, changing nothing. The first delivery then appends to the
-- conversation's buffer row (under its row lock) and schedules the flush at
-- last message + p_debounce, never later than first waiting message + p_max_wait.
-- When the message opens a window due within a second, workers listening on
-- pgcoord_buffers are told: an idle worker polls at least once a second, so it finds a
-- later flush in time without the hint. (A NOTIFY serialises commits, so sending one
-- for every new window would halve ingest throughput.)
CREATE OR REPLACE FUNCTION pgcoord.message_ingest(
    p_provider text,
    p_provider_message_id text,
    p_conversation_key text,
    p_body text,
    p_payload jsonb DEFAULT '{}',
    p_debounce interval DEFAULT interval '10 seconds',
    p_max_wait interval DEFAULT interval '60 seconds'
)
RETURNS TABLE (message_id bigint, duplicate boolean, received_at timestamptz)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_conversation_key text;
    v_body text;
    v_due_at timestamptz;
BEGIN
    -- One lean test on the hot path; the checks naming the bad argument run only when it
    -- fails. (Each IF's expression is set up again in every transaction: the number of
    -- expression nodes is what costs, not their evaluation.)
    IF (
        octet_length(p_provider) BETWEEN 1 AND 1024
        AND octet_length(p_provider_message_id) BETWEEN 1 AND 1024
        AND octet_length(p_conversation_key) BETWEEN 1 AND 1024
        AND p_body IS NOT NULL
        AND jsonb_typeof(p_payload) = 'object'
        AND p_debounce >= interval '0' AND p_debounce <= interval '1 day'
        AND date_trunc('month', p_debounce) = interval '0'
        AND abs(extract(DAY FROM p_debounce)) <= 36500
        AND p_max_wait >= interval '0' AND p_max_wait <= interval '7 days'
        AND date_trunc('month', p_max_wait) = interval '0'
        AND abs(extract(DAY FROM p_max_wait)) <= 36500
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_provider), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_provider', p_provider, 'a text of 1 to 1024 bytes');
        END IF;
        IF coalesce(octet_length(p_provider_message_id), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_provider_message_id', p_provider_message_id, 'a text of 1 to 1024 bytes'
            );
        END IF;
        IF coalesce(octet_length(p_conversation_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_conversation_key', p_conversation_key, 'a text of 1 to 1024 bytes'
            );
        END IF;
        IF p_body IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_body', p_body, 'a text');
        END IF;
        IF coalesce(jsonb_typeof(p_payload), '') <> 'object' THEN
            PERFORM pgcoord.raise_bad_argument('p_payload', p_payload, 'a JSON object');
        END IF;
        IF NOT coalesce(
            p_debounce >= interval '0' AND p_debounce <= interval '1 day'
            AND date_trunc('month', p_debounce) = interval '0'
            AND abs(extract(DAY FROM p_debounce)) <= 36500,
            false
        ) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_debounce', p_debounce, 'an interval from 0 to 1 day, with no months'
            );
        END IF;
        IF NOT coalesce(
            p_max_wait >= interval '0' AND p_max_wait <= interval '7 days'
            AND date_trunc('month', p_max_wait) = interval '0'
            AND abs(extract(DAY FROM p_max_wait)) <= 36500,
            false
        ) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_max_wait', p_max_wait, 'an interval from 0 to 7 days, with no months'
            );
        END IF;
    END IF;

    LOOP
        INSERT INTO pgcoord.messages AS m (
            provider, provider_message_id, conversation_key, body, payload, received_at
        )
        VALUES (
            p_provider, p_provider_message_id, p_conversation_key, p_body, p_payload, v_now
        )
        ON CONFLICT (provider, provider_message_id) DO NOTHING
        RETURNING m.id, false, m.received_at INTO message_id, duplicate, received_at;
        EXIT WHEN FOUND;

        -- a repeat: the first delivery has committed (the insert waited for it)
        SELECT m.id, true, m.received_at, m.conversation_key, m.body
        INTO message_id, duplicate, received_at, v_conversation_key, v_body
        FROM pgcoord.messages AS m
        WHERE m.provider = p_provider AND m.provider_message_id = p_provider_message_id;
        IF FOUND THEN
            IF v_conversation_key <> p_conversation_key OR v_body <> p_body THEN
                RAISE EXCEPTION
                    'provider message id % of provider % was already received with a different %',
                    left(p_provider_message_id, 200), left(p_provider, 200),
                    CASE WHEN v_conversation_key <> p_conversation_key
                        THEN 'conversation key' ELSE 'body' END
                    USING ERRCODE = '23505',
                    HINT = 'A provider message id must name one message.';
            END IF;
            RETURN NEXT;
            RETURN;
        END IF;
        -- the row is gone again (pruned): store this delivery as the first
    END LOOP;

    INSERT INTO pgcoord.buffers AS b (
        conversation_key, waiting, waiting_first_at, waiting_last_at, flush_at, due_at
    )
    VALUES (
        p_conversation_key, 1, v_now, v_now,
        v_now + least(p_debounce, p_max_wait), v_now + least(p_debounce, p_max_wait)
    )
    ON CONFLICT (conversation_key) WHERE NOT dead DO UPDATE
    SET waiting = b.waiting + 1,
        waiting_first_at = coalesce(b.waiting_first_at, v_now),
        waiting_last_at = greatest(b.waiting_last_at, v_now),
        flush_at = least(
            greatest(b.waiting_last_at, v_now) + p_debounce,
            coalesce(b.waiting_first_at, v_now) + p_max_wait
        ),
        -- while a claim holds the batch, the row is due when its lease ends
        due_at = CASE WHEN b.batch_size > 0 THEN b.due_at ELSE least(
            greatest(b.waiting_last_at, v_now) + p_debounce,
            coalesce(b.waiting_first_at, v_now) + p_max_wait
        ) END
    RETURNING CASE WHEN b.waiting = 1 AND b.batch_size = 0 THEN b.due_at END INTO v_due_at;

    IF v_due_at < v_now + interval '1 second' THEN
        PERFORM pg_notify('pgcoord_buffers', '');
    END IF;

    RETURN NEXT;
END;
$$;

COMMENT ON FUNCTION pgcoord.message_ingest(text, text, text, text, jsonb, interval, interval) IS
'Store an inbound message once and buffer it for its conversation; a repeat returns the '
'original message_id and received_at with duplicate = true and changes nothing. '
'Ranges: p_provider, p_provider_message_id, p_conversation_key 1 to 1024 bytes; '
'p_payload a JSON object; p_debounce 0 to 1 day; p_max_wait 0 to 7 days. Intervals with '
'no months. Errors: 22004 NULL argument, 22023 an argument out of its range (an '
'infinite interval included); 23505 a repeated provider message id with a different '
'conversation key or body.';
