-- Give a claimed message back untouched, for a worker that stops before its handler
-- finished: pending, due at once, and the try is not counted, so restarts and deploys
-- never push a message towards failing. False, changing nothing, for a stale token.
CREATE OR REPLACE FUNCTION pgcoord.campaign_release(p_message_id bigint, p_claim_token bigint)
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

    RETURN EXISTS (
        SELECT
        FROM pgcoord.campaign_give_back(
            p_message_id, p_claim_token, clock_timestamp(), interval '0', NULL,
            p_snooze => FALSE, p_final => FALSE
        )
    );
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_release(bigint, bigint) IS
'Give message p_message_id of claim p_claim_token back without spending a try, due at '
'once; false, changing nothing, for a stale token. Errors: 22004 NULL argument.';
