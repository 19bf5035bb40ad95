-- Shared rate limits: one token bucket per key, shared by every caller of the key.
--
-- tokens is the bucket's content as of tokens_at; it refills at the caller's rate up to
-- the caller's burst, so the content at any later time is computed, never stored by a
-- clock. Only a grant writes the bucket (a refusal writes nothing); a pause writes
-- paused_until only. A row made by rate_pause alone has tokens NULL: a full bucket.
-- per_second and burst are those of the last grant, for rate_status.
--
-- Every grant of a hot key writes a new version of its row and changes no indexed
-- column, so the update is HOT when the page has room: fillfactor 50 keeps half of
-- each page free for the new versions (the table has one small row per key).
-- The functions read it by its key with enable_seqscan off, whatever it held when their
-- plans were made (010_locks.sql).

CREATE TABLE IF NOT EXISTS pgcoord.rates (
    key text PRIMARY KEY,
    tokens double precision,
    tokens_at timestamptz,
    per_second double precision,
    burst integer,
    paused_until timestamptz,
    updated_at timestamptz NOT NULL
) WITH (fillfactor = 50);
