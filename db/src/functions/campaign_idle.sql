-- A campaign worker about to sleep, on the connection that LISTENs pgcoord_campaigns
-- (its own session, in autocommit; not through a transaction pooler): mark the session
-- as an idle worker of run p_run_id (of every run when NULL) until campaign_busy or the
-- session's end, then say how long it may sleep. campaign_enqueue notifies only while
-- some worker of its run is marked idle, so that enqueues into a run whose workers are
-- busy never take turns at the commit (a notifying commit holds a lock of the whole
-- server while it flushes).
--
-- No wake-up is lost: an enqueue holds the gate, a lock shared by every enqueue into a
-- running run, from before it looks for idle workers to its commit. Marked first, this
-- call then takes the gate for an instant. Taken, every enqueue that began before is
-- committed, so the look at the queue that follows sees its messages, and every enqueue
-- that begins after sees the mark and notifies. Not taken (an enqueue is still
-- committing, which may have looked before the mark), settled is false: the look may
-- have missed it, and the worker looks again soon rather than sleeping due_in.
--
-- due_in is campaign_due_in's: zero when a message is due now, NULL when nothing is
-- pending or held. The mark is a shared session advisory lock (key 1885823844, 1 for
-- every run; 1885823845 and the run id's low 31 bits for one run), recorded in the
-- setting pgcoord.campaign_idle so that calling again keeps one mark.
CREATE OR REPLACE FUNCTION pgcoord.campaign_idle(
    p_run_id bigint DEFAULT NULL, OUT due_in interval, OUT settled boolean
)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_mark constant text := coalesce(p_run_id::text, 'all');
BEGIN
    IF p_run_id IS NOT NULL
        AND NOT EXISTS (SELECT FROM pgcoord.campaign_runs AS r WHERE r.id = p_run_id) THEN
        PERFORM pgcoord.raise_bad_argument('p_run_id', p_run_id, 'the id of a campaign run');
    END IF;
    IF coalesce(current_setting('pgcoord.campaign_idle', TRUE), '') <> v_mark THEN
        PERFORM pgcoord.campaign_busy();
        IF p_run_id IS NULL THEN
            PERFORM pg_advisory_lock_shared(1885823844, 1);
        ELSE
            PERFORM pg_advisory_lock_shared(1885823845, (p_run_id & 2147483647)::integer);
        END IF;
        PERFORM set_config('pgcoord.campaign_idle', v_mark, FALSE);
    END IF;

    settled := pg_try_advisory_lock(1885823844, 0);
    IF settled THEN
        PERFORM pg_advisory_unlock(1885823844, 0);
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
