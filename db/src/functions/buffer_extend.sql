-- Heartbeat: push the lease of a current claim to now + p_lease.
CREATE OR REPLACE FUNCTION pgcoord.buffer_extend(
    p_conversation_key text,
    p_claim_token bigint,
    p_lease interval DEFAULT interval '60 seconds'
)
RETURNS timestamptz
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the inbox through its indexes, whatever it held when the plan was made (020_inbox.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_until timestamptz;
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_conversation_key) BETWEEN 1 AND 1024
        AND p_claim_token IS NOT NULL
        AND p_lease > interval '0' AND p_lease <= interval '1 day'
        AND date_trunc('month', p_lease) = interval '0'
        AND abs(extract(DAY FROM p_lease)) <= 36500 AND v_now + p_lease > v_now
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_conversation_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_conversation_key', p_conversation_key, 'a text of 1 to 1024 bytes'
            );
        END IF;
        IF p_claim_token IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_claim_token', p_claim_token, 'a bigint');
        END IF;
        IF NOT coalesce(
            p_lease > interval '0' AND p_lease <= interval '1 day'
            AND date_trunc('month', p_lease) = interval '0'
            AND abs(extract(DAY FROM p_lease)) <= 36500 AND v_now + p_lease > v_now,
            false
        ) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_lease', p_lease, 'an interval above 0 and at most 1 day, with no months'
            );
        END IF;
    END IF;

    UPDATE pgcoord.buffers AS b
    SET claimed_until = v_now + p_lease,
        due_at = v_now + p_lease
    WHERE
        b.conversation_key = p_conversation_key AND NOT b.dead
        AND b.claim_token = p_claim_token AND b.claimed_by IS NOT NULL
    RETURNING b.claimed_until INTO v_until;
    RETURN v_until;
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_extend(text, bigint, interval) IS
'New lease end of claim p_claim_token; NULL when the claim is no longer current. '
'Ranges: p_conversation_key 1 to 1024 bytes; p_lease above 0 and at most 1 day. '
'Intervals with no months. Errors: 22004 NULL argument, 22023 an argument out of its '
'range (an infinite interval included).';
