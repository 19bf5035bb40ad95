-- Replay the batches of a conversation that were parked as dead (after the cause was
-- fixed): their messages wait again in the conversation's open buffer, due at once, ahead
-- of any message that arrived later (a batch in flight keeps going first). The parked
-- rows go; the tries start again from zero. Returns how many messages were revived.
CREATE OR REPLACE FUNCTION pgcoord.buffer_revive(p_conversation_key text)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the inbox through its indexes, whatever it held when the plan was made (020_inbox.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_parked bigint[];
    v_count integer;
    v_first timestamptz;
    v_last timestamptz;
BEGIN
    IF coalesce(octet_length(p_conversation_key), 0) NOT BETWEEN 1 AND 1024 THEN
        PERFORM pgcoord.raise_bad_argument(
            'p_conversation_key', p_conversation_key, 'a text of 1 to 1024 bytes'
        );
    END IF;

    v_parked := array(
        SELECT b.id
        FROM pgcoord.buffers AS b
        WHERE b.conversation_key = p_conversation_key AND b.dead
        FOR UPDATE
    );
    IF cardinality(v_parked) = 0 THEN
        RETURN 0;
    END IF;

    WITH revived AS (
        UPDATE pgcoord.messages AS m
        SET state = 'waiting', parked_in = NULL
        WHERE m.parked_in = any(v_parked) AND m.state = 'dead'
        RETURNING m.received_at
    )

    SELECT count(*)::integer, min(revived.received_at), max(revived.received_at)
    INTO v_count, v_first, v_last
    FROM revived;

    DELETE FROM pgcoord.buffers AS b WHERE b.id = any(v_parked);

    IF v_count > 0 THEN
        INSERT INTO pgcoord.buffers AS b (
            conversation_key, waiting, waiting_first_at, waiting_last_at, flush_at, due_at
        )
        VALUES (p_conversation_key, v_count, v_first, v_last, v_now, v_now)
        ON CONFLICT (conversation_key) WHERE NOT dead DO UPDATE
        SET waiting = b.waiting + v_count,
            waiting_first_at = least(b.waiting_first_at, v_first),
            waiting_last_at = greatest(b.waiting_last_at, v_last),
            flush_at = v_now,
            due_at = CASE WHEN b.batch_size > 0 THEN b.due_at ELSE v_now END;
    END IF;
    RETURN v_count;
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_revive(text) IS
'Put the messages of the conversation''s dead batches back in its buffer, due at once; '
'returns how many. Ranges: p_conversation_key 1 to 1024 bytes. Errors: 22004 NULL '
'argument, 22023 empty or over-long conversation key.';
