-- The ceiling of a worker's loop: the same claim and complete as two plain statements on
-- the same tables (see claim_functions.sql).
-- The claim: lock the earliest due buffer (FOR UPDATE SKIP LOCKED on the due index),
-- make its waiting messages the batch, set the claim columns (60 s lease), return it.
-- It takes fresh flushes only: no retries nor lost leases in this bench. (One statement
-- sees one snapshot: a message committed between that snapshot and the row lock would
-- be missed; the function runs its steps as separate statements after the lock.)
\set token 0
WITH
picked AS (
    SELECT b.id, b.conversation_key
    FROM pgcoord.buffers AS b
    WHERE NOT b.dead AND b.due_at <= clock_timestamp()
    ORDER BY b.due_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED
),
taken AS (
    UPDATE pgcoord.messages AS m
    SET state = 'claimed'
    FROM picked AS p
    WHERE m.conversation_key = p.conversation_key AND m.state = 'waiting'
    RETURNING p.id AS buffer_id, m.id, m.body, m.received_at
),
batch AS (
    SELECT
        t.buffer_id,
        count(*)::integer AS size,
        min(t.received_at) AS first_at,
        max(t.received_at) AS last_at,
        array_agg(t.id ORDER BY t.id) AS message_ids,
        array_agg(t.body ORDER BY t.id) AS bodies
    FROM taken AS t
    GROUP BY t.buffer_id
),
claimed AS (
    UPDATE pgcoord.buffers AS b
    SET batch_size = t.size,
        batch_first_at = t.first_at,
        batch_last_at = t.last_at,
        waiting = 0,
        waiting_first_at = NULL,
        waiting_last_at = NULL,
        flush_at = NULL,
        claim_token = nextval('pgcoord.claim_token'),
        claimed_by = 'w' || :client_id,
        claimed_until = clock_timestamp() + interval '60 seconds',
        due_at = clock_timestamp() + interval '60 seconds'
    FROM batch AS t
    WHERE b.id = t.buffer_id
    RETURNING
        b.conversation_key, b.claim_token, t.message_ids, t.bodies,
        b.batch_first_at, b.batch_last_at, b.failures + 1 AS attempt
)
SELECT c.conversation_key AS key, c.claim_token AS token, c.message_ids, c.bodies,
    c.batch_first_at, c.batch_last_at, c.attempt
FROM claimed AS c
\aset
-- The complete: drop the buffer row when nothing arrived since the claim, else clear
-- its batch (the update runs only when the delete took nothing, so that a message
-- arriving meanwhile leaves the row updated, not lost); mark the batch's messages done.
\if :token > 0
WITH
dropped AS (
    DELETE FROM pgcoord.buffers AS b
    WHERE
        b.conversation_key = :key AND NOT b.dead AND b.claim_token = :token
        AND b.claimed_by IS NOT NULL AND b.waiting = 0
    RETURNING b.id
),
cleared AS (
    UPDATE pgcoord.buffers AS b
    SET batch_size = 0,
        batch_first_at = NULL,
        batch_last_at = NULL,
        claimed_by = NULL,
        claimed_until = NULL,
        failures = 0,
        last_error = NULL,
        due_at = b.flush_at
    WHERE
        b.conversation_key = :key AND NOT b.dead AND b.claim_token = :token
        AND b.claimed_by IS NOT NULL AND NOT EXISTS (SELECT FROM dropped)
    RETURNING b.id
),
finished AS (
    SELECT d.id FROM dropped AS d
    UNION ALL
    SELECT c.id FROM cleared AS c
),
done AS (
    UPDATE pgcoord.messages AS m
    SET state = 'done'
    WHERE
        m.conversation_key = :key AND m.state = 'claimed'
        AND EXISTS (SELECT FROM finished)
)
SELECT EXISTS (SELECT FROM finished) AS completed;
\endif
