-- Start a campaign run, in status 'running'. Its retry policy is fixed for its life: a
-- message is tried at most p_max_retries + 1 times; after its n-th failed try it waits
-- p_retry_backoff[n] (the last element repeats); campaign_skip_stale skips by default
-- the pending messages scheduled more than p_stale_after ago.
CREATE OR REPLACE FUNCTION pgcoord.campaign_create(
    p_name text,
    p_max_retries integer DEFAULT 3,
    p_retry_backoff interval[] DEFAULT '{5 minutes,15 minutes,30 minutes}',
    p_stale_after interval DEFAULT interval '1 hour'
)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_run_id bigint;
BEGIN
    IF coalesce(octet_length(p_name), 0) NOT BETWEEN 1 AND 1024 THEN
        PERFORM pgcoord.raise_bad_argument('p_name', p_name, 'a text of 1 to 1024 bytes');
    END IF;
    IF p_max_retries IS NULL OR p_max_retries NOT BETWEEN 0 AND 100 THEN
        PERFORM pgcoord.raise_bad_argument('p_max_retries', p_max_retries, 'from 0 to 100');
    END IF;
    IF p_retry_backoff IS NULL THEN
        PERFORM pgcoord.raise_bad_argument('p_retry_backoff', p_retry_backoff, 'given');
    END IF;
    IF
        array_ndims(p_retry_backoff) IS DISTINCT FROM 1
        OR cardinality(p_retry_backoff) > 100
        OR array_lower(p_retry_backoff, 1) <> 1
        OR NOT coalesce(
            (
                SELECT
                    bool_and(
                        coalesce(
                            b.delay >= interval '0' AND b.delay <= interval '30 days'
                            AND date_trunc('month', b.delay) = interval '0'
                            AND abs(extract(DAY FROM b.delay)) <= 36500,
                            false
                        )
                    )
                FROM unnest(p_retry_backoff) AS b (delay)
            ),
            false
        )
    THEN
        PERFORM pgcoord.raise_bad_argument(
            'p_retry_backoff', p_retry_backoff,
            'a list of 1 to 100 intervals, each from 0 to 30 days, with no months'
        );
    END IF;
    -- stored and applied later, by the calendar: none of its parts (months, days, time)
    -- may be negative, or its length could be negative on some dates ('1 mon -30 days 1
    -- second' compares as 1 second, and is almost 2 days below 0 from February 3)
    IF NOT coalesce(
        p_stale_after > interval '0' AND p_stale_after <= interval '100 years'
        AND date_trunc('month', p_stale_after) >= interval '0'
        AND date_trunc('day', p_stale_after) >= date_trunc('month', p_stale_after)
        AND p_stale_after >= date_trunc('day', p_stale_after),
        false
    ) THEN
        PERFORM pgcoord.raise_bad_argument(
            'p_stale_after', p_stale_after,
            'an interval of more than 0 and at most 100 years, with no negative part'
        );
    END IF;

    INSERT INTO pgcoord.campaign_runs AS r (
        name, max_retries, retry_backoff, stale_after, created_at, status_changed_at
    )
    VALUES (p_name, p_max_retries, p_retry_backoff, p_stale_after, v_now, v_now)
    RETURNING r.id INTO v_run_id;
    RETURN v_run_id;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_create(text, integer, interval[], interval) IS
'Start a campaign run in status running; returns its id. Ranges: p_name 1 to 1024 '
'bytes, p_max_retries 0 to 100, p_retry_backoff 1 to 100 intervals of 0 to 30 days '
'each, with no months (the last repeats), p_stale_after more than 0 and at most 100 '
'years, with no negative part. Errors: 22004 NULL argument, 22023 a value out of its '
'range.';
