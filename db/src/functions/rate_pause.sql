-- Pause every caller of p_key (a provider answered 429 with Retry-After): until the
-- returned time, rate_acquire refuses with the remaining pause. A pause never shortens
-- the one in force (the later end wins); the tokens are left as they are.
CREATE OR REPLACE FUNCTION pgcoord.rate_pause(p_key text, p_for interval)
RETURNS timestamptz
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- its table through its key, whatever it held when the plan was made (040_rates.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_until timestamptz;
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_key) BETWEEN 1 AND 1024
        AND p_for >= interval '0' AND p_for <= interval '1 day'
        AND date_trunc('month', p_for) = interval '0'
        AND abs(extract(DAY FROM p_for)) <= 36500
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
        END IF;
        IF NOT coalesce(
            p_for >= interval '0' AND p_for <= interval '1 day'
            AND date_trunc('month', p_for) = interval '0'
            AND abs(extract(DAY FROM p_for)) <= 36500,
            false
        ) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_for', p_for, 'an interval from 0 to 1 day, with no months'
            );
        END IF;
    END IF;

    INSERT INTO pgcoord.rates AS r (key, paused_until, updated_at)
    VALUES (p_key, v_now + p_for, v_now)
    ON CONFLICT (key) DO UPDATE
    SET paused_until = greatest(r.paused_until, v_now + p_for),
        updated_at = greatest(r.updated_at, v_now)
    RETURNING r.paused_until INTO v_until;
    RETURN v_until;
END;
$$;

COMMENT ON FUNCTION pgcoord.rate_pause(text, interval) IS
'Make every rate_acquire of p_key wait until the returned time: now + p_for, or the end '
'of the pause in force when that is later (a pause is never shortened). Ranges: p_key '
'1 to 1024 bytes; p_for 0 to 1 day. Intervals with no months. Errors: 22004 NULL '
'argument, 22023 an argument out of its range (a negative or infinite p_for included).';
