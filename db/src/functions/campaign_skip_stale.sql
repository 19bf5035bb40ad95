-- Mark 'skipped' the pending messages of running runs scheduled (as enqueued) more than
-- p_older_than ago, by default each run's stale_after; returns how many. Held messages
-- are left to their claim, and a message waiting for a retry whose scheduled_at is that
-- old is skipped too. Runs are visited in id order and their skipped counters updated
-- in that order, so concurrent calls cannot deadlock; groups a claim holds at that
-- moment are passed over (SKIP LOCKED).
CREATE OR REPLACE FUNCTION pgcoord.campaign_skip_stale(p_older_than interval DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the queue through its indexes, whatever it held when the plan was made (030_campaigns.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_run record;
    v_skipped integer;
    v_total integer := 0;
BEGIN
    IF NOT coalesce(
        p_older_than IS NULL
        OR p_older_than >= interval '0' AND p_older_than <= interval '100 years'
        -- the cutoff lies in the past, and within 100 years, by the calendar too (the
        -- comparison counts a month as 30 days, the subtraction does not)
        -- its months and days alone within 100 years (raise_bad_argument.sql says why)
        AND abs(extract(YEAR FROM p_older_than)) <= 100
        AND abs(extract(DAY FROM p_older_than)) <= 36500
        AND v_now - p_older_than <= v_now
        AND v_now - p_older_than >= v_now - interval '100 years',
        false
    ) THEN
        PERFORM pgcoord.raise_bad_argument(
            'p_older_than', p_older_than, 'NULL or an interval from 0 to 100 years'
        );
    END IF;

    FOR v_run IN
        SELECT r.id, v_now - coalesce(p_older_than, r.stale_after) AS cutoff
        FROM pgcoord.campaign_runs AS r
        WHERE r.status = 'running'
        ORDER BY r.id
    LOOP
        WITH stale AS (
            SELECT q.token
            FROM pgcoord.campaign_queue AS q
            WHERE
                q.run_id = v_run.id AND q.claimed_by IS NULL
                AND q.scheduled_at < v_run.cutoff
            FOR UPDATE SKIP LOCKED
        ),

        gone AS (
            DELETE FROM pgcoord.campaign_queue AS q
            USING stale
            WHERE q.token = stale.token
            RETURNING q.run_id, q.tries, q.snoozes, q.last_error, q.message_ids
        ),

        skipped AS (
            INSERT INTO pgcoord.campaign_outcomes (
                message_id, run_id, status, finished_at, attempts, snoozes, error
            )
            SELECT m.id, gone.run_id, 'skipped', v_now, gone.tries, gone.snoozes, gone.last_error
            FROM gone CROSS JOIN LATERAL unnest(gone.message_ids) AS m (id)
            RETURNING 1
        )

        SELECT count(*)::integer INTO v_skipped FROM skipped;
        IF v_skipped > 0 THEN
            UPDATE pgcoord.campaign_runs AS r
            SET skipped = r.skipped + v_skipped
            WHERE r.id = v_run.id;
            v_total := v_total + v_skipped;
        END IF;
    END LOOP;
    RETURN v_total;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_skip_stale(interval) IS
'Mark skipped the pending messages of running runs scheduled more than p_older_than ago '
'(NULL: each run''s stale_after); returns how many. Ranges: p_older_than NULL or 0 to 100 '
'years. Errors: 22023 p_older_than out of range.';
