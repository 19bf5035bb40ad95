-- Internal. Count a failed try of the batch held by buffer row p_buffer_id (the caller
-- holds its row lock): give the batch back, claimable again at p_retry_at, or on its
-- 5th failed try (on this one, when p_final: no retry can mend it) park it as dead. A
-- parked row keeps exactly the batch's messages; the messages waiting behind it move
-- to a fresh row of the conversation, due at their own flush. Returns true when the
-- batch was parked.
CREATE OR REPLACE FUNCTION pgcoord.buffer_fail_try(
    p_buffer_id bigint, p_error text, p_retry_at timestamptz, p_final boolean
)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
-- the inbox through its indexes, whatever it held when the plan was made (020_inbox.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_row pgcoord.buffers%ROWTYPE;
BEGIN
    UPDATE pgcoord.buffers AS b
    SET failures = b.failures + 1,
        last_error = p_error,
        claimed_by = NULL,
        claimed_until = NULL,
        due_at = p_retry_at
    WHERE b.id = p_buffer_id
    RETURNING b.* INTO v_row;

    IF v_row.failures < 5 AND NOT p_final THEN
        RETURN false;
    END IF;

    UPDATE pgcoord.buffers AS b
    SET dead = true,
        due_at = NULL,
        waiting = 0,
        waiting_first_at = NULL,
        waiting_last_at = NULL,
        flush_at = NULL
    WHERE b.id = p_buffer_id;

    UPDATE pgcoord.messages AS m
    SET state = 'dead', parked_in = p_buffer_id
    WHERE m.conversation_key = v_row.conversation_key AND m.state = 'claimed';

    IF v_row.waiting > 0 THEN
        INSERT INTO pgcoord.buffers (
            conversation_key, waiting, waiting_first_at, waiting_last_at, flush_at, due_at
        )
        VALUES (
            v_row.conversation_key, v_row.waiting, v_row.waiting_first_at,
            v_row.waiting_last_at, v_row.flush_at, v_row.flush_at
        );
    END IF;
    RETURN true;
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_fail_try(bigint, text, timestamptz, boolean) IS
'Internal. Count a failed try of a buffer row''s batch (caller holds the row lock): give it '
'back until p_retry_at, or park it as dead on the 5th (at once when p_final); true when '
'parked. Errors: none.';
