-- How a run is going, for operators (pgcoord campaigns, pgcoord watch), one row per run
-- (of p_run_id only, when given), by run id: the messages sent in the last minute; the
-- failed tries so far (retries: fails and lost leases, of finished and open messages);
-- the snoozes so far; and the median and 95th percentile of the handler's time in ms
-- (metrics key handler_ms, which the campaign worker stores with each message) over the
-- run's last 1000 sent messages, NULL when none of them has it (a value that is not a
-- number from 0 to 1e12 is ignored).
-- Cheap however long the run: the open messages are summed over the run's queue groups
-- (the backlog); the finished ones' retries and snoozes over an index holding only the
-- outcomes that had any (campaign_outcomes_eventful, rare); the last minute and the last
-- 1000 sent are read backwards on the sent messages' index by finish time
-- (campaign_outcomes_sent): no statement reads a run's history.
CREATE OR REPLACE FUNCTION pgcoord.campaign_stats(p_run_id bigint DEFAULT NULL)
RETURNS TABLE (
    run_id bigint,
    sent_last_minute bigint,
    retries bigint,
    snoozes bigint,
    handler_p50_ms double precision,
    handler_p95_ms double precision
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_now constant timestamptz := clock_timestamp();
BEGIN
    IF p_run_id IS NOT NULL AND NOT EXISTS (
        SELECT FROM pgcoord.campaign_runs AS r WHERE r.id = p_run_id
    ) THEN
        PERFORM pgcoord.raise_bad_argument('p_run_id', p_run_id, 'the id of a campaign run');
    END IF;

    RETURN QUERY
    SELECT
        r.id,
        recent.sent,
        open_work.retries + finished.retries,
        open_work.snoozes + finished.snoozes,
        handler.p50,
        handler.p95
    FROM pgcoord.campaign_runs AS r
    CROSS JOIN LATERAL (
        SELECT
            coalesce(sum(q.tries::bigint * cardinality(q.message_ids)), 0)::bigint AS retries,
            coalesce(sum(q.snoozes::bigint * cardinality(q.message_ids)), 0)::bigint AS snoozes
        FROM pgcoord.campaign_queue AS q
        WHERE q.run_id = r.id
    ) AS open_work
    CROSS JOIN LATERAL (
        -- failed tries: every try of a failed or skipped message, all but the last of a
        -- sent one; the predicate is the index's
        SELECT
            coalesce(sum(o.attempts - (o.status = 'sent')::integer), 0)::bigint AS retries,
            coalesce(sum(o.snoozes), 0)::bigint AS snoozes
        FROM pgcoord.campaign_outcomes AS o
        WHERE
            o.run_id = r.id
            AND (o.attempts > (o.status = 'sent')::integer OR o.snoozes > 0)
    ) AS finished
    CROSS JOIN LATERAL (
        SELECT count(*) AS sent
        FROM pgcoord.campaign_outcomes AS o
        WHERE
            o.run_id = r.id AND o.status = 'sent'
            AND o.finished_at > v_now - interval '1 minute'
    ) AS recent
    CROSS JOIN LATERAL (
        SELECT
            percentile_cont(0.5) WITHIN GROUP (ORDER BY last_sent.ms) AS p50,
            percentile_cont(0.95) WITHIN GROUP (ORDER BY last_sent.ms) AS p95
        FROM (
            -- nested: the cast only of a JSON number (AND has no order of evaluation);
            -- rounded to the microsecond, so no value underflows double precision
            SELECT
                CASE WHEN jsonb_typeof(o.metrics -> 'handler_ms') = 'number' THEN
                    CASE WHEN (o.metrics ->> 'handler_ms')::numeric BETWEEN 0 AND 1e12 THEN
                        round((o.metrics ->> 'handler_ms')::numeric, 3)::double precision
                    END
                END AS ms
            FROM pgcoord.campaign_outcomes AS o
            WHERE o.run_id = r.id AND o.status = 'sent'
            ORDER BY o.finished_at DESC
            LIMIT 1000
        ) AS last_sent
    ) AS handler
    WHERE p_run_id IS NULL OR r.id = p_run_id
    ORDER BY r.id;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_stats(bigint) IS
'Per run (of p_run_id when given, else every run): messages sent in the last minute, '
'failed tries so far (retries), snoozes so far, and the median and 95th percentile of '
'metrics.handler_ms over the last 1000 sent messages (NULL when none has it). Ranges: '
'p_run_id NULL or the id of a run. Errors: 22023 unknown p_run_id.';
