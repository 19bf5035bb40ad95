-- A campaign worker about to sleep, on the connection that LISTENs pgcoord_campaigns
-- (its own session, in autocommit; not through a transaction pooler): mark the session
-- as an idle worker of run p_run_id (of every run when NULL) until campaign_busy or the
-- session's end, then say how long it may sleep. campaign_enqueue notifies while some
-- worker of its run is marked idle, or while no worker has said it is busy
-- (campaign_busy); it skips the NOTIFY when the run's workers are all busy, so that
-- enqueues feeding them never take turns at the commit (a notifying commit holds a lock
-- of the whole server while it flushes).
--
-- No wake-up is lost: an enqueue holds the gate, a lock shared by every enqueue into a
-- running run, from before it looks for marks to its commit. Marked first, this call
-- then takes the gate for an instant. Taken, every enqueue that began before is
-- committed, so the look at the queue that follows sees its messages, and every enqueue
-- that begins after sees the mark and notifies. Not taken (an enqueue is still
-- committing, which may have looked before the mark), settled is false: the look may
-- have missed it, and the worker looks again soon rather than sleeping due_in.
--
-- due_in is campaign_due_in's: zero when a message is due now, NULL when nothing is
-- pending or held. The gate and the marks are session advisory locks
-- (campaign_mark_key), the mark recorded in the setting pgcoord.campaign_mark
-- (campaign_unmark).
CREATE OR REPLACE FUNCTION pgcoord.campaign_idle(
    p_run_id bigint DEFAULT NULL, OUT due_in interval, OUT settled boolean
)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_mark constant text := 'idle ' || coalesce(p_run_id::text, 'all');
    v_key integer[];
BEGIN
    IF p_run_id IS NOT NULL
        AND NOT EXISTS (SELECT FROM pgcoord.campaign_runs AS r WHERE r.id = p_run_id) THEN
        PERFORM pgcoord.raise_bad_argument('p_run_id', p_run_id, 'the id of a campaign run');
    END IF;
    settled := TRUE;
    IF coalesce(current_setting('pgcoord.campaign_mark', TRUE), '') <> v_mark THEN
        PERFORM pgcoord.campaign_unmark();
        v_key := pgcoord.campaign_mark_key('idle', p_run_id);
        -- tried, not waited for: held exclusively, the key is an enqueue's for an
        -- instant (campaign_notify_wanted), or a session's that any role could take;
        -- then no mark this time, and the worker looks again soon
        IF pg_try_advisory_lock_shared(v_key[1], v_key[2]) THEN
            PERFORM set_config('pgcoord.campaign_mark', v_mark, FALSE);
        ELSE
            settled := FALSE;
        END IF;
    END IF;

    IF settled THEN
        v_key := pgcoord.campaign_mark_key('gate', NULL);
        settled := pg_try_advisory_lock(v_key[1], v_key[2]);
        IF settled THEN
            PERFORM pg_advisory_unlock(v_key[1], v_key[2]);
        END IF;
    END IF;
    -- a statement of its own: its snapshot is taken after the gate
    due_in := pgcoord.campaign_due_in(p_run_id);
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_idle(bigint) IS
'For a campaign worker about to sleep, on its LISTEN connection: mark the session as an '
'idle worker of run p_run_id (of every run when NULL) until campaign_busy, so that '
'campaign_enqueue notifies it; then due_in as campaign_due_in, and settled false when an '
'enqueue still committing may be missing from it (look again soon). Errors: 22023 '
'unknown p_run_id.';
