-- buffer_fail, answering how the try ended: true when the batch was parked as dead
-- (its 5th failed try), false when it is back, claimable after p_retry_in; NULL, changing
-- nothing, when the claim is no longer current. The worker's fail, so that what makes a
-- batch dead is said here only. Beyond the contract.
CREATE OR REPLACE FUNCTION pgcoord.buffer_failed(
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
DECLARE
    v_now constant timestamptz := clock_timestamp();
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_conversation_key) BETWEEN 1 AND 1024
        AND p_claim_token IS NOT NULL
        AND p_error IS NOT NULL
        AND p_retry_in >= interval '0' AND p_retry_in <= interval '30 days'
        AND date_trunc('month', p_retry_in) = interval '0'
        AND abs(extract(DAY FROM p_retry_in)) <= 36500
    ) IS NOT TRUE THEN
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
        IF NOT coalesce(
            p_retry_in >= interval '0' AND p_retry_in <= interval '30 days'
            AND date_trunc('month', p_retry_in) = interval '0'
            AND abs(extract(DAY FROM p_retry_in)) <= 36500,
            false
        ) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_retry_in', p_retry_in, 'an interval from 0 to 30 days, with no months'
            );
        END IF;
    END IF;

    RETURN pgcoord.buffer_fail_claim(
        p_conversation_key, p_claim_token, p_error, v_now + p_retry_in, p_final => FALSE
    );
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_failed(text, bigint, text, interval) IS
'buffer_fail, answering true when the batch was parked as dead (its 5th failed try), '
'false when it is back; NULL, changing nothing, when the claim is no longer current. '
'Beyond the contract. Ranges: p_conversation_key 1 to 1024 bytes; p_retry_in 0 to 30 '
'days. Intervals with no months. Errors: 22004 NULL argument, 22023 an argument out of '
'its range (an infinite interval included).';
