-- A failed try that no retry can mend (the recipient does not exist, the provider
-- refused the content): the claimed message ends 'failed' at once with p_error kept,
-- whatever retries its run has left. It counts as a try, like campaign_fail, and a late
-- one (lease run out, not yet reclaimed) succeeds too. False, changing nothing, for a
-- stale token. Beyond the contract.
CREATE OR REPLACE FUNCTION pgcoord.campaign_fail_for_good(
    p_message_id bigint, p_claim_token bigint, p_error text
)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_message_id IS NULL THEN
        PERFORM pgcoord.raise_bad_argument('p_message_id', p_message_id, 'a message id');
    END IF;
    IF p_claim_token IS NULL THEN
        PERFORM pgcoord.raise_bad_argument('p_claim_token', p_claim_token, 'a bigint');
    END IF;
    IF p_error IS NULL THEN
        PERFORM pgcoord.raise_bad_argument('p_error', p_error, 'a text');
    END IF;

    RETURN EXISTS (
        SELECT
        FROM pgcoord.campaign_give_back(
            p_message_id, p_claim_token, clock_timestamp(), NULL, p_error,
            p_snooze => FALSE, p_final => TRUE
        )
    );
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_fail_for_good(bigint, bigint, text) IS
'A failed try of message p_message_id of claim p_claim_token that no retry can mend: '
'failed for good at once with p_error kept, whatever retries are left; true, or false '
'and nothing changed for a stale token. Beyond the contract. Errors: 22004 NULL argument.';
