-- Internal. The arguments of the retention functions (message_prune, campaign_prune),
-- checked in one place: p_older_than above 0 and at most 100 years, p_limit from 1 to
-- 1000000. Raises (raise_bad_argument) naming the first bad one; returns when both are
-- good. Retention is no hot path: its callers call this every time. The cutoff
-- (the clock - p_older_than) must lie in the past, and within 100 years, by the
-- calendar too: '-1 year 361 days' compares as 1 day but reaches 4 days ahead.
CREATE OR REPLACE FUNCTION pgcoord.check_prune_arguments(
    p_older_than interval, p_limit integer
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
BEGIN
    IF NOT coalesce(
        p_older_than > interval '0' AND p_older_than <= interval '100 years'
        -- its months and days alone within 100 years (raise_bad_argument.sql says why)
        AND abs(extract(YEAR FROM p_older_than)) <= 100
        AND abs(extract(DAY FROM p_older_than)) <= 36500
        AND v_now - p_older_than < v_now
        AND v_now - p_older_than >= v_now - interval '100 years',
        false
    ) THEN
        PERFORM pgcoord.raise_bad_argument(
            'p_older_than', p_older_than, 'an interval above 0 and at most 100 years'
        );
    END IF;
    IF NOT coalesce(p_limit BETWEEN 1 AND 1000000, false) THEN
        PERFORM pgcoord.raise_bad_argument('p_limit', p_limit, 'from 1 to 1000000');
    END IF;
END;
$$;

COMMENT ON FUNCTION pgcoord.check_prune_arguments(interval, integer) IS
'Internal. Raises 22004 for a NULL argument, 22023 for one out of its range (p_older_than '
'above 0 and at most 100 years, p_limit 1 to 1000000), naming it; else returns.';
