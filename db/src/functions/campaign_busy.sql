-- A campaign worker whose claims come back full, on its LISTEN connection: end its idle
-- mark (campaign_idle) and say that a worker of run p_run_id (of every run when NULL)
-- is busy, so that enqueues into the run stop notifying while no worker of it is idle.
-- One worker of a run says so at a time (an exclusive session lock, tried without
-- waiting): true when this session now holds it, false when another does (this one
-- then holds no mark; try again later, as the one holding it may go idle or away). An
-- enqueue that finds no mark at all notifies, as for a listener that never marks.
CREATE OR REPLACE FUNCTION pgcoord.campaign_busy(p_run_id bigint DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_mark constant text := 'busy ' || coalesce(p_run_id::text, 'all');
    v_key constant integer[] := pgcoord.campaign_mark_key('busy', p_run_id);
    v_held boolean;
BEGIN
    IF coalesce(current_setting('pgcoord.campaign_mark', TRUE), '') = v_mark THEN
        RETURN TRUE;
    END IF;
    PERFORM pgcoord.campaign_unmark();
    v_held := pg_try_advisory_lock(v_key[1], v_key[2]);
    IF v_held THEN
        PERFORM set_config('pgcoord.campaign_mark', v_mark, FALSE);
    END IF;
    RETURN v_held;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_busy(bigint) IS
'For a campaign worker whose claims come back full, on its LISTEN connection: end its '
'idle mark and say that a worker of run p_run_id (of every run when NULL) is busy, so '
'that enqueues skip the NOTIFY while none is idle; true when this session holds that '
'mark (one at a time), false when another does.';
