-- Finish a claim: its batch's messages are done. Messages that arrived after the claim
-- stay buffered, due at their own flush. A claim is current while no other claim has
-- replaced it, even after its lease ran out; a stale token changes nothing.
CREATE OR REPLACE FUNCTION pgcoord.buffer_complete(
    p_conversation_key text, p_claim_token bigint
)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the inbox through its indexes, whatever it held when the plan was made (020_inbox.sql)
SET enable_seqscan = off
AS $$
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_conversation_key) BETWEEN 1 AND 1024
        AND p_claim_token IS NOT NULL
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_conversation_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_conversation_key', p_conversation_key, 'a text of 1 to 1024 bytes'
            );
        END IF;
        IF p_claim_token IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_claim_token', p_claim_token, 'a bigint');
        END IF;
    END IF;

    -- nothing waits behind the batch (the common case): the row goes
    DELETE FROM pgcoord.buffers AS b
    WHERE
        b.conversation_key = p_conversation_key AND NOT b.dead
        AND b.claim_token = p_claim_token AND b.claimed_by IS NOT NULL
        AND b.waiting = 0;
    IF NOT FOUND THEN
        -- messages wait behind the batch: they are due at their own flush
        UPDATE pgcoord.buffers AS b
        SET batch_size = 0,
            batch_first_at = NULL,
            batch_last_at = NULL,
            claimed_by = NULL,
            claimed_until = NULL,
            failures = 0,
            last_error = NULL,
            due_at = b.flush_at
        WHERE
            b.conversation_key = p_conversation_key AND NOT b.dead
            AND b.claim_token = p_claim_token AND b.claimed_by IS NOT NULL;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
    END IF;

    UPDATE pgcoord.messages AS m
    SET state = 'done'
    WHERE m.conversation_key = p_conversation_key AND m.state = 'claimed';
    RETURN true;
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_complete(text, bigint) IS
'Mark the messages of the claim p_claim_token done; later messages stay buffered. False, '
'changing nothing, when the claim is no longer current. Ranges: p_conversation_key 1 to '
'1024 bytes; p_claim_token any bigint. Errors: 22004 NULL argument, 22023 empty or '
'over-long conversation key.';
