-- The ceiling of an ingest: the same work as one plain statement on the same tables,
-- with the same calls (see ingest_functions.sql). Store the message unless its id is
-- known; if stored, append it to its conversation's buffer with the function's flush
-- arithmetic (debounce 10 s, max wait 60 s); return the new row with duplicate false, or
-- the stored one with duplicate true. It leaves out what the function adds: the
-- argument checks, comparing a repeat's conversation and body with the stored ones, a
-- repeat racing its first delivery (this statement's snapshot cannot see a row committed
-- while its insert waited; the bench's new ids never race), and the NOTIFY test.
\set r random(1, 100)
\if :r <= 30
\set k random(1, 10000)
\set c :k % 5000 + 1
\else
\set k random(10001, 9000000000000000000)
\set c random(1, 5000)
\endif
WITH
stored AS (
    INSERT INTO pgcoord.messages AS m (
        provider, provider_message_id, conversation_key, body, payload, received_at
    )
    VALUES ('bench', 'm' || :k, 'c' || :c, 'body of m' || :k, '{}', clock_timestamp())
    ON CONFLICT (provider, provider_message_id) DO NOTHING
    RETURNING m.id, m.conversation_key, m.received_at
),
buffered AS (
    INSERT INTO pgcoord.buffers AS b (
        conversation_key, waiting, waiting_first_at, waiting_last_at, flush_at, due_at
    )
    SELECT
        s.conversation_key, 1, s.received_at, s.received_at,
        s.received_at + interval '10 seconds', s.received_at + interval '10 seconds'
    FROM stored AS s
    ON CONFLICT (conversation_key) WHERE NOT dead DO UPDATE
    SET waiting = b.waiting + 1,
        waiting_first_at = coalesce(b.waiting_first_at, excluded.waiting_first_at),
        waiting_last_at = greatest(b.waiting_last_at, excluded.waiting_last_at),
        flush_at = least(
            greatest(b.waiting_last_at, excluded.waiting_last_at) + interval '10 seconds',
            coalesce(b.waiting_first_at, excluded.waiting_first_at) + interval '60 seconds'
        ),
        due_at = CASE WHEN b.batch_size > 0 THEN b.due_at ELSE least(
            greatest(b.waiting_last_at, excluded.waiting_last_at) + interval '10 seconds',
            coalesce(b.waiting_first_at, excluded.waiting_first_at) + interval '60 seconds'
        ) END
)
SELECT s.id AS message_id, false AS duplicate, s.received_at FROM stored AS s
UNION ALL
SELECT m.id, true, m.received_at
FROM pgcoord.messages AS m
WHERE
    m.provider = 'bench' AND m.provider_message_id = 'm' || :k
    AND NOT EXISTS (SELECT FROM stored);
