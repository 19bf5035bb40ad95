-- One row per campaign message, for operators: where it is and what happened to it.
-- status: pending, processing (held by claimed_by until claimed_until; an orphan once
-- that has passed), sent, failed, skipped. attempt counts its tries so far, the running
-- one included; snoozes how often it was put back for a provider's rate limit (tries not
-- spent). last_error is the error of its last failed try ('lease expired' for a lost
-- lease), kept after it is sent. finished_at: when it became sent, failed or skipped;
-- sent_at: the same, for a sent message only. It reads the open groups whole: filter by
-- run_id.
CREATE OR REPLACE VIEW pgcoord.campaign_message_status AS
WITH g AS (
    SELECT
        q.run_id,
        q.due_at,
        q.claimed_by,
        q.tries,
        q.snoozes,
        q.last_error,
        unnest(q.message_ids) AS message_id
    FROM pgcoord.campaign_queue AS q
)

SELECT  -- noqa: ST06
    m.id AS message_id,
    m.run_id,
    m.recipient,
    coalesce(o.status, CASE WHEN g.claimed_by IS NULL THEN 'pending' ELSE 'processing' END)
        AS status,
    coalesce(o.attempts, g.tries + (g.claimed_by IS NOT NULL)::integer) AS attempt,
    coalesce(o.snoozes, g.snoozes) AS snoozes,
    m.scheduled_at,
    CASE WHEN g.claimed_by IS NULL THEN g.due_at END AS next_attempt_at,
    g.claimed_by,
    CASE WHEN g.claimed_by IS NOT NULL THEN g.due_at END AS claimed_until,
    coalesce(o.error, g.last_error) AS last_error,
    o.finished_at,
    o.metrics,
    CASE WHEN o.status = 'sent' THEN o.finished_at END AS sent_at
FROM pgcoord.campaign_messages AS m
LEFT JOIN pgcoord.campaign_outcomes AS o ON m.id = o.message_id
LEFT JOIN g ON m.id = g.message_id AND m.run_id = g.run_id;

COMMENT ON VIEW pgcoord.campaign_message_status IS
'Campaign messages: message_id, run_id, recipient, status, attempt, snoozes, '
'scheduled_at, next_attempt_at, claimed_by, claimed_until, last_error, finished_at, '
'metrics, sent_at (finished_at of a sent message).';
