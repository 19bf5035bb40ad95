-- Change a run's status; returns the previous one. running <-> paused; running or
-- paused -> cancelled or finished; cancelled and finished are final. Setting the status
-- a run already has changes nothing and returns it (so a retried call is harmless).
-- Paused, cancelled and finished runs' messages are not claimed; their pending messages
-- stay as they are, for the record, and held ones may still be completed. Resuming a
-- run tells the workers of its first due message, as campaign_enqueue does
-- (campaign_wake).
CREATE OR REPLACE FUNCTION pgcoord.campaign_set_status(p_run_id bigint, p_status text)
RETURNS text
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the queue through its indexes, whatever it held when the plan was made (030_campaigns.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_previous text;
BEGIN
    IF p_run_id IS NULL THEN
        PERFORM pgcoord.raise_bad_argument('p_run_id', p_run_id, 'a run id');
    END IF;
    IF p_status IS NULL OR p_status NOT IN ('running', 'paused', 'cancelled', 'finished') THEN
        PERFORM pgcoord.raise_bad_argument(
            'p_status', p_status, 'one of running, paused, cancelled, finished'
        );
    END IF;

    SELECT r.status INTO v_previous
    FROM pgcoord.campaign_runs AS r
    WHERE r.id = p_run_id
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM pgcoord.raise_bad_argument('p_run_id', p_run_id, 'the id of a campaign run');
    END IF;
    IF v_previous = p_status THEN
        RETURN v_previous;
    END IF;
    IF v_previous IN ('cancelled', 'finished') THEN
        RAISE EXCEPTION 'p_status: run % is %, which is final; it cannot become %',
            p_run_id, v_previous, p_status
            USING ERRCODE = '22023';
    END IF;

    UPDATE pgcoord.campaign_runs AS r
    SET status = p_status, status_changed_at = v_now
    WHERE r.id = p_run_id;

    IF p_status = 'running' THEN
        PERFORM pgcoord.campaign_wake(
            p_run_id,
            v_now,
            (SELECT min(q.due_at) FROM pgcoord.campaign_queue AS q WHERE q.run_id = p_run_id)
        );
    END IF;
    RETURN v_previous;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_set_status(bigint, text) IS
'Set the status of run p_run_id (running, paused, cancelled, finished); returns the '
'previous status. running <-> paused, running or paused -> cancelled or finished; the '
'same status again is a no-op. Errors: 22004 NULL argument, 22023 unknown run, unknown '
'status, or a change from cancelled or finished.';
