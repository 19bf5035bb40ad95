-- Retention: delete the messages of runs that ended (finished or cancelled) more than
-- p_older_than ago, with their outcomes and the open work a cancelled run left, about
-- p_limit messages per call, the run that ended first first; a run is deleted (with its
-- enqueue keys) with its last message. Open work goes in whole groups (up to 15
-- messages, see 030_campaigns.sql), each started within the limit, so a call deletes at
-- most p_limit + 14. Returns how many messages were deleted: run it from a scheduled job until it
-- returns less than p_limit. Running and paused runs are never touched. While
-- a run is pruned over several calls, campaign_progress counts what is left of it (its
-- total and skipped go down with what is deleted). A claim still held on a
-- pruned cancelled run is stale afterwards, so keep runs longer than their leases.
-- Concurrent calls prune different runs (a run's row lock, skipped when taken).
CREATE OR REPLACE FUNCTION pgcoord.campaign_prune(
    p_older_than interval, p_limit integer DEFAULT 10000
)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cutoff timestamptz;
    v_run record;
    v_left integer;
    v_count integer;
    v_done integer;
    v_skipped integer;
    v_total bigint;
    v_first bigint;
    v_last bigint;
BEGIN
    PERFORM pgcoord.check_prune_arguments(p_older_than, p_limit);
    v_cutoff := clock_timestamp() - p_older_than;
    v_left := p_limit;

    FOR v_run IN
        SELECT r.id
        FROM pgcoord.campaign_runs AS r
        WHERE r.status IN ('finished', 'cancelled') AND r.status_changed_at < v_cutoff
        ORDER BY r.status_changed_at, r.id
        FOR UPDATE SKIP LOCKED
    LOOP
        -- the open work of the run (a cancelled run's pending messages, claims never
        -- completed): whole groups, each started within the limit, with their messages
        WITH picked AS (
            SELECT g.token
            FROM (
                SELECT
                    q.token,
                    sum(cardinality(q.message_ids)) OVER (ORDER BY q.token)
                    - cardinality(q.message_ids) AS before
                FROM pgcoord.campaign_queue AS q
                WHERE q.run_id = v_run.id
            ) AS g
            WHERE g.before < v_left
        ),

        gone AS (
            DELETE FROM pgcoord.campaign_queue AS q
            USING picked
            WHERE q.token = picked.token
            RETURNING q.message_ids
        ),

        messages AS (
            DELETE FROM pgcoord.campaign_messages AS m
            USING gone
            WHERE m.id = any(gone.message_ids)
            RETURNING m.id
        )

        SELECT count(*)::integer INTO v_done FROM messages;
        v_left := v_left - v_done;
        v_skipped := 0;

        -- then, once no open work is left, the messages that ended, with their outcomes
        IF
            v_left > 0
            AND NOT EXISTS (SELECT FROM pgcoord.campaign_queue AS q WHERE q.run_id = v_run.id)
        THEN
            SELECT min(e.first_message_id), max(e.last_message_id) INTO v_first, v_last
            FROM pgcoord.campaign_enqueues AS e
            WHERE e.run_id = v_run.id;
            WITH picked AS (
                SELECT m.id
                FROM pgcoord.campaign_messages AS m
                WHERE
                    m.id BETWEEN v_first AND v_last
                    AND m.run_id = v_run.id
                ORDER BY m.id
                LIMIT v_left
            ),

            outcomes AS (
                DELETE FROM pgcoord.campaign_outcomes AS o
                USING picked
                WHERE o.message_id = picked.id
                RETURNING o.status
            ),

            messages AS (
                DELETE FROM pgcoord.campaign_messages AS m
                USING picked
                WHERE m.id = picked.id
                RETURNING m.id
            )

            SELECT
                (SELECT count(*)::integer FROM messages),
                (SELECT count(*)::integer FROM outcomes WHERE outcomes.status = 'skipped')
            INTO v_count, v_skipped;
            v_left := v_left - v_count;
            v_done := v_done + v_count;
        END IF;

        UPDATE pgcoord.campaign_runs AS r
        SET
            pruned = r.pruned + v_done,
            skipped = r.skipped - v_skipped
        WHERE r.id = v_run.id;
        SELECT p.total INTO v_total FROM pgcoord.campaign_progress AS p WHERE p.run_id = v_run.id;
        IF v_total = 0 THEN
            DELETE FROM pgcoord.campaign_enqueues AS e WHERE e.run_id = v_run.id;
            DELETE FROM pgcoord.campaign_enqueue_keys AS k WHERE k.run_id = v_run.id;
            DELETE FROM pgcoord.campaign_runs AS r WHERE r.id = v_run.id;
        END IF;
        EXIT WHEN v_left <= 0;
    END LOOP;
    RETURN p_limit - v_left;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_prune(interval, integer) IS
'Delete about p_limit messages (at most p_limit + 14: open work goes in whole groups), '
'with their outcomes and open work, of runs finished or cancelled more than p_older_than '
'ago, the run that ended first first, and each run with its last message; returns how '
'many. Ranges: p_older_than above 0 and at most 100 years; '
'p_limit 1 to 1000000. Errors: 22004 NULL argument, 22023 an argument out of its range '
'(an infinite interval included).';
