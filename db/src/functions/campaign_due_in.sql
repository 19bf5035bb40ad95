-- How long until campaign_claim may find work in a running run (in p_run_id when
-- given): zero when a message is due now, the time until the next scheduled or retry
-- time or the end of a lease (an orphan is claimable then), NULL when no running run
-- has a message pending or held. An idle worker sleeps this long, woken early by
-- pgcoord_campaigns.
CREATE OR REPLACE FUNCTION pgcoord.campaign_due_in(p_run_id bigint DEFAULT NULL)
RETURNS interval
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the queue through its indexes, whatever it held when the plan was made (030_campaigns.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_next timestamptz;
BEGIN
    IF p_run_id IS NULL THEN
        SELECT min(n.due_at) INTO v_next
        FROM pgcoord.campaign_runs AS r
        CROSS JOIN LATERAL (
            SELECT q.due_at
            FROM pgcoord.campaign_queue AS q
            WHERE q.run_id = r.id
            ORDER BY q.due_at
            LIMIT 1
        ) AS n
        WHERE r.status = 'running';
    ELSE
        IF NOT EXISTS (SELECT FROM pgcoord.campaign_runs AS r WHERE r.id = p_run_id) THEN
            PERFORM pgcoord.raise_bad_argument('p_run_id', p_run_id, 'the id of a campaign run');
        END IF;
        -- the first of the run's groups in its index order (no rows: NULL)
        SELECT q.due_at INTO v_next
        FROM pgcoord.campaign_queue AS q
        WHERE
            q.run_id = p_run_id
            AND EXISTS (
                SELECT FROM pgcoord.campaign_runs AS r
                WHERE r.id = p_run_id AND r.status = 'running'
            )
        ORDER BY q.due_at
        LIMIT 1;
    END IF;
    -- greatest() ignores NULL: nothing to wait for must stay NULL, not zero
    IF v_next IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN greatest(v_next - clock_timestamp(), interval '0');
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_due_in(bigint) IS
'Time until a message of a running run (of p_run_id when given) is due or a lease ends '
'(zero when one is due now, NULL when none is pending or held). Errors: 22023 unknown '
'p_run_id.';
