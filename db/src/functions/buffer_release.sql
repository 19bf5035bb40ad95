-- Give a claim back untouched, for a worker that stops before its handler finished: the
-- batch is claimable again at once and the try is not counted (like a campaign snooze),
-- so restarts and deploys never push a batch towards being parked as dead.
CREATE OR REPLACE FUNCTION pgcoord.buffer_release(
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
DECLARE
    v_now constant timestamptz := clock_timestamp();
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

    UPDATE pgcoord.buffers AS b
    SET claimed_by = NULL,
        claimed_until = NULL,
        due_at = v_now
    WHERE
        b.conversation_key = p_conversation_key AND NOT b.dead
        AND b.claim_token = p_claim_token AND b.claimed_by IS NOT NULL;
    RETURN FOUND;
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_release(text, bigint) IS
'Give the batch of claim p_claim_token back without counting a failed try; claimable '
'again at once. False, changing nothing, when the claim is no longer current. Ranges: '
'p_conversation_key 1 to 1024 bytes; p_claim_token any bigint. Errors: 22004 NULL '
'argument, 22023 empty or over-long conversation key.';
