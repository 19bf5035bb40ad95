-- A failed try of a claim's batch that no retry can mend (the customer blocked the
-- number, the reply window has closed): the batch is parked as dead at once with p_error
-- kept, whatever tries are left, as on its 5th failed try (messages that arrived
-- meanwhile form the conversation's fresh buffer; buffer_revive brings it back). A late
-- one (lease run out, not yet reclaimed) succeeds too. False, changing nothing, when the
-- claim is no longer current. Beyond the contract.
CREATE OR REPLACE FUNCTION pgcoord.buffer_fail_for_good(
    p_conversation_key text, p_claim_token bigint, p_error text
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
    IF coalesce(octet_length(p_conversation_key), 0) NOT BETWEEN 1 AND 1024 THEN
        PERFORM pgcoord.raise_bad_argument(
            'p_conversation_key', p_conversation_key, 'a text of 1 to 1024 bytes'
        );
    END IF;
    IF p_claim_token IS NULL THEN
        PERFORM pgcoord.raise_bad_argument('p_claim_token', p_claim_token, 'a bigint');
    END IF;
    IF p_error IS NULL THEN
        PERFORM pgcoord.raise_bad_argument('p_error', p_error, 'a text');
    END IF;

    RETURN pgcoord.buffer_fail_claim(
        p_conversation_key, p_claim_token, p_error, clock_timestamp(), p_final => TRUE
    ) IS NOT NULL;
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_fail_for_good(text, bigint, text) IS
'A failed try of the batch of claim p_claim_token that no retry can mend: parked as dead '
'at once with p_error kept; true, or false and nothing changed when the claim is no '
'longer current. Beyond the contract. Ranges: p_conversation_key 1 to 1024 bytes. '
'Errors: 22004 NULL argument, 22023 empty or over-long key.';
