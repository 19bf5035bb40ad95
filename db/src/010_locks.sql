-- Lease locks: one row per held key. Releasing deletes the row; every grant takes its
-- token from one sequence, so a later grant of a key always has a larger token.
-- The functions read it with enable_seqscan off: they plan their statements once per
-- session, and a session that planned while the table was empty, and analyzed so, would
-- otherwise scan every lease on each call until the next analyze
-- (tests/sql/test_plans_on_empty.py; the inbox, the queue and the rates do the same).

CREATE TABLE IF NOT EXISTS pgcoord.locks (
    key text PRIMARY KEY,
    owner text NOT NULL,
    token bigint NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
) WITH (fillfactor = 80);

CREATE SEQUENCE IF NOT EXISTS pgcoord.lock_token AS bigint;
