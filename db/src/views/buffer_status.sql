-- One row per buffered conversation, plus one row per batch parked as dead. attempt
-- counts the tries so far, the running one included; flush_at is when the next claim
-- can take the row (for a held batch: when the messages waiting behind it are due).
-- The columns are in the contract's order.
CREATE OR REPLACE VIEW pgcoord.buffer_status AS
SELECT  -- noqa: ST06
    b.conversation_key,
    b.batch_size + b.waiting AS message_count,
    coalesce(b.batch_first_at, b.waiting_first_at) AS first_message_at,
    coalesce(b.waiting_last_at, b.batch_last_at) AS last_message_at,
    CASE
        WHEN b.dead THEN NULL
        WHEN b.claimed_by IS NOT NULL THEN b.flush_at
        ELSE b.due_at
    END AS flush_at,
    b.claimed_by,
    b.claimed_until,
    b.failures + (b.claimed_by IS NOT NULL)::integer AS attempt,
    b.dead,
    b.last_error
FROM pgcoord.buffers AS b;

COMMENT ON VIEW pgcoord.buffer_status IS
'Buffered conversations and parked batches: conversation_key, message_count, '
'first_message_at, last_message_at, flush_at, claimed_by, claimed_until, attempt, dead, '
'last_error.';
