-- Put a claimed message back, pending at now + p_delay, without spending a try (the
-- provider said 429 / Retry-After: not the message's fault). A late snooze (lease run
-- out, not yet reclaimed) succeeds too. False, changing nothing, for a stale token.
CREATE OR REPLACE FUNCTION pgcoord.campaign_snooze(
    p_message_id bigint, p_claim_token bigint, p_delay interval
)
RETURNS boolean
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
        AND p_delay >= interval '0' AND p_delay <= interval '30 days'
        AND date_trunc('month', p_delay) = interval '0'
        AND abs(extract(DAY FROM p_delay)) <= 36500
    ) IS NOT TRUE THEN
        IF p_message_id IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_message_id', p_message_id, 'a message id');
        END IF;
        IF p_claim_token IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_claim_token', p_claim_token, 'a bigint');
        END IF;
        PERFORM pgcoord.raise_bad_argument(
            'p_delay', p_delay, 'an interval from 0 to 30 days, with no months'
        );
    END IF;

    RETURN EXISTS (
        SELECT
        FROM pgcoord.campaign_give_back(
            p_message_id, p_claim_token, clock_timestamp(), p_delay, NULL,
            p_snooze => TRUE, p_final => FALSE
        )
    );
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_snooze(bigint, bigint, interval) IS
'Put message p_message_id of claim p_claim_token back, pending at now + p_delay, '
'without spending a try; false, changing nothing, for a stale token. Ranges: p_delay 0 '
'to 30 days. Intervals with no months. Errors: 22004 NULL argument, 22023 p_delay out '
'of range.';
