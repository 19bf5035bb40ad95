-- Inbound messages and the debounce buffers of their conversations.
--
-- A message is stored once per (provider, provider_message_id) and kept after it is
-- answered, so a provider's late retry still finds it. Its state moves
--   waiting  -> in its conversation's buffer, waiting for the next flush
--   claimed  -> in the batch a claim took (the batch keeps exactly these messages
--               through retries until it is completed or parked)
--   done     -> the claim completed
--   dead     -> the batch was parked after its 5th failed try (parked_in = that row)

CREATE TABLE IF NOT EXISTS pgcoord.messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider text NOT NULL,
    provider_message_id text NOT NULL,
    conversation_key text NOT NULL,
    body text NOT NULL,
    payload jsonb NOT NULL,
    received_at timestamptz NOT NULL,
    state text NOT NULL DEFAULT 'waiting'
    CHECK (state IN ('waiting', 'claimed', 'done', 'dead')),
    parked_in bigint,
    UNIQUE (provider, provider_message_id)
);

CREATE INDEX IF NOT EXISTS messages_buffered
ON pgcoord.messages (conversation_key, id)
WHERE state IN ('waiting', 'claimed');

CREATE INDEX IF NOT EXISTS messages_parked
ON pgcoord.messages (parked_in)
WHERE parked_in IS NOT NULL;

-- One open row per conversation with buffered messages (plus one row per parked batch).
-- Its counters change only under the row's lock, so they always match the messages:
-- waiting + batch_size = the conversation's waiting and claimed messages.
CREATE TABLE IF NOT EXISTS pgcoord.buffers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_key text NOT NULL,
    -- the messages waiting for the next flush
    waiting integer NOT NULL DEFAULT 0,
    waiting_first_at timestamptz,
    waiting_last_at timestamptz,
    flush_at timestamptz,
    -- the batch a claim took
    batch_size integer NOT NULL DEFAULT 0,
    batch_first_at timestamptz,
    batch_last_at timestamptz,
    claim_token bigint,
    claimed_by text,  -- NULL while no claim holds the batch
    claimed_until timestamptz,
    failures integer NOT NULL DEFAULT 0,
    last_error text,
    -- when buffer_claim may take this row next: the flush, the retry, or the lease's end
    due_at timestamptz,
    dead boolean NOT NULL DEFAULT FALSE
);

CREATE UNIQUE INDEX IF NOT EXISTS buffers_open
ON pgcoord.buffers (conversation_key)
WHERE NOT dead;

CREATE INDEX IF NOT EXISTS buffers_due
ON pgcoord.buffers (due_at)
WHERE NOT dead;

-- the parked batches of a conversation, for buffer_revive
CREATE INDEX IF NOT EXISTS buffers_parked
ON pgcoord.buffers (conversation_key)
WHERE dead;

-- The functions that read these tables run with enable_seqscan off, whatever they held
-- when their plans were made (010_locks.sql says why).

CREATE SEQUENCE IF NOT EXISTS pgcoord.claim_token AS bigint;
