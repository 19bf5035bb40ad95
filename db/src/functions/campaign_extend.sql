-- Heartbeat: push the lease of a current claim to now + p_lease. The messages that the
-- claim returned with the same claim_token share this lease: extending one extends them
-- all (one call per token is enough). A late call (lease run out, not yet reclaimed)
-- succeeds; NULL, changing nothing, when the claim is no longer current.
CREATE OR REPLACE FUNCTION pgcoord.campaign_extend(
    p_message_id bigint,
    p_claim_token bigint,
    p_lease interval DEFAULT interval '5 minutes'
)
RETURNS timestamptz
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the queue through its indexes, whatever it held when the plan was made (030_campaigns.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();  -- for the argument check
    v_until timestamptz;
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        p_message_id IS NOT NULL
        AND p_claim_token IS NOT NULL
        AND p_lease > interval '0' AND p_lease <= interval '1 day'
        AND date_trunc('month', p_lease) = interval '0'
        AND abs(extract(DAY FROM p_lease)) <= 36500 AND v_now + p_lease > v_now
    ) IS NOT TRUE THEN
        IF p_message_id IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_message_id', p_message_id, 'a message id');
        END IF;
        IF p_claim_token IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_claim_token', p_claim_token, 'a bigint');
        END IF;
        PERFORM pgcoord.raise_bad_argument(
            'p_lease', p_lease, 'an interval of more than 0 and at most 1 day, with no months'
        );
    END IF;

    UPDATE pgcoord.campaign_queue AS q
    SET due_at = clock_timestamp() + p_lease
    WHERE
        q.token = p_claim_token AND q.claimed_by IS NOT NULL
        AND p_message_id = any(q.message_ids)
    RETURNING q.due_at INTO v_until;
    RETURN v_until;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_extend(bigint, bigint, interval) IS
'New lease end (now + p_lease) of message p_message_id''s claim p_claim_token, shared '
'by the messages claimed with that token; NULL, changing nothing, when the claim is no '
'longer current. Ranges: p_lease more than 0 and at most 1 day. Intervals with no '
'months. Errors: 22004 NULL argument, 22023 p_lease out of range.';
