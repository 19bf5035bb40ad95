-- One row per campaign run, counted without reading its sent messages: pending and
-- processing (held, an orphan included until it is claimed again) are summed over the
-- run's open groups, failed is counted on a partial index of the outcomes, total is
-- summed over the run's enqueue calls less its pruned messages, skipped is the run's
-- counter, and sent is the rest. Cheap for a run of a million messages: it reads the
-- backlog's groups, the failures and a row per enqueue call.
-- The columns are in the contract's order.
CREATE OR REPLACE VIEW pgcoord.campaign_progress AS
SELECT  -- noqa: ST06
    r.id AS run_id,
    r.name,
    r.status,
    o.pending,
    o.processing,
    e.total - o.pending - o.processing - f.failed - r.skipped AS sent,
    f.failed,
    r.skipped,
    e.total
FROM pgcoord.campaign_runs AS r
CROSS JOIN
    LATERAL (
        SELECT coalesce(sum(x.messages), 0) - r.pruned AS total
        FROM pgcoord.campaign_enqueues AS x
        WHERE x.run_id = r.id
    ) AS e
CROSS JOIN
    LATERAL (
        SELECT
            coalesce(sum(cardinality(q.message_ids)) FILTER (WHERE q.claimed_by IS NULL), 0)
                AS pending,
            coalesce(sum(cardinality(q.message_ids)) FILTER (WHERE q.claimed_by IS NOT NULL), 0)
                AS processing
        FROM pgcoord.campaign_queue AS q
        WHERE q.run_id = r.id
    ) AS o
CROSS JOIN LATERAL (
    SELECT count(*) AS failed
    FROM pgcoord.campaign_outcomes AS x
    WHERE x.run_id = r.id AND x.status = 'failed'
) AS f;

COMMENT ON VIEW pgcoord.campaign_progress IS
'Campaign runs and their messages by state: run_id, name, status, pending, processing, '
'sent, failed, skipped, total.';
