-- (c) the ceiling: the same lease pair as plain statements on pgcoord.locks.
\set k random(1, 1000000)
INSERT INTO pgcoord.locks AS l (key, owner, token, acquired_at, expires_at)
VALUES (
    'k' || :k, 'o' || :client_id, nextval('pgcoord.lock_token'),
    clock_timestamp(), clock_timestamp() + interval '2 minutes'
)
ON CONFLICT (key) DO UPDATE
SET owner = excluded.owner, token = excluded.token,
    acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
WHERE l.expires_at <= clock_timestamp()
RETURNING l.owner, l.token, l.expires_at;
DELETE FROM pgcoord.locks AS l WHERE l.key = 'k' || :k AND l.owner = 'o' || :client_id;
