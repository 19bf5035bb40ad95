-- Internal. A failed try of the batch of claim p_claim_token of p_conversation_key
-- (buffer_fail_try: back at p_retry_at, or parked on its 5th try, or at once when
-- p_final): true when it was parked as dead, false when it is back; NULL, changing
-- nothing, when the claim is no longer current. A late one (lease run out, not yet
-- reclaimed) still holds the claim.
CREATE OR REPLACE FUNCTION pgcoord.buffer_fail_claim(
    p_conversation_key text,
    p_claim_token bigint,
    p_error text,
    p_retry_at timestamptz,
    p_final boolean
)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
-- the inbox through its indexes, whatever it held when the plan was made (020_inbox.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_buffer_id bigint;
BEGIN
    SELECT b.id INTO v_buffer_id
    FROM pgcoord.buffers AS b
    WHERE
        b.conversation_key = p_conversation_key AND NOT b.dead
        AND b.claim_token = p_claim_token AND b.claimed_by IS NOT NULL
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    RETURN pgcoord.buffer_fail_try(v_buffer_id, p_error, p_retry_at, p_final);
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_fail_claim(text, bigint, text, timestamptz, boolean) IS
'Internal. A failed try of the batch of claim p_claim_token (back at p_retry_at, parked '
'on its 5th, or at once when p_final): true when parked, false when back; NULL, '
'changing nothing, when the claim is not current. Errors: none.';
