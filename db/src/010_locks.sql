-- Lease locks: one row per held key. Releasing deletes the row; every grant takes its
-- token from one sequence, so a later grant of a key always has a larger token.

CREATE TABLE IF NOT EXISTS pgcoord.locks (
    key text PRIMARY KEY,
    owner text NOT NULL,
    token bigint NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
) WITH (fillfactor = 80);

CREATE SEQUENCE IF NOT EXISTS pgcoord.lock_token AS bigint;
