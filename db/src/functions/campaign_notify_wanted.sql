-- Internal, for campaign_enqueue into a running run: take the gate (see campaign_idle),
-- shared until this transaction's end, then say whether to notify: when a worker of run
-- p_run_id (or of every run) is marked idle, or when none has said it is busy (a
-- listener that never marks is notified as before). An idle mark is tested by taking its
-- lock exclusively for an instant, so a concurrent enqueue testing the same mark can be
-- taken for one, and this enqueue then notifies for nothing: about 1% of enqueues at 16
-- connections on 2 cores (bench/producers.py), where the one holding it had been
-- descheduled in that instant. A busy mark is tested with a shared lock, which other
-- enqueues' tests never block: an error there would skip a NOTIFY. Nothing here waits
-- on a lock, so no other session can hold an enqueue up by taking one of these keys.
CREATE OR REPLACE FUNCTION pgcoord.campaign_notify_wanted(p_run_id bigint)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_gate constant integer[] := pgcoord.campaign_mark_key('gate', NULL);
    -- the marks of a worker of every run, then of this run
    v_runs constant bigint[] := ARRAY[NULL, p_run_id];
    v_run bigint;
    v_key integer[];
BEGIN
    -- tried, not waited for: held exclusively, the gate is campaign_idle's for an
    -- instant, or a session's that any role could take (pg_advisory_lock is PUBLIC's);
    -- either way this enqueue notifies, which loses no wake-up, instead of waiting on it
    IF NOT pg_try_advisory_xact_lock_shared(v_gate[1], v_gate[2]) THEN
        RETURN TRUE;
    END IF;
    FOREACH v_run IN ARRAY v_runs LOOP
        v_key := pgcoord.campaign_mark_key('idle', v_run);
        IF NOT pg_try_advisory_lock(v_key[1], v_key[2]) THEN
            RETURN TRUE;  -- an idle worker
        END IF;
        PERFORM pg_advisory_unlock(v_key[1], v_key[2]);
    END LOOP;
    FOREACH v_run IN ARRAY v_runs LOOP
        v_key := pgcoord.campaign_mark_key('busy', v_run);
        IF NOT pg_try_advisory_lock_shared(v_key[1], v_key[2]) THEN
            RETURN FALSE;  -- none idle, a busy one finds the messages
        END IF;
        PERFORM pg_advisory_unlock_shared(v_key[1], v_key[2]);
    END LOOP;
    RETURN TRUE;  -- no marks: a listener that never marks is notified
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_notify_wanted(bigint) IS
'Internal. Take the enqueue gate (shared, to the transaction''s end) and say whether to '
'notify: a worker of run p_run_id or of every run is marked idle (campaign_idle), or '
'none is marked busy (campaign_busy).';
