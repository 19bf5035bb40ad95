-- A failed try of a claimed message (a late one too: lease run out, not yet reclaimed;
-- the lost lease and this fail are one try). With retries left it is pending again at
-- now + p_retry_backoff[retry number] of its run (the last element repeating), or at
-- now + p_retry_after when that is later (the provider's Retry-After); after try
-- p_max_retries + 1 it is failed for good, next_attempt_at NULL. The error text is kept
-- with the message (campaign_message_status.last_error). No row for a stale token.
CREATE OR REPLACE FUNCTION pgcoord.campaign_fail(
    p_message_id bigint,
    p_claim_token bigint,
    p_error text,
    p_retry_after interval DEFAULT NULL
)
RETURNS TABLE (status text, next_attempt_at timestamptz)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        p_message_id IS NOT NULL
        AND p_claim_token IS NOT NULL
        AND p_error IS NOT NULL
        AND (
            p_retry_after IS NULL
            OR p_retry_after >= interval '0' AND p_retry_after <= interval '30 days'
            AND date_trunc('month', p_retry_after) = interval '0'
            AND abs(extract(DAY FROM p_retry_after)) <= 36500
        )
    ) IS NOT TRUE THEN
        IF p_message_id IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_message_id', p_message_id, 'a message id');
        END IF;
        IF p_claim_token IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_claim_token', p_claim_token, 'a bigint');
        END IF;
        IF p_error IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_error', p_error, 'a text');
        END IF;
        PERFORM pgcoord.raise_bad_argument(
            'p_retry_after', p_retry_after, 'NULL or an interval from 0 to 30 days, with no months'
        );
    END IF;

    RETURN QUERY
    SELECT g.status, g.next_attempt_at
    FROM pgcoord.campaign_give_back(
        p_message_id, p_claim_token, clock_timestamp(), p_retry_after, p_error,
        p_snooze => FALSE, p_final => FALSE
    ) AS g;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_fail(bigint, bigint, text, interval) IS
'A failed try of message p_message_id of claim p_claim_token: pending again at its '
'run''s backoff (or p_retry_after when later), or failed for good after try max_retries '
'+ 1; returns the status and next_attempt_at, no row for a stale token. Ranges: '
'p_retry_after NULL or 0 to 30 days. Intervals with no months. Errors: 22004 NULL '
'argument, 22023 p_retry_after out of range.';
