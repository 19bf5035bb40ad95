-- The ceiling of a campaign worker's loop at batch 15: the equivalent plain SQL on a
-- simple message table (one row per message, bench_plain.messages), as a careful user
-- writes it: claim up to 15 due messages in one statement (FOR UPDATE SKIP LOCKED on the
-- partial index of pending messages, oldest first; status, claim token, worker and lease
-- set; recipients and payloads returned), then mark them sent in one statement, fenced
-- by the claim token. One transaction each. It leaves out retries, lost leases, runs
-- and their statuses, and outcomes kept apart from the messages.
\set n 0
WITH
picked AS (
    SELECT m.id
    FROM bench_plain.messages AS m
    WHERE m.status = 'pending' AND m.scheduled_at <= clock_timestamp()
    ORDER BY m.scheduled_at
    LIMIT 15
    FOR UPDATE SKIP LOCKED
),
claim AS (
    SELECT nextval('bench_plain.claim_token') AS token
),
claimed AS (
    UPDATE bench_plain.messages AS m
    SET status = 'claimed',
        claim_token = claim.token,
        claimed_by = 'w' || :client_id,
        lease_until = clock_timestamp() + interval '5 minutes'
    FROM picked, claim
    WHERE m.id = picked.id
    RETURNING m.id, m.recipient, m.payload, m.claim_token
)
SELECT count(*) AS n, array_agg(c.id) AS ids, max(c.claim_token) AS token,
    array_agg(c.recipient) AS recipients, array_agg(c.payload) AS payloads
FROM claimed AS c
\gset
\if :n > 0
UPDATE bench_plain.messages AS m
SET status = 'sent', sent_at = clock_timestamp(), metrics = '{}'
WHERE m.id = any(:ids::bigint[]) AND m.claim_token = :token AND m.status = 'claimed';
\endif
