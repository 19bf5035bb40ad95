-- Give a claim's batch back after a failed try: it is claimable again after p_retry_in
-- with the same messages, or parked as dead after its 5th failed try (messages that
-- arrived meanwhile form the conversation's fresh buffer).
CREATE OR REPLACE FUNCTION pgcoord.buffer_fail(
    p_conversation_key text,
    p_claim_token bigint,
    p_error text,
    p_retry_in interval DEFAULT interval '60 seconds'
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
    -- the checks naming a bad argument are buffer_failed's
    RETURN pgcoord.buffer_failed(p_conversation_key, p_claim_token, p_error, p_retry_in)
    IS NOT NULL;
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_fail(text, bigint, text, interval) IS
'Give the batch of claim p_claim_token back, claimable again after p_retry_in; after '
'its 5th failed try it is parked as dead. False, changing nothing, when the claim is no '
'longer current. Ranges: p_conversation_key 1 to 1024 bytes; p_retry_in 0 to 30 days. '
'Intervals with no months. Errors: 22004 NULL argument, 22023 an argument out of its '
'range (an infinite interval included).';
