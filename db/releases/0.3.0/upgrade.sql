-- pgcoord 0.3.0: upgrade from 0.2.0, generated from db/src by scripts/freeze-release.
-- Apply with: psql -v ON_ERROR_STOP=1 -f upgrade.sql "$DATABASE_URL"
-- One transaction: all or nothing. Safe to run again, and from several sessions at once.

BEGIN;

-- a run again says nothing of what already exists (CREATE ... IF NOT EXISTS notices)
SET LOCAL client_min_messages = warning;

DO $$
DECLARE
    v_installed text;
    v_owner text;
BEGIN
    -- the install lock, until the transaction ends (PERFORM: psql prints no row)
    PERFORM pg_advisory_xact_lock(7001517330252001);

    -- one role owns all of pgcoord: objects made by another would be that role's, and
    -- the owner of a schema made by another could replace pgcoord's functions
    SELECT pg_catalog.pg_get_userbyid(n.nspowner) INTO v_owner
    FROM pg_catalog.pg_namespace AS n
    WHERE n.nspname = 'pgcoord';
    IF v_owner <> current_user THEN
        RAISE EXCEPTION 'schema pgcoord belongs to %, and % is another role', v_owner, current_user
            USING ERRCODE = '42501',
            HINT = 'Install and upgrade pgcoord as the role that owns schema pgcoord (SET ROLE '
            || quote_ident(v_owner) || '), or drop a schema pgcoord that is not pgcoord''s.';
    END IF;
    IF to_regclass('pgcoord.schema_version') IS NOT NULL THEN
        SELECT v.version INTO v_installed
        FROM pgcoord.schema_version AS v
        ORDER BY v.installed_at DESC, v.version DESC
        LIMIT 1;
    END IF;
    IF v_installed IS NULL OR v_installed NOT IN ('0.2.0', '0.3.0') THEN
        RAISE EXCEPTION 'this file upgrades pgcoord 0.2.0 to 0.3.0; found %', coalesce(v_installed, 'none')
            USING ERRCODE = '55000', HINT = 'pgcoord migrate and alembic upgrade head apply every step in turn; with psql, run the upgrade.sql of each release after the installed one, in order.';
    END IF;
END;
$$;

-- db/src/upgrades/0.3.0.sql
-- buffer_fail_try (internal) takes p_final since 0.3.0: the 0.2.0 signature goes, and
-- the function is made again below with the callers that pass it
DROP FUNCTION IF EXISTS pgcoord.buffer_fail_try(bigint, text, timestamptz);

-- db/src/000_schema.sql
-- The pgcoord schema, and the role that is granted its API.
-- Nothing in the schema is granted to PUBLIC: a role calls pgcoord only once it is
-- a member of pgcoord_client (GRANT pgcoord_client TO app_role).
-- The installing role needs CREATE on the database; it creates pgcoord_client only when
-- the role is missing, so a role that may not create roles installs once a role that
-- may has created pgcoord_client (docs/roles.md).

CREATE SCHEMA IF NOT EXISTS pgcoord;

REVOKE ALL ON SCHEMA pgcoord FROM PUBLIC;  -- noqa: CP02

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgcoord_client') THEN
        CREATE ROLE pgcoord_client NOLOGIN;
    END IF;
EXCEPTION
    -- another database of the same cluster created it at the same moment
    WHEN duplicate_object OR unique_violation THEN NULL;
    WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'the role pgcoord_client is missing, and % may not create roles',
        current_user
            USING ERRCODE = '42501',
            HINT = 'Create it once, as a role that may: CREATE ROLE pgcoord_client NOLOGIN;'
            || ' then install again.';
END;
$$;

-- Only its owner may create objects in the schema: a role that could would be able to put
-- an overload of one of pgcoord's internal functions ahead of pgcoord's own, and have its
-- code run as the owner. Every install and upgrade revokes CREATE from any other role
-- (given by the installing role's default privileges, or by a GRANT since).
DO $$
DECLARE
    v_grantee oid;
BEGIN
    FOR v_grantee IN
        SELECT a.grantee
        FROM pg_catalog.pg_namespace AS n
        CROSS JOIN LATERAL pg_catalog.aclexplode(n.nspacl) AS a
        WHERE
            n.nspname = 'pgcoord'
            AND a.privilege_type = 'CREATE'
            AND a.grantee NOT IN (0, n.nspowner)
    LOOP
        EXECUTE format('REVOKE CREATE ON SCHEMA pgcoord FROM %s CASCADE', v_grantee::regrole);
    END LOOP;
END;
$$;

GRANT USAGE ON SCHEMA pgcoord TO pgcoord_client;

CREATE TABLE IF NOT EXISTS pgcoord.schema_version (
    version text PRIMARY KEY,
    installed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- db/src/010_locks.sql
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

-- db/src/020_inbox.sql
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

-- db/src/030_campaigns.sql
-- Campaign send queue: runs, their messages, the queue of open work, and outcomes.
--
-- Design. A message is written once and never updated: its recipient and payload sit in
-- campaign_messages (insert-only, fillfactor 100), its end in campaign_outcomes (one
-- insert when it is sent, fails for good or is skipped). What claims and completions
-- change is campaign_queue, which holds only open work, in groups: one row holds up to
-- 15 messages of one run that share their state (scheduled at the same instant, pending
-- or held by one claim, the same number of failed tries). A claim of 15 (the default,
-- or any multiple) rewrites whole rows and inserts none, and a complete_many of them
-- deletes those rows: two dead tuples per 15 messages (0.13 per message) where a
-- row-per-message queue leaves two per message (a claim's UPDATE and a completion's
-- UPDATE or DELETE). Dead tuples are what a long transaction keeps from vacuum, and what
-- every claim walks over in the due index until vacuum may remove them. A group splits
-- when a claim needs fewer than it holds (the claimed part becomes a row of its own; the
-- rest stays pending in place, a HOT update: only message_ids changes, nothing indexed)
-- and when one message leaves a claim (a fail, snooze or release moves it to a group of
-- its own). Groups join when a claim from one run (the one running, or the one it
-- names) takes several whole that agree on tries, snoozes and last error (groups of one,
-- as an enqueue of one message per call makes): they are deleted and one held row
-- inserted, so such a message leaves one dead tuple and its claim of 15 one more, where
-- holding each in place would leave two per message. A sent message leaves the queue,
-- so the queue and its indexes stay the size of the backlog however many messages were
-- sent, and the claim reads a few pages per message however old the run is. A claim, a
-- complete_many, a fail are each one transaction of a few statements; no enqueue, claim
-- or completion writes a shared row.
-- Progress is counted without reading the sent messages: total is summed over the run's
-- rows of campaign_enqueues (one per enqueue call) less what campaign_prune deleted,
-- skipped is a counter kept on the run by skip_stale, pending and processing are summed
-- over the run's queue rows, failed is counted on a partial index, and sent is what
-- remains.
--
-- Claim tokens come from one sequence, one per group and claim, so a newer claim of a
-- message always has a larger token. A group's token is its key: complete, fail, snooze,
-- extend and release find the claim by token and check the message is in it. Messages
-- returned by one claim with the same claim_token share one lease (extending one
-- extends them all). A group is due at due_at: its scheduled (or retry) time while
-- pending, its lease's end while held (an orphan is a held group whose lease has run out).
-- A pending group's scheduled_at is that of each of its messages (skip_stale reads it);
-- a held one's, the earliest of its messages' (a message given back takes its own).

-- One row per run. Its counters change only with a skip_stale (skipped) or a prune
-- (pruned, and skipped), so an enqueue (which only share-locks the row), a claim or a
-- completion never writes here: a counter that every enqueue updated would leave a
-- version of this row per enqueue call, and while a long transaction holds back vacuum
-- every enqueue and claim would walk them all.
CREATE TABLE IF NOT EXISTS pgcoord.campaign_runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    status text NOT NULL DEFAULT 'running'
    CHECK (status IN ('running', 'paused', 'cancelled', 'finished')),
    max_retries integer NOT NULL,
    retry_backoff interval[] NOT NULL,
    stale_after interval NOT NULL,
    created_at timestamptz NOT NULL,
    status_changed_at timestamptz NOT NULL,
    skipped bigint NOT NULL DEFAULT 0,  -- messages skipped as stale (less those pruned)
    pruned bigint NOT NULL DEFAULT 0  -- messages deleted by campaign_prune
) WITH (fillfactor = 80);

-- the claim's way to the running runs (few, however many runs are kept)
CREATE INDEX IF NOT EXISTS campaign_runs_running
ON pgcoord.campaign_runs (id)
WHERE status = 'running';

-- The messages as enqueued: written once, read by the claims, never updated.
CREATE TABLE IF NOT EXISTS pgcoord.campaign_messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id bigint NOT NULL,
    recipient text NOT NULL,
    payload jsonb NOT NULL,
    scheduled_at timestamptz NOT NULL
) WITH (fillfactor = 100);

-- One row per enqueue call that stored messages: how many, and the ids of the first and
-- the last (other messages, of concurrent calls into this run or others, may lie
-- between). Insert-only: a run's total is the sum of its rows (less its pruned counter),
-- and campaign_prune finds its messages between the smallest and the largest id. A run
-- enqueued in batches has a row per batch; one enqueued a message per call, a row per
-- message (an entry of the primary key, read by campaign_progress and campaign_prune
-- only).
CREATE TABLE IF NOT EXISTS pgcoord.campaign_enqueues (
    run_id bigint NOT NULL,
    first_message_id bigint NOT NULL,
    last_message_id bigint NOT NULL,
    messages integer NOT NULL,
    PRIMARY KEY (run_id, first_message_id) INCLUDE (last_message_id, messages)
) WITH (fillfactor = 100);

-- The keys of campaign_enqueue_once: one row per key and run, written in the enqueue's
-- transaction, so a retried call (its first answer lost with the connection) finds the
-- key and enqueues nothing. Insert-only; deleted with the run by campaign_prune.
CREATE TABLE IF NOT EXISTS pgcoord.campaign_enqueue_keys (
    run_id bigint NOT NULL,
    key text NOT NULL,
    messages integer NOT NULL,
    PRIMARY KEY (run_id, key)
) WITH (fillfactor = 100);

-- Open work: groups of up to 15 messages of one run in one state. claimed_by is NULL
-- while the group is pending; due_at is then when it may be claimed, else when its
-- lease ends. tries counts the failed tries of its messages (fails and lost leases),
-- snoozes their snoozes (a snooze moves its message to a group of its own, so the
-- count is per message; nothing but a snooze changes it).
-- fillfactor 85: an enqueue fills pages to 85%, leaving room for the new versions that
-- the first claims on a page write (a claim of a whole group rewrites its row; a split
-- updates the rest in place, HOT); once those are completed, pruning frees their space
-- for the next claims on the page, without waiting for vacuum. Less (50) would double
-- the pages every enqueue takes until vacuum lets inserts reuse freed space (the free
-- space map is filled by vacuum only). Autovacuum runs at a fixed number of dead
-- tuples, whatever the table's size, and without cost delay: the table is small and
-- churns, and each pass returns the space of completed groups to the free space map.
-- The functions that read the queue run with enable_seqscan off (010_locks.sql says why):
-- read through its indexes, a claim costs the same whatever the queue held when the
-- session made its plans.
CREATE TABLE IF NOT EXISTS pgcoord.campaign_queue (
    token bigint PRIMARY KEY,
    run_id bigint NOT NULL,
    due_at timestamptz NOT NULL,
    scheduled_at timestamptz NOT NULL,
    claimed_by text,
    tries integer NOT NULL DEFAULT 0,
    snoozes integer NOT NULL DEFAULT 0,
    last_error text,
    message_ids bigint[] NOT NULL
) WITH (
    fillfactor = 85,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 5000
);

-- the claim's index: a run's groups, the one due first first
CREATE INDEX IF NOT EXISTS campaign_queue_due
ON pgcoord.campaign_queue (run_id, due_at);

-- the claim's way to orphans (held groups whose lease ran out), ahead of the backlog:
-- a run's held groups, the one whose lease ends first first (as many as are in flight,
-- however long the backlog)
CREATE INDEX IF NOT EXISTS campaign_queue_held
ON pgcoord.campaign_queue (run_id, due_at)
WHERE claimed_by IS NOT NULL;

-- How each message ended: one insert, never updated. attempts counts its tries
-- (for a sent message the last one, that worked, included), snoozes its snoozes;
-- error is the last failure (for a sent message, of a try before the one that worked).
-- Insert-only: the default autovacuum (triggered by inserts) keeps its visibility map
-- set for the index-only count of failures.
CREATE TABLE IF NOT EXISTS pgcoord.campaign_outcomes (
    message_id bigint PRIMARY KEY,
    run_id bigint NOT NULL,
    status text NOT NULL CHECK (status IN ('sent', 'failed', 'skipped')),
    finished_at timestamptz NOT NULL,
    attempts integer NOT NULL,
    snoozes integer NOT NULL DEFAULT 0,
    metrics jsonb,
    error text
) WITH (fillfactor = 100);

-- campaign_progress counts a run's failures here (rare); sent is derived, never counted
CREATE INDEX IF NOT EXISTS campaign_outcomes_failed
ON pgcoord.campaign_outcomes (run_id)
WHERE status = 'failed';

-- campaign_stats: the outcomes of messages that had a failed try or a snooze (rare),
-- where it sums a run's retries and snoozes without reading its other outcomes
CREATE INDEX IF NOT EXISTS campaign_outcomes_eventful
ON pgcoord.campaign_outcomes (run_id) INCLUDE (status, attempts, snoozes)
WHERE attempts > (status = 'sent')::integer OR snoozes > 0;

-- campaign_stats: a run's sent messages by finish time, read backwards for the last
-- minute's count and the last 1000's handler times, however long the run (without it,
-- both read every outcome of the run). Every sent message adds an entry, at its run's
-- end of the index: a server-side loop of claim + complete_many of 15 took 0.30 ms with
-- and without it (8 alternating rounds of 2,000 on PostgreSQL 15: within the noise).
CREATE INDEX IF NOT EXISTS campaign_outcomes_sent
ON pgcoord.campaign_outcomes (run_id, finished_at)
WHERE status = 'sent';

CREATE SEQUENCE IF NOT EXISTS pgcoord.campaign_token AS bigint;

-- db/src/040_rates.sql
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

-- db/src/functions/buffer_claim.sql
-- Claim up to p_limit conversations whose buffer is due: a flush whose time has come, a
-- batch given back whose retry time has come, or a batch whose claim's lease ran out
-- (its worker died; that counts as a failed try, and the 5th parks the batch instead).
-- Rows are taken with FOR UPDATE SKIP LOCKED, so claimers never wait on each other nor
-- share a conversation. A fresh flush takes every waiting message of the conversation
-- as the batch; a retry delivers the same batch again with its attempt number.
CREATE OR REPLACE FUNCTION pgcoord.buffer_claim(
    p_worker text,
    p_limit integer DEFAULT 10,
    p_lease interval DEFAULT interval '60 seconds'
)
RETURNS TABLE (
    conversation_key text,
    claim_token bigint,
    message_ids bigint[],
    bodies text[],
    first_message_at timestamptz,
    last_message_at timestamptz,
    attempt integer
)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the inbox through its indexes, whatever it held when the plan was made (020_inbox.sql)
SET enable_seqscan = off
-- its statements filter on an array of ids; a custom plan per call would be planned from
-- scratch every time (about half the claim's work)
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_ids bigint[] := '{}'::bigint[];
    v_row record;
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_worker) BETWEEN 1 AND 1024
        AND p_limit BETWEEN 1 AND 10000
        AND p_lease > interval '0' AND p_lease <= interval '1 day'
        AND date_trunc('month', p_lease) = interval '0'
        AND abs(extract(DAY FROM p_lease)) <= 36500 AND v_now + p_lease > v_now
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_worker), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_worker', p_worker, 'a text of 1 to 1024 bytes');
        END IF;
        IF NOT coalesce(p_limit BETWEEN 1 AND 10000, false) THEN
            PERFORM pgcoord.raise_bad_argument('p_limit', p_limit, 'from 1 to 10000');
        END IF;
        IF NOT coalesce(
            p_lease > interval '0' AND p_lease <= interval '1 day'
            AND date_trunc('month', p_lease) = interval '0'
            AND abs(extract(DAY FROM p_lease)) <= 36500 AND v_now + p_lease > v_now,
            false
        ) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_lease', p_lease, 'an interval above 0 and at most 1 day, with no months'
            );
        END IF;
    END IF;

    FOR v_row IN
        SELECT b.id, b.claimed_by
        FROM pgcoord.buffers AS b
        WHERE NOT b.dead AND b.due_at <= v_now
        ORDER BY b.due_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    LOOP
        -- an orphan (its claim's lease ran out) costs a failed try; the 5th parks it
        IF v_row.claimed_by IS NULL OR NOT pgcoord.buffer_fail_try(
            v_row.id, format('lease expired (claimed by %s)', v_row.claimed_by), v_now,
            p_final => FALSE
        ) THEN
            v_ids := v_ids || v_row.id;
        END IF;
    END LOOP;
    IF cardinality(v_ids) = 0 THEN
        RETURN;
    END IF;

    -- a fresh flush takes the waiting messages as its batch; a retry keeps its batch
    WITH taken AS (
        UPDATE pgcoord.messages AS m
        SET state = 'claimed'
        FROM pgcoord.buffers AS b
        WHERE
            b.id = any(v_ids) AND b.batch_size = 0
            AND m.conversation_key = b.conversation_key AND m.state = 'waiting'
        RETURNING b.id AS buffer_id, m.received_at
    ),

    fresh AS (
        SELECT
            taken.buffer_id,
            count(*)::integer AS size,
            min(taken.received_at) AS first_at,
            max(taken.received_at) AS last_at
        FROM taken
        GROUP BY taken.buffer_id
    )

    UPDATE pgcoord.buffers AS b
    SET batch_size = coalesce(f.size, b.batch_size),
        batch_first_at = coalesce(f.first_at, b.batch_first_at),
        batch_last_at = coalesce(f.last_at, b.batch_last_at),
        waiting = CASE WHEN f.size IS NULL THEN b.waiting ELSE 0 END,
        waiting_first_at = CASE WHEN f.size IS NULL THEN b.waiting_first_at END,
        waiting_last_at = CASE WHEN f.size IS NULL THEN b.waiting_last_at END,
        flush_at = CASE WHEN f.size IS NULL THEN b.flush_at END,
        claim_token = nextval('pgcoord.claim_token'),
        claimed_by = p_worker,
        claimed_until = v_now + p_lease,
        due_at = v_now + p_lease
    FROM unnest(v_ids) AS v (id)
    LEFT JOIN fresh AS f ON v.id = f.buffer_id
    WHERE b.id = v.id AND (b.batch_size > 0 OR f.size IS NOT NULL);

    RETURN QUERY
    SELECT
        b.conversation_key,
        b.claim_token,
        array_agg(m.id ORDER BY m.id),
        array_agg(m.body ORDER BY m.id),
        b.batch_first_at,
        b.batch_last_at,
        b.failures + 1
    FROM pgcoord.buffers AS b
    INNER JOIN pgcoord.messages AS m
        ON b.conversation_key = m.conversation_key AND m.state = 'claimed'
    WHERE b.id = any(v_ids) AND b.claimed_by = p_worker
    GROUP BY b.id
    ORDER BY b.claim_token;
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_claim(text, integer, interval) IS
'Claim up to p_limit due conversations, one claim per conversation at a time, messages '
'in arrival order; never waits on other claimers. Ranges: p_worker 1 to 1024 bytes; '
'p_limit 1 to 10000; p_lease above 0 and at most 1 day. Intervals with no months. '
'Errors: 22004 NULL argument, 22023 an argument out of its range (an infinite interval '
'included).';

-- db/src/functions/buffer_complete.sql
-- Finish a claim: its batch's messages are done. Messages that arrived after the claim
-- stay buffered, due at their own flush. A claim is current while no other claim has
-- replaced it, even after its lease ran out; a stale token changes nothing.
CREATE OR REPLACE FUNCTION pgcoord.buffer_complete(
    p_conversation_key text, p_claim_token bigint
)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the inbox through its indexes, whatever it held when the plan was made (020_inbox.sql)
SET enable_seqscan = off
AS $$
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_conversation_key) BETWEEN 1 AND 1024
        AND p_claim_token IS NOT NULL
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_conversation_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_conversation_key', p_conversation_key, 'a text of 1 to 1024 bytes'
            );
        END IF;
        IF p_claim_token IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_claim_token', p_claim_token, 'a bigint');
        END IF;
    END IF;

    -- nothing waits behind the batch (the common case): the row goes
    DELETE FROM pgcoord.buffers AS b
    WHERE
        b.conversation_key = p_conversation_key AND NOT b.dead
        AND b.claim_token = p_claim_token AND b.claimed_by IS NOT NULL
        AND b.waiting = 0;
    IF NOT FOUND THEN
        -- messages wait behind the batch: they are due at their own flush
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
            b.conversation_key = p_conversation_key AND NOT b.dead
            AND b.claim_token = p_claim_token AND b.claimed_by IS NOT NULL;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
    END IF;

    UPDATE pgcoord.messages AS m
    SET state = 'done'
    WHERE m.conversation_key = p_conversation_key AND m.state = 'claimed';
    RETURN true;
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_complete(text, bigint) IS
'Mark the messages of the claim p_claim_token done; later messages stay buffered. False, '
'changing nothing, when the claim is no longer current. Ranges: p_conversation_key 1 to '
'1024 bytes; p_claim_token any bigint. Errors: 22004 NULL argument, 22023 empty or '
'over-long conversation key.';

-- db/src/functions/buffer_due_in.sql
-- How long until buffer_claim may find work: zero when a buffer is due now, NULL when
-- nothing is buffered. Workers sleep this long (woken early by pgcoord_buffers).
CREATE OR REPLACE FUNCTION pgcoord.buffer_due_in()
RETURNS interval
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- greatest() ignores NULL: nothing buffered must stay NULL, not zero
    RETURN (
        SELECT CASE
            WHEN min(b.due_at) IS NOT NULL
                THEN greatest(min(b.due_at) - clock_timestamp(), interval '0')
        END
        FROM pgcoord.buffers AS b
        WHERE NOT b.dead
    );
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_due_in() IS
'Time until the next buffer is due (zero when one is due now, NULL when none is '
'buffered). Errors: none.';

-- db/src/functions/buffer_extend.sql
-- Heartbeat: push the lease of a current claim to now + p_lease.
CREATE OR REPLACE FUNCTION pgcoord.buffer_extend(
    p_conversation_key text,
    p_claim_token bigint,
    p_lease interval DEFAULT interval '60 seconds'
)
RETURNS timestamptz
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the inbox through its indexes, whatever it held when the plan was made (020_inbox.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_until timestamptz;
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_conversation_key) BETWEEN 1 AND 1024
        AND p_claim_token IS NOT NULL
        AND p_lease > interval '0' AND p_lease <= interval '1 day'
        AND date_trunc('month', p_lease) = interval '0'
        AND abs(extract(DAY FROM p_lease)) <= 36500 AND v_now + p_lease > v_now
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_conversation_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_conversation_key', p_conversation_key, 'a text of 1 to 1024 bytes'
            );
        END IF;
        IF p_claim_token IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_claim_token', p_claim_token, 'a bigint');
        END IF;
        IF NOT coalesce(
            p_lease > interval '0' AND p_lease <= interval '1 day'
            AND date_trunc('month', p_lease) = interval '0'
            AND abs(extract(DAY FROM p_lease)) <= 36500 AND v_now + p_lease > v_now,
            false
        ) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_lease', p_lease, 'an interval above 0 and at most 1 day, with no months'
            );
        END IF;
    END IF;

    UPDATE pgcoord.buffers AS b
    SET claimed_until = v_now + p_lease,
        due_at = v_now + p_lease
    WHERE
        b.conversation_key = p_conversation_key AND NOT b.dead
        AND b.claim_token = p_claim_token AND b.claimed_by IS NOT NULL
    RETURNING b.claimed_until INTO v_until;
    RETURN v_until;
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_extend(text, bigint, interval) IS
'New lease end of claim p_claim_token; NULL when the claim is no longer current. '
'Ranges: p_conversation_key 1 to 1024 bytes; p_lease above 0 and at most 1 day. '
'Intervals with no months. Errors: 22004 NULL argument, 22023 an argument out of its '
'range (an infinite interval included).';

-- db/src/functions/buffer_fail.sql
-- Give a claim's batch back after a failed try: it is claimable again after p_retry_in
-- with the same messages, or parked as dead after its 5th failed try (messages that
-- arrived meanwhile form the conversation's fresh buffer).
CREATE OR REPLACE FUNCTION pgcoord.buffer_fail(
    p_conversation_key text,
    p_claim_token bigint,
    p_error text,
    p_retry_in interval DEFAULT interval '60 seconds'
)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the inbox through its indexes, whatever it held when the plan was made (020_inbox.sql)
SET enable_seqscan = off
AS $$
BEGIN
    -- the checks naming a bad argument are buffer_failed's
    RETURN pgcoord.buffer_failed(p_conversation_key, p_claim_token, p_error, p_retry_in)
    IS NOT NULL;
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_fail(text, bigint, text, interval) IS
'Give the batch of claim p_claim_token back, claimable again after p_retry_in; after '
'its 5th failed try it is parked as dead. False, changing nothing, when the claim is no '
'longer current. Ranges: p_conversation_key 1 to 1024 bytes; p_retry_in 0 to 30 days. '
'Intervals with no months. Errors: 22004 NULL argument, 22023 an argument out of its '
'range (an infinite interval included).';

-- db/src/functions/buffer_fail_claim.sql
-- Internal. A failed try of the batch of claim p_claim_token of p_conversation_key
-- (buffer_fail_try: back at p_retry_at, or parked on its 5th try, or at once when
-- p_final): true when it was parked as dead, false when it is back; NULL, changing
-- nothing, when the claim is no longer current. A late one (lease run out, not yet
-- reclaimed) still holds the claim.
CREATE OR REPLACE FUNCTION pgcoord.buffer_fail_claim(
    p_conversation_key text,
    p_claim_token bigint,
    p_error text,
    p_retry_at timestamptz,
    p_final boolean
)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
-- the inbox through its indexes, whatever it held when the plan was made (020_inbox.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_buffer_id bigint;
BEGIN
    SELECT b.id INTO v_buffer_id
    FROM pgcoord.buffers AS b
    WHERE
        b.conversation_key = p_conversation_key AND NOT b.dead
        AND b.claim_token = p_claim_token AND b.claimed_by IS NOT NULL
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    RETURN pgcoord.buffer_fail_try(v_buffer_id, p_error, p_retry_at, p_final);
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_fail_claim(text, bigint, text, timestamptz, boolean) IS
'Internal. A failed try of the batch of claim p_claim_token (back at p_retry_at, parked '
'on its 5th, or at once when p_final): true when parked, false when back; NULL, '
'changing nothing, when the claim is not current. Errors: none.';

-- db/src/functions/buffer_fail_for_good.sql
-- A failed try of a claim's batch that no retry can mend (the customer blocked the
-- number, the reply window has closed): the batch is parked as dead at once with p_error
-- kept, whatever tries are left, as on its 5th failed try (messages that arrived
-- meanwhile form the conversation's fresh buffer; buffer_revive brings it back). A late
-- one (lease run out, not yet reclaimed) succeeds too. False, changing nothing, when the
-- claim is no longer current. Beyond the contract.
CREATE OR REPLACE FUNCTION pgcoord.buffer_fail_for_good(
    p_conversation_key text, p_claim_token bigint, p_error text
)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the inbox through its indexes, whatever it held when the plan was made (020_inbox.sql)
SET enable_seqscan = off
AS $$
BEGIN
    IF coalesce(octet_length(p_conversation_key), 0) NOT BETWEEN 1 AND 1024 THEN
        PERFORM pgcoord.raise_bad_argument(
            'p_conversation_key', p_conversation_key, 'a text of 1 to 1024 bytes'
        );
    END IF;
    IF p_claim_token IS NULL THEN
        PERFORM pgcoord.raise_bad_argument('p_claim_token', p_claim_token, 'a bigint');
    END IF;
    IF p_error IS NULL THEN
        PERFORM pgcoord.raise_bad_argument('p_error', p_error, 'a text');
    END IF;

    RETURN pgcoord.buffer_fail_claim(
        p_conversation_key, p_claim_token, p_error, clock_timestamp(), p_final => TRUE
    ) IS NOT NULL;
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_fail_for_good(text, bigint, text) IS
'A failed try of the batch of claim p_claim_token that no retry can mend: parked as dead '
'at once with p_error kept; true, or false and nothing changed when the claim is no '
'longer current. Beyond the contract. Ranges: p_conversation_key 1 to 1024 bytes. '
'Errors: 22004 NULL argument, 22023 empty or over-long key.';

-- db/src/functions/buffer_fail_try.sql
-- Internal. Count a failed try of the batch held by buffer row p_buffer_id (the caller
-- holds its row lock): give the batch back, claimable again at p_retry_at, or on its
-- 5th failed try (on this one, when p_final: no retry can mend it) park it as dead. A
-- parked row keeps exactly the batch's messages; the messages waiting behind it move
-- to a fresh row of the conversation, due at their own flush. Returns true when the
-- batch was parked.
CREATE OR REPLACE FUNCTION pgcoord.buffer_fail_try(
    p_buffer_id bigint, p_error text, p_retry_at timestamptz, p_final boolean
)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
-- the inbox through its indexes, whatever it held when the plan was made (020_inbox.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_row pgcoord.buffers%ROWTYPE;
BEGIN
    UPDATE pgcoord.buffers AS b
    SET failures = b.failures + 1,
        last_error = p_error,
        claimed_by = NULL,
        claimed_until = NULL,
        due_at = p_retry_at
    WHERE b.id = p_buffer_id
    RETURNING b.* INTO v_row;

    IF v_row.failures < 5 AND NOT p_final THEN
        RETURN false;
    END IF;

    UPDATE pgcoord.buffers AS b
    SET dead = true,
        due_at = NULL,
        waiting = 0,
        waiting_first_at = NULL,
        waiting_last_at = NULL,
        flush_at = NULL
    WHERE b.id = p_buffer_id;

    UPDATE pgcoord.messages AS m
    SET state = 'dead', parked_in = p_buffer_id
    WHERE m.conversation_key = v_row.conversation_key AND m.state = 'claimed';

    IF v_row.waiting > 0 THEN
        INSERT INTO pgcoord.buffers (
            conversation_key, waiting, waiting_first_at, waiting_last_at, flush_at, due_at
        )
        VALUES (
            v_row.conversation_key, v_row.waiting, v_row.waiting_first_at,
            v_row.waiting_last_at, v_row.flush_at, v_row.flush_at
        );
    END IF;
    RETURN true;
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_fail_try(bigint, text, timestamptz, boolean) IS
'Internal. Count a failed try of a buffer row''s batch (caller holds the row lock): give it '
'back until p_retry_at, or park it as dead on the 5th (at once when p_final); true when '
'parked. Errors: none.';

-- db/src/functions/buffer_failed.sql
-- buffer_fail, answering how the try ended: true when the batch was parked as dead
-- (its 5th failed try), false when it is back, claimable after p_retry_in; NULL, changing
-- nothing, when the claim is no longer current. The worker's fail, so that what makes a
-- batch dead is said here only. Beyond the contract.
CREATE OR REPLACE FUNCTION pgcoord.buffer_failed(
    p_conversation_key text,
    p_claim_token bigint,
    p_error text,
    p_retry_in interval DEFAULT interval '60 seconds'
)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the inbox through its indexes, whatever it held when the plan was made (020_inbox.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_conversation_key) BETWEEN 1 AND 1024
        AND p_claim_token IS NOT NULL
        AND p_error IS NOT NULL
        AND p_retry_in >= interval '0' AND p_retry_in <= interval '30 days'
        AND date_trunc('month', p_retry_in) = interval '0'
        AND abs(extract(DAY FROM p_retry_in)) <= 36500
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_conversation_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_conversation_key', p_conversation_key, 'a text of 1 to 1024 bytes'
            );
        END IF;
        IF p_claim_token IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_claim_token', p_claim_token, 'a bigint');
        END IF;
        IF p_error IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_error', p_error, 'a text');
        END IF;
        IF NOT coalesce(
            p_retry_in >= interval '0' AND p_retry_in <= interval '30 days'
            AND date_trunc('month', p_retry_in) = interval '0'
            AND abs(extract(DAY FROM p_retry_in)) <= 36500,
            false
        ) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_retry_in', p_retry_in, 'an interval from 0 to 30 days, with no months'
            );
        END IF;
    END IF;

    RETURN pgcoord.buffer_fail_claim(
        p_conversation_key, p_claim_token, p_error, v_now + p_retry_in, p_final => FALSE
    );
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_failed(text, bigint, text, interval) IS
'buffer_fail, answering true when the batch was parked as dead (its 5th failed try), '
'false when it is back; NULL, changing nothing, when the claim is no longer current. '
'Beyond the contract. Ranges: p_conversation_key 1 to 1024 bytes; p_retry_in 0 to 30 '
'days. Intervals with no months. Errors: 22004 NULL argument, 22023 an argument out of '
'its range (an infinite interval included).';

-- db/src/functions/buffer_release.sql
-- Give a claim back untouched, for a worker that stops before its handler finished: the
-- batch is claimable again at once and the try is not counted (like a campaign snooze),
-- so restarts and deploys never push a batch towards being parked as dead.
CREATE OR REPLACE FUNCTION pgcoord.buffer_release(
    p_conversation_key text, p_claim_token bigint
)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the inbox through its indexes, whatever it held when the plan was made (020_inbox.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_conversation_key) BETWEEN 1 AND 1024
        AND p_claim_token IS NOT NULL
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_conversation_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_conversation_key', p_conversation_key, 'a text of 1 to 1024 bytes'
            );
        END IF;
        IF p_claim_token IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_claim_token', p_claim_token, 'a bigint');
        END IF;
    END IF;

    UPDATE pgcoord.buffers AS b
    SET claimed_by = NULL,
        claimed_until = NULL,
        due_at = v_now
    WHERE
        b.conversation_key = p_conversation_key AND NOT b.dead
        AND b.claim_token = p_claim_token AND b.claimed_by IS NOT NULL;
    RETURN FOUND;
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_release(text, bigint) IS
'Give the batch of claim p_claim_token back without counting a failed try; claimable '
'again at once. False, changing nothing, when the claim is no longer current. Ranges: '
'p_conversation_key 1 to 1024 bytes; p_claim_token any bigint. Errors: 22004 NULL '
'argument, 22023 empty or over-long conversation key.';

-- db/src/functions/buffer_revive.sql
-- Replay the batches of a conversation that were parked as dead (after the cause was
-- fixed): their messages wait again in the conversation's open buffer, due at once, ahead
-- of any message that arrived later (a batch in flight keeps going first). The parked
-- rows go; the tries start again from zero. Returns how many messages were revived.
CREATE OR REPLACE FUNCTION pgcoord.buffer_revive(p_conversation_key text)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the inbox through its indexes, whatever it held when the plan was made (020_inbox.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_parked bigint[];
    v_count integer;
    v_first timestamptz;
    v_last timestamptz;
BEGIN
    IF coalesce(octet_length(p_conversation_key), 0) NOT BETWEEN 1 AND 1024 THEN
        PERFORM pgcoord.raise_bad_argument(
            'p_conversation_key', p_conversation_key, 'a text of 1 to 1024 bytes'
        );
    END IF;

    v_parked := array(
        SELECT b.id
        FROM pgcoord.buffers AS b
        WHERE b.conversation_key = p_conversation_key AND b.dead
        FOR UPDATE
    );
    IF cardinality(v_parked) = 0 THEN
        RETURN 0;
    END IF;

    WITH revived AS (
        UPDATE pgcoord.messages AS m
        SET state = 'waiting', parked_in = NULL
        WHERE m.parked_in = any(v_parked) AND m.state = 'dead'
        RETURNING m.received_at
    )

    SELECT count(*)::integer, min(revived.received_at), max(revived.received_at)
    INTO v_count, v_first, v_last
    FROM revived;

    DELETE FROM pgcoord.buffers AS b WHERE b.id = any(v_parked);

    IF v_count > 0 THEN
        INSERT INTO pgcoord.buffers AS b (
            conversation_key, waiting, waiting_first_at, waiting_last_at, flush_at, due_at
        )
        VALUES (p_conversation_key, v_count, v_first, v_last, v_now, v_now)
        ON CONFLICT (conversation_key) WHERE NOT dead DO UPDATE
        SET waiting = b.waiting + v_count,
            waiting_first_at = least(b.waiting_first_at, v_first),
            waiting_last_at = greatest(b.waiting_last_at, v_last),
            flush_at = v_now,
            due_at = CASE WHEN b.batch_size > 0 THEN b.due_at ELSE v_now END;
    END IF;
    RETURN v_count;
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_revive(text) IS
'Put the messages of the conversation''s dead batches back in its buffer, due at once; '
'returns how many. Ranges: p_conversation_key 1 to 1024 bytes. Errors: 22004 NULL '
'argument, 22023 empty or over-long conversation key.';

-- db/src/functions/campaign_busy.sql
-- A campaign worker whose claims come back full, on its LISTEN connection: end its idle
-- mark (campaign_idle) and say that a worker of run p_run_id (of every run when NULL)
-- is busy, so that enqueues into the run stop notifying while no worker of it is idle.
-- One worker of a run says so at a time (an exclusive session lock, tried without
-- waiting): true when this session now holds it, false when another does (this one
-- then holds no mark; try again later, as the one holding it may go idle or away). An
-- enqueue that finds no mark at all notifies, as for a listener that never marks.
CREATE OR REPLACE FUNCTION pgcoord.campaign_busy(p_run_id bigint DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_mark constant text := 'busy ' || coalesce(p_run_id::text, 'all');
    v_key constant integer[] := pgcoord.campaign_mark_key('busy', p_run_id);
    v_held boolean;
BEGIN
    IF coalesce(current_setting('pgcoord.campaign_mark', TRUE), '') = v_mark THEN
        RETURN TRUE;
    END IF;
    PERFORM pgcoord.campaign_unmark();
    v_held := pg_try_advisory_lock(v_key[1], v_key[2]);
    IF v_held THEN
        PERFORM set_config('pgcoord.campaign_mark', v_mark, FALSE);
    END IF;
    RETURN v_held;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_busy(bigint) IS
'For a campaign worker whose claims come back full, on its LISTEN connection: end its '
'idle mark and say that a worker of run p_run_id (of every run when NULL) is busy, so '
'that enqueues skip the NOTIFY while none is idle; true when this session holds that '
'mark (one at a time), false when another does.';

-- db/src/functions/campaign_claim.sql
-- Claim up to p_limit messages that are due, of running runs (of p_run_id only when
-- given): pending messages whose scheduled (or retry) time has come, and orphans, held
-- messages whose claim's lease ran out (their worker died). Orphans first, the oldest
-- lease end first (through the index of held groups: a few entries however long the
-- backlog); then oldest first, by the time each became due: its scheduled_at, or its
-- retry time after a fail or snooze. Groups are taken one at a time, the oldest due
-- group of any running run that no other claimer holds (FOR UPDATE SKIP LOCKED):
-- claimers never wait on each other nor share a message. Each step locks the oldest due
-- group of each running run and takes the oldest of these; the others stay locked by the
-- claim until it commits (a few rows, skipped meanwhile by other claimers). When more
-- messages are wanted after the first due group (groups of fewer messages than the
-- limit, as an enqueue of one message per call makes) and one run is running (or
-- p_run_id is given), the rest come through one cursor over that run's due groups from
-- the first one's due time on, in due order (a cursor locks only the groups it has
-- fetched): the claim descends the run's index twice however many groups it takes, and
-- steps once over the entries of the groups claimed since the last vacuum, which lie
-- before the due ones (a group that fell due before the first one meanwhile waits for
-- the next claim).
-- The groups it takes whole from that run (its first and the cursor's) that agree on
-- tries, snoozes and last error become one held row (they are deleted, and one row
-- inserted with their messages), so that completing them deletes one row; an orphan, a
-- group that fills the claim alone, a group taken in part or unlike the first, and any
-- group while several runs are running, is held in place (or its part as a row of its
-- own).
-- A lost lease counts as a failed try: attempt = 1 + failed tries. When it was the
-- message's last allowed try (tries > the run's max_retries), the message is not sent
-- again: it ends 'failed' with the error 'lease expired', and is not returned.
-- Rows come in claim order; messages that share a claim_token share one lease.
CREATE OR REPLACE FUNCTION pgcoord.campaign_claim(
    p_worker text,
    p_limit integer DEFAULT 15,
    p_lease interval DEFAULT interval '5 minutes',
    p_run_id bigint DEFAULT NULL
)
RETURNS TABLE (
    message_id bigint,
    run_id bigint,
    recipient text,
    payload jsonb,
    attempt integer,
    claim_token bigint,
    scheduled_at timestamptz
)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the queue through its indexes, whatever it held when the plan was made (030_campaigns.sql)
SET enable_seqscan = off
-- the same few statements every call: plan them once per session
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_left integer := p_limit;
    v_one_run boolean;  -- NULL until a group leaves more wanted
    v_run bigint;  -- the one run, when v_one_run (that of the claim's held group)
    v_from timestamptz;  -- the first group's due time, where the cursor starts
    v_max_retries integer;
    v_cursor refcursor;  -- NULL until opened
    v_open boolean := false;  -- whether to open it before the next group
    v_done boolean := false;
    v_orphans boolean := true;  -- whether to look for orphans before the due groups
    v_group record;
    v_size integer;
    v_take integer;
    v_tries integer;
    v_token bigint;
    v_error text;
    -- the claim's held group: the pending groups it takes whole from one run (the first,
    -- and those its cursor gives) that agree on tries, snoozes and last error, written as
    -- one row once the claim has them all
    v_set_token bigint;  -- NULL until a group joins it
    v_set_tries integer;
    v_set_snoozes integer;
    v_set_error text;
    v_set_scheduled timestamptz;
    v_set_tokens bigint[] := '{}'::bigint[];
    v_set_ids bigint[] := '{}'::bigint[];
    v_ids bigint[] := '{}'::bigint[];
    v_tokens bigint[] := '{}'::bigint[];
    v_attempts integer[] := '{}'::integer[];
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_worker) BETWEEN 1 AND 1024
        AND p_limit BETWEEN 1 AND 10000
        AND p_lease > interval '0' AND p_lease <= interval '1 day'
        AND date_trunc('month', p_lease) = interval '0'
        AND abs(extract(DAY FROM p_lease)) <= 36500 AND v_now + p_lease > v_now
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_worker), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_worker', p_worker, 'a text of 1 to 1024 bytes');
        END IF;
        IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 10000 THEN
            PERFORM pgcoord.raise_bad_argument('p_limit', p_limit, 'from 1 to 10000');
        END IF;
        PERFORM pgcoord.raise_bad_argument(
            'p_lease', p_lease, 'an interval of more than 0 and at most 1 day, with no months'
        );
    END IF;

    LOOP
        IF v_done THEN
            IF cardinality(v_set_tokens) > 0 THEN
                -- the groups leave the queue and one row holds their messages, so the
                -- claim leaves a dead tuple per group and its completion one in all,
                -- where holding each in place would leave one per group at each (for a
                -- group alone, as an UPDATE would). Its scheduled_at is the earliest of
                -- theirs (a message given back takes its own again).
                DELETE FROM pgcoord.campaign_queue AS q WHERE q.token = any(v_set_tokens);
                INSERT INTO pgcoord.campaign_queue (
                    token, run_id, due_at, scheduled_at, claimed_by, tries, snoozes,
                    last_error, message_ids
                )
                VALUES (
                    v_set_token, v_run, v_now + p_lease, v_set_scheduled, p_worker,
                    v_set_tries, v_set_snoozes, v_set_error, v_set_ids
                );
            END IF;
            EXIT;
        END IF;

        IF v_open THEN
            OPEN v_cursor FOR
            SELECT
                q.token, q.run_id, q.due_at, q.claimed_by, q.tries, q.snoozes, q.last_error,
                q.scheduled_at, q.message_ids, v_max_retries AS max_retries
            FROM pgcoord.campaign_queue AS q
            WHERE
                q.run_id = v_run AND q.due_at >= v_from AND q.due_at <= v_now
                -- the first group, when it waits to be held with the cursor's
                AND q.token <> all(v_set_tokens)
            ORDER BY q.due_at
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED;
            v_open := false;
        END IF;
        IF v_cursor IS NULL AND v_orphans THEN
            -- orphans first, the oldest lease end first: their messages were claimed
            -- before those still pending (their worker died), and would otherwise wait
            -- behind every group that fell due before their lease ran out. Read through
            -- the index of held groups, a few entries however long the backlog.
            SELECT
                g.token, g.run_id, g.due_at, g.claimed_by, g.tries, g.snoozes, g.last_error,
                g.scheduled_at, g.message_ids, r.max_retries
            INTO v_group
            FROM pgcoord.campaign_runs AS r
            CROSS JOIN LATERAL (
                SELECT
                    q.token, q.run_id, q.due_at, q.claimed_by, q.tries, q.snoozes,
                    q.last_error, q.scheduled_at, q.message_ids
                FROM pgcoord.campaign_queue AS q
                WHERE q.run_id = r.id AND q.claimed_by IS NOT NULL AND q.due_at <= v_now
                ORDER BY q.due_at
                LIMIT 1
                FOR UPDATE SKIP LOCKED
            ) AS g
            WHERE r.status = 'running' AND (r.id = p_run_id OR p_run_id IS NULL)
            ORDER BY g.due_at
            LIMIT 1;
            v_orphans := FOUND;
        END IF;
        IF v_cursor IS NULL AND NOT v_orphans THEN
            -- the oldest due group of each running run (of p_run_id when given) is
            -- locked and the oldest of these taken: one statement per group
            SELECT
                g.token, g.run_id, g.due_at, g.claimed_by, g.tries, g.snoozes, g.last_error,
                g.scheduled_at, g.message_ids, r.max_retries
            INTO v_group
            FROM pgcoord.campaign_runs AS r
            CROSS JOIN LATERAL (
                SELECT
                    q.token, q.run_id, q.due_at, q.claimed_by, q.tries, q.snoozes,
                    q.last_error, q.scheduled_at, q.message_ids
                FROM pgcoord.campaign_queue AS q
                WHERE q.run_id = r.id AND q.due_at <= v_now
                ORDER BY q.due_at
                LIMIT 1
                FOR UPDATE SKIP LOCKED
            ) AS g
            WHERE r.status = 'running' AND (r.id = p_run_id OR p_run_id IS NULL)
            ORDER BY g.due_at
            LIMIT 1;
        ELSIF v_cursor IS NOT NULL THEN
            -- the run's next due group through its cursor
            FETCH v_cursor INTO v_group;
        END IF;
        IF NOT FOUND THEN
            v_done := true;
            CONTINUE;
        END IF;

        -- an orphan: its lost lease is a failed try
        v_tries := v_group.tries + (v_group.claimed_by IS NOT NULL)::integer;

        -- more wanted after the first group (groups of fewer messages than the limit, as
        -- an enqueue of one message per call makes): from one running run, the rest come
        -- through one cursor over its due groups in due order, one descent of its index
        -- for the whole claim (a cursor locks only the groups it has fetched)
        IF v_one_run IS NULL AND NOT v_orphans AND (
            v_tries > v_group.max_retries OR cardinality(v_group.message_ids) < v_left
        ) THEN
            v_one_run := p_run_id IS NOT NULL OR (
                SELECT count(*) FROM pgcoord.campaign_runs AS r WHERE r.status = 'running'
            ) = 1;
            IF v_one_run THEN
                v_run := v_group.run_id;
                v_from := v_group.due_at;
                v_max_retries := v_group.max_retries;
                v_open := true;
            END IF;
        END IF;

        IF v_tries > v_group.max_retries THEN
            -- that was its last allowed try: failed for good, not sent again
            WITH gone AS (
                DELETE FROM pgcoord.campaign_queue AS q
                WHERE q.token = v_group.token
                RETURNING q.run_id, q.snoozes, q.message_ids
            )

            INSERT INTO pgcoord.campaign_outcomes (
                message_id, run_id, status, finished_at, attempts, snoozes, error
            )
            SELECT m.id, gone.run_id, 'failed', v_now, v_tries, gone.snoozes, 'lease expired'
            FROM gone CROSS JOIN LATERAL unnest(gone.message_ids) AS m (id);
        ELSE
            v_size := cardinality(v_group.message_ids);
            v_take := least(v_size, v_left);
            v_error := CASE
                WHEN v_group.claimed_by IS NULL THEN v_group.last_error ELSE 'lease expired'
            END;
            IF v_take = v_size AND v_one_run AND (
                v_set_token IS NULL
                OR v_tries = v_set_tries AND v_group.snoozes = v_set_snoozes
                AND v_error IS NOT DISTINCT FROM v_set_error
            ) THEN
                -- taken whole from the one run: into the claim's held group (still
                -- pending until written)
                IF v_set_token IS NULL THEN
                    v_set_token := nextval('pgcoord.campaign_token');
                    v_set_tries := v_tries;
                    v_set_snoozes := v_group.snoozes;
                    v_set_error := v_error;
                    v_set_scheduled := v_group.scheduled_at;
                END IF;
                v_set_scheduled := least(v_set_scheduled, v_group.scheduled_at);
                v_set_tokens := v_set_tokens || v_group.token;
                v_set_ids := v_set_ids || v_group.message_ids;
                v_token := v_set_token;
            ELSIF v_take = v_size THEN
                -- taken whole: alone (it fills the claim), unlike the claim's held
                -- group, or with several runs running: held in place
                v_token := nextval('pgcoord.campaign_token');
                UPDATE pgcoord.campaign_queue AS q
                SET token = v_token,
                    due_at = v_now + p_lease,
                    claimed_by = p_worker,
                    tries = v_tries,
                    last_error = v_error
                WHERE q.token = v_group.token;
            ELSE
                -- the first v_take messages; the rest stay in the row as they were (a HOT
                -- update: no indexed column changes)
                v_token := nextval('pgcoord.campaign_token');
                WITH rest AS (
                    UPDATE pgcoord.campaign_queue AS q
                    SET message_ids = q.message_ids[v_take + 1:]
                    WHERE q.token = v_group.token
                    RETURNING q.run_id, q.scheduled_at, q.snoozes
                )

                INSERT INTO pgcoord.campaign_queue (
                    token, run_id, due_at, scheduled_at, claimed_by, tries, snoozes,
                    last_error, message_ids
                )
                SELECT
                    v_token, rest.run_id, v_now + p_lease, rest.scheduled_at, p_worker,
                    v_tries, rest.snoozes, v_error, v_group.message_ids[:v_take]
                FROM rest;
            END IF;

            v_ids := v_ids || v_group.message_ids[:v_take];
            v_tokens := v_tokens || array_fill(v_token, ARRAY[v_take]);
            v_attempts := v_attempts || array_fill(v_tries + 1, ARRAY[v_take]);
            v_left := v_left - v_take;
        END IF;
        IF v_left = 0 THEN
            v_done := true;
        END IF;
    END LOOP;

    IF v_cursor IS NOT NULL THEN
        CLOSE v_cursor;
    END IF;

    IF cardinality(v_ids) = 0 THEN
        IF p_run_id IS NOT NULL AND NOT EXISTS (
            SELECT FROM pgcoord.campaign_runs AS r WHERE r.id = p_run_id
        ) THEN
            PERFORM pgcoord.raise_bad_argument('p_run_id', p_run_id, 'the id of a campaign run');
        END IF;
        RETURN;
    END IF;

    RETURN QUERY
    SELECT m.id, m.run_id, m.recipient, m.payload, c.attempt, c.token, m.scheduled_at
    FROM unnest(v_ids, v_tokens, v_attempts) WITH ORDINALITY AS c (id, token, attempt, n)
    INNER JOIN pgcoord.campaign_messages AS m ON c.id = m.id
    ORDER BY c.n;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_claim(text, integer, interval, bigint) IS
'Claim up to p_limit due messages of running runs (of p_run_id when given), orphans '
'(lease run out) first, then the oldest due first, never waiting on other claimers; '
'an orphan counts a failed try, '
'and one whose last try that was ends failed with error ''lease expired''. Ranges: '
'p_worker 1 to 1024 bytes, p_limit 1 to 10000, p_lease more than 0 and at most 1 day. '
'Intervals with no months. Errors: 22004 NULL argument, 22023 a value out of its range '
'or an unknown p_run_id.';

-- db/src/functions/campaign_complete.sql
-- Mark a claimed message sent, with its metrics. The claim is current while no other
-- claim has replaced it, even after its lease ran out; a stale token changes nothing.
-- The message leaves its group (the group goes with its last message) and its outcome
-- is written once.
CREATE OR REPLACE FUNCTION pgcoord.campaign_complete(
    p_message_id bigint,
    p_claim_token bigint,
    p_metrics jsonb DEFAULT '{}'
)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the queue through its indexes, whatever it held when the plan was made (030_campaigns.sql)
SET enable_seqscan = off
AS $$
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        p_message_id IS NOT NULL
        AND p_claim_token IS NOT NULL
        AND jsonb_typeof(p_metrics) = 'object'
    ) IS NOT TRUE THEN
        IF p_message_id IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_message_id', p_message_id, 'a message id');
        END IF;
        IF p_claim_token IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_claim_token', p_claim_token, 'a bigint');
        END IF;
        PERFORM pgcoord.raise_bad_argument('p_metrics', p_metrics, 'a JSON object');
    END IF;

    WITH held AS (
        SELECT
            q.token, q.run_id, q.tries, q.snoozes, q.last_error,
            cardinality(q.message_ids) AS size
        FROM pgcoord.campaign_queue AS q
        WHERE
            q.token = p_claim_token AND q.claimed_by IS NOT NULL
            AND p_message_id = any(q.message_ids)
        FOR UPDATE
    ),

    emptied AS (
        DELETE FROM pgcoord.campaign_queue AS q
        USING held
        -- q read by the token alone, whatever the plan's estimates
        WHERE q.token = held.token AND held.size = 1 AND q.token = p_claim_token
    ),

    shrunk AS (
        UPDATE pgcoord.campaign_queue AS q
        SET message_ids = array_remove(q.message_ids, p_message_id)
        FROM held
        WHERE q.token = held.token AND held.size > 1 AND q.token = p_claim_token
    )

    INSERT INTO pgcoord.campaign_outcomes (
        message_id, run_id, status, finished_at, attempts, snoozes, metrics, error
    )
    SELECT p_message_id, held.run_id, 'sent', clock_timestamp(), held.tries + 1, held.snoozes,
        p_metrics, held.last_error
    FROM held;
    RETURN FOUND;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_complete(bigint, bigint, jsonb) IS
'Mark message p_message_id of claim p_claim_token sent, storing p_metrics (a JSON '
'object); false, changing nothing, when the claim is no longer current. Errors: 22004 '
'NULL argument, 22023 p_metrics not a JSON object.';

-- db/src/functions/campaign_complete_many.sql
-- campaign_complete for many messages in one statement (a worker batching its
-- completions): element i of each array belongs together; p_metrics NULL stores {} for
-- each. Returns how many were current and are now sent; stale pairs are skipped, a
-- message given twice counts once. The groups are locked in token order, so two calls
-- over the same claims cannot deadlock; each group is changed once (deleted when all its
-- messages are done).
CREATE OR REPLACE FUNCTION pgcoord.campaign_complete_many(
    p_message_ids bigint[],
    p_claim_tokens bigint[],
    p_metrics jsonb[] DEFAULT NULL
)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- the statement and its argument checks live once, in campaign_completed
    RETURN cardinality(pgcoord.campaign_completed(p_message_ids, p_claim_tokens, p_metrics));
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_complete_many(bigint[], bigint[], jsonb[]) IS
'Mark sent each message p_message_ids[i] of claim p_claim_tokens[i], storing '
'p_metrics[i] ({} when p_metrics is NULL); returns how many were current (stale ones '
'are skipped). Errors: 22004 NULL array, 22023 arrays of unequal length, NULL elements, '
'more than one dimension, or a metrics element that is not a JSON object.';

-- db/src/functions/campaign_completed.sql
-- campaign_complete for many messages in one statement, answering which ones it marked
-- sent (beyond the contract: a worker batching its completions logs each message;
-- campaign_complete_many counts them). Element i of each array belongs together;
-- p_metrics NULL stores {} for each; stale pairs are skipped, a message given twice
-- counts once. The groups are locked in token order, so two calls over the same claims
-- cannot deadlock; each group is changed once (deleted when all its messages are done).
CREATE OR REPLACE FUNCTION pgcoord.campaign_completed(
    p_message_ids bigint[],
    p_claim_tokens bigint[],
    p_metrics jsonb[] DEFAULT NULL
)
RETURNS bigint[]
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the queue through its indexes, whatever it held when the plan was made (030_campaigns.sql)
SET enable_seqscan = off
-- its statement filters on arrays: a custom plan would be made afresh every call
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_ids bigint[];
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        coalesce(array_ndims(p_message_ids), 1) = 1
        AND coalesce(array_ndims(p_claim_tokens), 1) = 1
        AND coalesce(array_ndims(p_metrics), 1) = 1
        AND cardinality(p_message_ids) = cardinality(p_claim_tokens)
        AND cardinality(p_message_ids) = coalesce(cardinality(p_metrics), cardinality(p_message_ids))
        AND array_position(p_message_ids, NULL) IS NULL
        AND array_position(p_claim_tokens, NULL) IS NULL
        AND (
            p_metrics IS NULL
            OR (
                SELECT bool_and(coalesce(jsonb_typeof(e.metrics) = 'object', false))
                FROM unnest(p_metrics) AS e (metrics)
            )
            OR cardinality(p_metrics) = 0
        )
    ) IS NOT TRUE THEN
        IF p_message_ids IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_message_ids', p_message_ids, 'an array');
        END IF;
        IF p_claim_tokens IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_claim_tokens', p_claim_tokens, 'an array');
        END IF;
        IF array_ndims(p_message_ids) > 1 OR array_position(p_message_ids, NULL) IS NOT NULL THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_message_ids', p_message_ids, 'a one-dimensional array without NULLs'
            );
        END IF;
        IF array_ndims(p_claim_tokens) > 1 OR array_position(p_claim_tokens, NULL) IS NOT NULL THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_claim_tokens', p_claim_tokens, 'a one-dimensional array without NULLs'
            );
        END IF;
        IF cardinality(p_claim_tokens) <> cardinality(p_message_ids) THEN
            RAISE EXCEPTION 'p_claim_tokens must have as many elements as p_message_ids, '
                'got % and %', cardinality(p_claim_tokens), cardinality(p_message_ids)
                USING ERRCODE = '22023';
        END IF;
        IF cardinality(p_metrics) <> cardinality(p_message_ids) THEN
            RAISE EXCEPTION 'p_metrics must have as many elements as p_message_ids (or be '
                'NULL), got % and %', cardinality(p_metrics), cardinality(p_message_ids)
                USING ERRCODE = '22023';
        END IF;
        PERFORM pgcoord.raise_bad_argument(
            'p_metrics', p_metrics, 'NULL or a one-dimensional array of JSON objects'
        );
    END IF;

    WITH given AS (
        SELECT g.id, g.token, coalesce(g.metrics, '{}'::jsonb) AS metrics
        FROM unnest(
            p_message_ids,
            p_claim_tokens,
            coalesce(p_metrics, array_fill(NULL::jsonb, ARRAY[cardinality(p_message_ids)]))
        ) AS g (id, token, metrics)
    ),

    held AS (
        SELECT q.token, q.run_id, q.tries, q.snoozes, q.last_error, q.message_ids
        FROM pgcoord.campaign_queue AS q
        WHERE q.token = any(p_claim_tokens) AND q.claimed_by IS NOT NULL
        ORDER BY q.token
        FOR UPDATE
    ),

    done AS (
        SELECT DISTINCT ON (given.id)
            given.id, given.metrics, held.token, held.run_id, held.tries, held.snoozes,
            held.last_error
        FROM given
        INNER JOIN held ON given.token = held.token AND given.id = any(held.message_ids)
        ORDER BY given.id
    ),

    per_group AS (
        SELECT done.token, array_agg(done.id) AS ids
        FROM done
        GROUP BY done.token
    ),

    emptied AS (
        DELETE FROM pgcoord.campaign_queue AS q
        USING per_group AS p, held AS h
        WHERE
            q.token = p.token AND h.token = p.token
            AND cardinality(p.ids) = cardinality(h.message_ids)
            -- implied by held; said again so that q is read by these tokens alone
            AND q.token = any(p_claim_tokens)
    ),

    shrunk AS (
        UPDATE pgcoord.campaign_queue AS q
        SET message_ids = array(
            SELECT m.id FROM unnest(q.message_ids) WITH ORDINALITY AS m (id, n)
            WHERE m.id <> all(p.ids)
            ORDER BY m.n
        )
        FROM per_group AS p, held AS h
        WHERE
            q.token = p.token AND h.token = p.token
            AND cardinality(p.ids) < cardinality(h.message_ids)
            AND q.token = any(p_claim_tokens)
    ),

    sent AS (
        INSERT INTO pgcoord.campaign_outcomes (
            message_id, run_id, status, finished_at, attempts, snoozes, metrics, error
        )
        SELECT done.id, done.run_id, 'sent', v_now, done.tries + 1, done.snoozes, done.metrics,
            done.last_error
        FROM done
        RETURNING message_id
    )

    SELECT coalesce(array_agg(sent.message_id), '{}') INTO v_ids FROM sent;
    RETURN v_ids;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_completed(bigint[], bigint[], jsonb[]) IS
'campaign_complete_many that returns the ids of the messages it marked sent (the '
'others'' claims were no longer current), for a worker that logs each message. '
'Errors: 22004 NULL array, 22023 arrays of unequal length, NULL elements, more than one '
'dimension, or a metrics element that is not a JSON object.';

-- db/src/functions/campaign_completed_then_claim.sql
-- A campaign worker's hot path in one call (beyond the contract): campaign_completed of
-- its successes, then campaign_claim, which sees them, in one transaction. Rows come in
-- claim order; `completed` (the ids campaign_completed marked sent) is set on the first
-- row only and NULL on the others; when nothing is claimed, one row with `completed` and
-- every other column NULL. p_metrics is one JSON array of objects (or NULL), as
-- campaign_metrics takes it. A function so that the statement a client
-- sends is a plain call, cheap to parse and plan each time (a client that cannot prepare
-- it, behind a transaction-mode pooler, parses and plans it on every call). Every
-- argument is given: the defaults are campaign_claim's, kept there alone (p_run_id NULL:
-- every run).
CREATE OR REPLACE FUNCTION pgcoord.campaign_completed_then_claim(
    p_message_ids bigint[],
    p_claim_tokens bigint[],
    p_metrics jsonb,
    p_worker text,
    p_limit integer,
    p_lease interval,
    p_run_id bigint
)
RETURNS TABLE (
    completed bigint[],
    message_id bigint,
    run_id bigint,
    recipient text,
    payload jsonb,
    attempt integer,
    claim_token bigint,
    scheduled_at timestamptz
)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the queue through its indexes, whatever it held when the plan was made (030_campaigns.sql)
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_completed bigint[];
BEGIN
    v_completed := pgcoord.campaign_completed(
        p_message_ids, p_claim_tokens, pgcoord.campaign_metrics(p_metrics)
    );
    RETURN QUERY
    SELECT
        CASE WHEN c.n = 1 THEN v_completed END,
        c.message_id, c.run_id, c.recipient, c.payload, c.attempt, c.claim_token, c.scheduled_at
    FROM pgcoord.campaign_claim(p_worker, p_limit, p_lease, p_run_id) WITH ORDINALITY AS c (
        message_id, run_id, recipient, payload, attempt, claim_token, scheduled_at, n
    )
    ORDER BY c.n;
    IF NOT FOUND THEN
        completed := v_completed;
        RETURN NEXT;
    END IF;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_completed_then_claim(
    bigint[], bigint[], jsonb, text, integer, interval, bigint
) IS
'A worker''s completions (campaign_completed) then its next claim (campaign_claim), in one '
'call: the completed ids on the first row, then the claimed messages.';

-- db/src/functions/campaign_create.sql
-- Start a campaign run, in status 'running'. Its retry policy is fixed for its life: a
-- message is tried at most p_max_retries + 1 times; after its n-th failed try it waits
-- p_retry_backoff[n] (the last element repeats); campaign_skip_stale skips by default
-- the pending messages scheduled more than p_stale_after ago.
CREATE OR REPLACE FUNCTION pgcoord.campaign_create(
    p_name text,
    p_max_retries integer DEFAULT 3,
    p_retry_backoff interval[] DEFAULT '{5 minutes,15 minutes,30 minutes}',
    p_stale_after interval DEFAULT interval '1 hour'
)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_run_id bigint;
BEGIN
    IF coalesce(octet_length(p_name), 0) NOT BETWEEN 1 AND 1024 THEN
        PERFORM pgcoord.raise_bad_argument('p_name', p_name, 'a text of 1 to 1024 bytes');
    END IF;
    IF p_max_retries IS NULL OR p_max_retries NOT BETWEEN 0 AND 100 THEN
        PERFORM pgcoord.raise_bad_argument('p_max_retries', p_max_retries, 'from 0 to 100');
    END IF;
    IF p_retry_backoff IS NULL THEN
        PERFORM pgcoord.raise_bad_argument('p_retry_backoff', p_retry_backoff, 'given');
    END IF;
    IF
        array_ndims(p_retry_backoff) IS DISTINCT FROM 1
        OR cardinality(p_retry_backoff) > 100
        OR array_lower(p_retry_backoff, 1) <> 1
        OR NOT coalesce(
            (
                SELECT
                    bool_and(
                        coalesce(
                            b.delay >= interval '0' AND b.delay <= interval '30 days'
                            AND date_trunc('month', b.delay) = interval '0'
                            AND abs(extract(DAY FROM b.delay)) <= 36500,
                            false
                        )
                    )
                FROM unnest(p_retry_backoff) AS b (delay)
            ),
            false
        )
    THEN
        PERFORM pgcoord.raise_bad_argument(
            'p_retry_backoff', p_retry_backoff,
            'a list of 1 to 100 intervals, each from 0 to 30 days, with no months'
        );
    END IF;
    -- stored and applied later, by the calendar: none of its parts (months, days, time)
    -- may be negative, or its length could be negative on some dates ('1 mon -30 days 1
    -- second' compares as 1 second, and is almost 2 days below 0 from February 3)
    IF NOT coalesce(
        p_stale_after > interval '0' AND p_stale_after <= interval '100 years'
        AND date_trunc('month', p_stale_after) >= interval '0'
        AND date_trunc('day', p_stale_after) >= date_trunc('month', p_stale_after)
        AND p_stale_after >= date_trunc('day', p_stale_after),
        false
    ) THEN
        PERFORM pgcoord.raise_bad_argument(
            'p_stale_after', p_stale_after,
            'an interval of more than 0 and at most 100 years, with no negative part'
        );
    END IF;

    INSERT INTO pgcoord.campaign_runs AS r (
        name, max_retries, retry_backoff, stale_after, created_at, status_changed_at
    )
    VALUES (p_name, p_max_retries, p_retry_backoff, p_stale_after, v_now, v_now)
    RETURNING r.id INTO v_run_id;
    RETURN v_run_id;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_create(text, integer, interval[], interval) IS
'Start a campaign run in status running; returns its id. Ranges: p_name 1 to 1024 '
'bytes, p_max_retries 0 to 100, p_retry_backoff 1 to 100 intervals of 0 to 30 days '
'each, with no months (the last repeats), p_stale_after more than 0 and at most 100 '
'years, with no negative part. Errors: 22004 NULL argument, 22023 a value out of its '
'range.';

-- db/src/functions/campaign_due_in.sql
-- How long until campaign_claim may find work in a running run (in p_run_id when
-- given): zero when a message is due now, the time until the next scheduled or retry
-- time or the end of a lease (an orphan is claimable then), NULL when no running run
-- has a message pending or held. An idle worker sleeps this long, woken early by
-- pgcoord_campaigns.
CREATE OR REPLACE FUNCTION pgcoord.campaign_due_in(p_run_id bigint DEFAULT NULL)
RETURNS interval
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the queue through its indexes, whatever it held when the plan was made (030_campaigns.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_next timestamptz;
BEGIN
    IF p_run_id IS NULL THEN
        SELECT min(n.due_at) INTO v_next
        FROM pgcoord.campaign_runs AS r
        CROSS JOIN LATERAL (
            SELECT q.due_at
            FROM pgcoord.campaign_queue AS q
            WHERE q.run_id = r.id
            ORDER BY q.due_at
            LIMIT 1
        ) AS n
        WHERE r.status = 'running';
    ELSE
        IF NOT EXISTS (SELECT FROM pgcoord.campaign_runs AS r WHERE r.id = p_run_id) THEN
            PERFORM pgcoord.raise_bad_argument('p_run_id', p_run_id, 'the id of a campaign run');
        END IF;
        -- the first of the run's groups in its index order (no rows: NULL)
        SELECT q.due_at INTO v_next
        FROM pgcoord.campaign_queue AS q
        WHERE
            q.run_id = p_run_id
            AND EXISTS (
                SELECT FROM pgcoord.campaign_runs AS r
                WHERE r.id = p_run_id AND r.status = 'running'
            )
        ORDER BY q.due_at
        LIMIT 1;
    END IF;
    -- greatest() ignores NULL: nothing to wait for must stay NULL, not zero
    IF v_next IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN greatest(v_next - clock_timestamp(), interval '0');
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_due_in(bigint) IS
'Time until a message of a running run (of p_run_id when given) is due or a lease ends '
'(zero when one is due now, NULL when none is pending or held). Errors: 22023 unknown '
'p_run_id.';

-- db/src/functions/campaign_enqueue.sql
-- Add messages to a run: p_items is a JSON array of {"recipient": text, "payload":
-- object (default {}), "scheduled_at": timestamptz as a JSON string (default the server
-- clock at the call)}. All or nothing: the first malformed item (counted from 0) raises,
-- naming its index and field, before anything is stored. A field that is present must
-- have its type (a JSON null is no payload), and an unknown field is refused (a typo in
-- "scheduled_at" must not send at once). A paused run takes messages (they wait for it);
-- a cancelled or finished one refuses them. Messages scheduled at the same instant are
-- stored in groups of up to 15 (see 030_campaigns.sql); enqueue order is claim order
-- among them. When the run is running, the workers are told once of the first message
-- enqueued (campaign_wake: when it is due within 5 seconds, the longest an idle
-- campaign worker sleeps), unless its workers have said they are busy and none is idle
-- (campaign_notify_wanted): busy workers find the messages by their next claims, and
-- enqueues that notify no one never take turns at the commit.
CREATE OR REPLACE FUNCTION pgcoord.campaign_enqueue(p_run_id bigint, p_items jsonb)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_count integer;
    v_index bigint;
    v_field text;
    v_item jsonb;
    v_status text;
    v_first timestamptz;
    v_low bigint;
    v_high bigint;
    v_notify boolean := FALSE;
BEGIN
    IF p_run_id IS NULL THEN
        PERFORM pgcoord.raise_bad_argument('p_run_id', p_run_id, 'a run id');
    END IF;
    IF coalesce(jsonb_typeof(p_items), '') <> 'array' THEN
        PERFORM pgcoord.raise_bad_argument('p_items', p_items, 'a JSON array of items');
    END IF;

    -- the first item of the wrong shape, without casting anything
    SELECT s.n, s.field, s.item INTO v_index, v_field, v_item
    FROM (
        SELECT
            t.n - 1 AS n,
            t.item,
            CASE
                WHEN jsonb_typeof(t.item) <> 'object' THEN ''
                WHEN t.item - '{recipient,payload,scheduled_at}'::text[] <> '{}'::jsonb
                    THEN 'unknown'
                WHEN
                    coalesce(jsonb_typeof(t.item -> 'recipient'), '') <> 'string'
                    OR octet_length(t.item ->> 'recipient') NOT BETWEEN 1 AND 1024
                    THEN 'recipient'
                WHEN jsonb_typeof(t.item -> 'payload') <> 'object' THEN 'payload'
                WHEN jsonb_typeof(t.item -> 'scheduled_at') <> 'string' THEN 'scheduled_at'
            END AS field
        FROM jsonb_array_elements(p_items) WITH ORDINALITY AS t (item, n)
    ) AS s
    WHERE s.field IS NOT NULL
    ORDER BY s.n
    LIMIT 1;
    IF NOT FOUND AND p_items @? '$[*].scheduled_at' THEN
        -- every scheduled_at is a string: the first that is no timestamp a client can
        -- read (years 1 to 9999; a block with an exception handler costs a
        -- subtransaction, so only when some item has one)
        BEGIN
            SELECT t.n - 1, t.item INTO v_index, v_item
            FROM jsonb_array_elements(p_items) WITH ORDINALITY AS t (item, n)
            WHERE
                t.item ? 'scheduled_at'
                AND NOT (
                    (t.item ->> 'scheduled_at')::timestamptz
                    >= timestamptz '0001-01-01 00:00:00+00'
                    AND (t.item ->> 'scheduled_at')::timestamptz
                    < timestamptz '10000-01-01 00:00:00+00'
                )
            ORDER BY t.n
            LIMIT 1;
        EXCEPTION
            WHEN data_exception THEN
                -- a text that is no timestamp at all: find it one item at a time
                v_index := NULL;
                FOR v_index, v_item IN
                    SELECT t.n - 1, t.item
                    FROM jsonb_array_elements(p_items) WITH ORDINALITY AS t (item, n)
                    WHERE t.item ? 'scheduled_at'
                    ORDER BY t.n
                LOOP
                    BEGIN
                        PERFORM (v_item ->> 'scheduled_at')::timestamptz;
                    EXCEPTION
                        WHEN data_exception THEN EXIT;
                    END;
                END LOOP;
        END;
        IF v_item IS NOT NULL THEN
            v_field := 'scheduled_at';
        END IF;
    END IF;
    IF v_field IS NOT NULL THEN
        RAISE EXCEPTION '%', CASE v_field
            WHEN '' THEN format('p_items[%s] must be a JSON object, got %s',
                v_index, left(v_item::text, 80))
            WHEN 'unknown' THEN format(
                'p_items[%s] has an unknown field %s (the fields are recipient, payload, '
                'scheduled_at)', v_index, left((
                    SELECT string_agg(k.key, ', ')
                    FROM jsonb_object_keys(v_item - '{recipient,payload,scheduled_at}'::text[]) AS k (key)
                ), 80))
            WHEN 'recipient' THEN format(
                'p_items[%s].recipient must be a JSON string of 1 to 1024 bytes, got %s',
                v_index, left(coalesce((v_item -> 'recipient')::text, 'nothing'), 80))
            WHEN 'payload' THEN format(
                'p_items[%s].payload must be a JSON object, got %s',
                v_index, left((v_item -> 'payload')::text, 80))
            ELSE format(
                'p_items[%s].scheduled_at must be a timestamp with time zone in the years 1 '
                'to 9999, as a JSON string, got %s',
                v_index, left((v_item -> 'scheduled_at')::text, 80))
        END
            USING ERRCODE = '22023';
    END IF;

    -- the run's row, share-locked: a concurrent change of its status (which locks it for
    -- update) waits for this call or this call for it, while enqueues into one run never
    -- wait for each other (an exclusive lock held to the commit made them take turns,
    -- one commit at a time)
    SELECT r.status INTO v_status
    FROM pgcoord.campaign_runs AS r
    WHERE r.id = p_run_id
    FOR SHARE;
    IF NOT FOUND THEN
        PERFORM pgcoord.raise_bad_argument('p_run_id', p_run_id, 'the id of a campaign run');
    END IF;
    IF v_status IN ('cancelled', 'finished') THEN
        RAISE EXCEPTION 'p_run_id: run % is %; it takes no more messages', p_run_id, v_status
            USING ERRCODE = '22023';
    END IF;
    v_count := jsonb_array_length(p_items);
    IF v_count = 0 THEN
        RETURN 0;
    END IF;
    IF v_status = 'running' THEN
        v_notify := pgcoord.campaign_notify_wanted(p_run_id);
    END IF;

    IF v_count = 1 THEN
        -- one message (a producer handing messages over as they come): a group of its
        -- own, by two plain inserts (half the work of the statement below)
        INSERT INTO pgcoord.campaign_messages AS m (run_id, recipient, payload, scheduled_at)
        VALUES (
            p_run_id,
            p_items -> 0 ->> 'recipient',
            coalesce(p_items -> 0 -> 'payload', '{}'::jsonb),
            coalesce((p_items -> 0 ->> 'scheduled_at')::timestamptz, v_now)
        )
        RETURNING m.id, m.id, m.scheduled_at INTO v_low, v_high, v_first;
        INSERT INTO pgcoord.campaign_queue (token, run_id, due_at, scheduled_at, message_ids)
        VALUES (nextval('pgcoord.campaign_token'), p_run_id, v_first, v_first, ARRAY[v_low]);
    ELSE
        -- messages in item order (the ids grow with it); then groups of up to 15 messages
        -- scheduled at the same instant
        WITH stored AS (
            INSERT INTO pgcoord.campaign_messages AS m (run_id, recipient, payload, scheduled_at)
            SELECT
                p_run_id,
                t.item ->> 'recipient',
                coalesce(t.item -> 'payload', '{}'::jsonb),
                coalesce((t.item ->> 'scheduled_at')::timestamptz, v_now)
            FROM jsonb_array_elements(p_items) AS t (item)
            RETURNING m.id, m.scheduled_at
        ),

        grouped AS (
            SELECT
                s.scheduled_at,
                array_agg(s.id ORDER BY s.id) AS ids
            FROM (
                SELECT
                    stored.id,
                    stored.scheduled_at,
                    (row_number() OVER (PARTITION BY stored.scheduled_at ORDER BY stored.id) - 1)
                    / 15 AS part
                FROM stored
            ) AS s
            GROUP BY s.scheduled_at, s.part
        ),

        queued AS (
            INSERT INTO pgcoord.campaign_queue AS q (token, run_id, due_at, scheduled_at, message_ids)
            SELECT nextval('pgcoord.campaign_token'), p_run_id, g.scheduled_at, g.scheduled_at, g.ids
            FROM grouped AS g
            ORDER BY g.scheduled_at, g.ids[1]
            RETURNING q.due_at
        )

        SELECT (SELECT min(queued.due_at) FROM queued), ids.low, ids.high
        INTO v_first, v_low, v_high
        FROM (SELECT min(stored.id) AS low, max(stored.id) AS high FROM stored) AS ids;
    END IF;

    INSERT INTO pgcoord.campaign_enqueues (run_id, first_message_id, last_message_id, messages)
    VALUES (p_run_id, v_low, v_high, v_count);

    IF v_notify THEN
        PERFORM pgcoord.campaign_wake(p_run_id, v_now, v_first);
    END IF;
    RETURN v_count;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_enqueue(bigint, jsonb) IS
'Enqueue the items of the JSON array p_items ({"recipient": 1 to 1024 bytes, "payload": '
'object, default {}, "scheduled_at": timestamptz string in the years 1 to 9999, default '
'now}) into run p_run_id, all or nothing; returns how many. Errors: 22004 NULL argument, '
'22023 p_items not an array, a malformed item (named by its index from 0 and its '
'field), unknown run, or a cancelled or finished run.';

-- db/src/functions/campaign_enqueue_once.sql
-- campaign_enqueue with a key (not in API.md): safe to call again when the answer of a
-- call was lost (the connection dropped during the commit, a timeout, a retried HTTP
-- request), which campaign_enqueue is not: a retry of that would enqueue the items
-- twice. The key is recorded with the run in the enqueue's transaction. A call with a
-- key the run already has enqueues nothing and returns the first call's count with
-- duplicate = true; a call while another with the same key is in flight waits for it
-- (and enqueues only if that one rolled back). The items of a repeat are not compared
-- with the first call's: the key says they are the same.
CREATE OR REPLACE FUNCTION pgcoord.campaign_enqueue_once(
    p_run_id bigint, p_key text, p_items jsonb
)
RETURNS TABLE (enqueued integer, duplicate boolean)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- p_run_id and the items are campaign_enqueue's to judge; the items' shape is tested
    -- here too, before they are counted, so that a repeat is refused bad items as well
    IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
        PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
    END IF;
    IF coalesce(jsonb_typeof(p_items), '') <> 'array' THEN
        PERFORM pgcoord.raise_bad_argument('p_items', p_items, 'a JSON array of items');
    END IF;
    -- the key first: a concurrent call with the same key waits here for this one
    INSERT INTO pgcoord.campaign_enqueue_keys AS k (run_id, key, messages)
    SELECT r.id, p_key, jsonb_array_length(p_items)
    FROM pgcoord.campaign_runs AS r
    WHERE r.id = p_run_id
    ON CONFLICT ON CONSTRAINT campaign_enqueue_keys_pkey DO NOTHING;
    IF NOT FOUND THEN
        SELECT k.messages INTO enqueued
        FROM pgcoord.campaign_enqueue_keys AS k
        WHERE k.run_id = p_run_id AND k.key = p_key;
        IF FOUND THEN
            duplicate := TRUE;
            RETURN NEXT;
            RETURN;
        END IF;
        -- no such run (or a NULL p_run_id): campaign_enqueue says so
    END IF;
    enqueued := pgcoord.campaign_enqueue(p_run_id => p_run_id, p_items => p_items);
    duplicate := FALSE;
    RETURN NEXT;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_enqueue_once(bigint, text, jsonb) IS
'campaign_enqueue of p_items into run p_run_id under the key p_key (1 to 1024 bytes), '
'once: a call with a key the run already has enqueues nothing and returns the first '
'call''s count with duplicate = true. Returns (enqueued, duplicate). Errors: those of '
'campaign_enqueue; 22004 NULL argument, 22023 p_key out of range.';

-- db/src/functions/campaign_extend.sql
-- Heartbeat: push the lease of a current claim to now + p_lease. The messages that the
-- claim returned with the same claim_token share this lease: extending one extends them
-- all (one call per token is enough). A late call (lease run out, not yet reclaimed)
-- succeeds; NULL, changing nothing, when the claim is no longer current.
CREATE OR REPLACE FUNCTION pgcoord.campaign_extend(
    p_message_id bigint,
    p_claim_token bigint,
    p_lease interval DEFAULT interval '5 minutes'
)
RETURNS timestamptz
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the queue through its indexes, whatever it held when the plan was made (030_campaigns.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();  -- for the argument check
    v_until timestamptz;
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        p_message_id IS NOT NULL
        AND p_claim_token IS NOT NULL
        AND p_lease > interval '0' AND p_lease <= interval '1 day'
        AND date_trunc('month', p_lease) = interval '0'
        AND abs(extract(DAY FROM p_lease)) <= 36500 AND v_now + p_lease > v_now
    ) IS NOT TRUE THEN
        IF p_message_id IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_message_id', p_message_id, 'a message id');
        END IF;
        IF p_claim_token IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_claim_token', p_claim_token, 'a bigint');
        END IF;
        PERFORM pgcoord.raise_bad_argument(
            'p_lease', p_lease, 'an interval of more than 0 and at most 1 day, with no months'
        );
    END IF;

    UPDATE pgcoord.campaign_queue AS q
    SET due_at = clock_timestamp() + p_lease
    WHERE
        q.token = p_claim_token AND q.claimed_by IS NOT NULL
        AND p_message_id = any(q.message_ids)
    RETURNING q.due_at INTO v_until;
    RETURN v_until;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_extend(bigint, bigint, interval) IS
'New lease end (now + p_lease) of message p_message_id''s claim p_claim_token, shared '
'by the messages claimed with that token; NULL, changing nothing, when the claim is no '
'longer current. Ranges: p_lease more than 0 and at most 1 day. Intervals with no '
'months. Errors: 22004 NULL argument, 22023 p_lease out of range.';

-- db/src/functions/campaign_fail.sql
-- A failed try of a claimed message (a late one too: lease run out, not yet reclaimed;
-- the lost lease and this fail are one try). With retries left it is pending again at
-- now + p_retry_backoff[retry number] of its run (the last element repeating), or at
-- now + p_retry_after when that is later (the provider's Retry-After); after try
-- p_max_retries + 1 it is failed for good, next_attempt_at NULL. The error text is kept
-- with the message (campaign_message_status.last_error). No row for a stale token.
CREATE OR REPLACE FUNCTION pgcoord.campaign_fail(
    p_message_id bigint,
    p_claim_token bigint,
    p_error text,
    p_retry_after interval DEFAULT NULL
)
RETURNS TABLE (status text, next_attempt_at timestamptz)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        p_message_id IS NOT NULL
        AND p_claim_token IS NOT NULL
        AND p_error IS NOT NULL
        AND (
            p_retry_after IS NULL
            OR p_retry_after >= interval '0' AND p_retry_after <= interval '30 days'
            AND date_trunc('month', p_retry_after) = interval '0'
            AND abs(extract(DAY FROM p_retry_after)) <= 36500
        )
    ) IS NOT TRUE THEN
        IF p_message_id IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_message_id', p_message_id, 'a message id');
        END IF;
        IF p_claim_token IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_claim_token', p_claim_token, 'a bigint');
        END IF;
        IF p_error IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_error', p_error, 'a text');
        END IF;
        PERFORM pgcoord.raise_bad_argument(
            'p_retry_after', p_retry_after, 'NULL or an interval from 0 to 30 days, with no months'
        );
    END IF;

    RETURN QUERY
    SELECT g.status, g.next_attempt_at
    FROM pgcoord.campaign_give_back(
        p_message_id, p_claim_token, clock_timestamp(), p_retry_after, p_error,
        p_snooze => FALSE, p_final => FALSE
    ) AS g;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_fail(bigint, bigint, text, interval) IS
'A failed try of message p_message_id of claim p_claim_token: pending again at its '
'run''s backoff (or p_retry_after when later), or failed for good after try max_retries '
'+ 1; returns the status and next_attempt_at, no row for a stale token. Ranges: '
'p_retry_after NULL or 0 to 30 days. Intervals with no months. Errors: 22004 NULL '
'argument, 22023 p_retry_after out of range.';

-- db/src/functions/campaign_fail_for_good.sql
-- A failed try that no retry can mend (the recipient does not exist, the provider
-- refused the content): the claimed message ends 'failed' at once with p_error kept,
-- whatever retries its run has left. It counts as a try, like campaign_fail, and a late
-- one (lease run out, not yet reclaimed) succeeds too. False, changing nothing, for a
-- stale token. Beyond the contract.
CREATE OR REPLACE FUNCTION pgcoord.campaign_fail_for_good(
    p_message_id bigint, p_claim_token bigint, p_error text
)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_message_id IS NULL THEN
        PERFORM pgcoord.raise_bad_argument('p_message_id', p_message_id, 'a message id');
    END IF;
    IF p_claim_token IS NULL THEN
        PERFORM pgcoord.raise_bad_argument('p_claim_token', p_claim_token, 'a bigint');
    END IF;
    IF p_error IS NULL THEN
        PERFORM pgcoord.raise_bad_argument('p_error', p_error, 'a text');
    END IF;

    RETURN EXISTS (
        SELECT
        FROM pgcoord.campaign_give_back(
            p_message_id, p_claim_token, clock_timestamp(), NULL, p_error,
            p_snooze => FALSE, p_final => TRUE
        )
    );
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_fail_for_good(bigint, bigint, text) IS
'A failed try of message p_message_id of claim p_claim_token that no retry can mend: '
'failed for good at once with p_error kept, whatever retries are left; true, or false '
'and nothing changed for a stale token. Beyond the contract. Errors: 22004 NULL argument.';

-- db/src/functions/campaign_give_back.sql
-- Internal. Take message p_message_id out of claim p_claim_token (when that claim is
-- current) and put it back. p_error NULL: a snooze (p_snooze, counted in its snoozes) or
-- a release, pending again at p_now + p_delay with its tries as they were. p_error
-- given: a failed try (it counts once, also after the lease ran out); with retries left
-- the message is pending at p_now + the run's backoff for this retry (its last element
-- repeating), or at p_now + p_delay when that is later; without, it ends failed with
-- p_error; p_final: failed with p_error whatever retries are left (still a try). The
-- message gets a group of its own (a lone message's group is reused) and a
-- new token, so the claim's token is stale for it. No row when the claim is not current.
CREATE OR REPLACE FUNCTION pgcoord.campaign_give_back(
    p_message_id bigint,
    p_claim_token bigint,
    p_now timestamptz,
    p_delay interval,
    p_error text,
    p_snooze boolean,
    p_final boolean
)
RETURNS TABLE (status text, next_attempt_at timestamptz)
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
-- the queue through its indexes, whatever it held when the plan was made (030_campaigns.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_group record;
    v_tries integer;
    v_snoozes integer;
    v_error text;
    v_due timestamptz;
BEGIN
    -- the queue alone in FROM, read by its token whatever the plan's estimates; the run
    -- and the message by their keys
    SELECT
        q.run_id, q.tries, q.snoozes, q.last_error,
        -- the message's own scheduled_at: a held group that a claim made of several
        -- holds the earliest of its messages'
        (SELECT m.scheduled_at FROM pgcoord.campaign_messages AS m WHERE m.id = p_message_id)
        AS scheduled_at,
        cardinality(q.message_ids) AS size,
        (SELECT r FROM pgcoord.campaign_runs AS r WHERE r.id = q.run_id) AS run
    INTO v_group
    FROM pgcoord.campaign_queue AS q
    WHERE
        q.token = p_claim_token AND q.claimed_by IS NOT NULL
        AND p_message_id = any(q.message_ids)
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    v_snoozes := v_group.snoozes + p_snooze::integer;
    IF p_error IS NULL THEN
        v_tries := v_group.tries;
        v_error := v_group.last_error;
        v_due := p_now + p_delay;
    ELSE
        v_tries := v_group.tries + 1;
        v_error := p_error;
        IF v_tries <= (v_group.run).max_retries AND NOT p_final THEN
            v_due := p_now + greatest(
                (v_group.run).retry_backoff[
                    least(v_tries, cardinality((v_group.run).retry_backoff))
                ],
                coalesce(p_delay, interval '0')
            );
        END IF;
    END IF;

    IF v_group.size = 1 AND v_due IS NOT NULL THEN
        UPDATE pgcoord.campaign_queue AS q
        SET token = nextval('pgcoord.campaign_token'),
            due_at = v_due,
            scheduled_at = v_group.scheduled_at,
            claimed_by = NULL,
            tries = v_tries,
            snoozes = v_snoozes,
            last_error = v_error
        WHERE q.token = p_claim_token;
    ELSIF v_group.size = 1 THEN
        DELETE FROM pgcoord.campaign_queue AS q WHERE q.token = p_claim_token;
    ELSE
        UPDATE pgcoord.campaign_queue AS q
        SET message_ids = array_remove(q.message_ids, p_message_id)
        WHERE q.token = p_claim_token;
        IF v_due IS NOT NULL THEN
            INSERT INTO pgcoord.campaign_queue (
                token, run_id, due_at, scheduled_at, tries, snoozes, last_error, message_ids
            )
            VALUES (
                nextval('pgcoord.campaign_token'), v_group.run_id, v_due, v_group.scheduled_at,
                v_tries, v_snoozes, v_error, ARRAY[p_message_id]
            );
        END IF;
    END IF;

    IF v_due IS NULL THEN
        INSERT INTO pgcoord.campaign_outcomes (
            message_id, run_id, status, finished_at, attempts, snoozes, error
        )
        VALUES (p_message_id, v_group.run_id, 'failed', p_now, v_tries, v_snoozes, p_error);
        RETURN QUERY SELECT 'failed'::text, NULL::timestamptz;
    ELSE
        RETURN QUERY SELECT 'pending'::text, v_due;
    END IF;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_give_back(
    bigint, bigint, timestamptz, interval, text, boolean, boolean
) IS
'Internal. Put message p_message_id of the current claim p_claim_token back: pending at '
'p_now + p_delay (p_error NULL, no try spent; counted as a snooze when p_snooze), or '
'after a failed try p_error pending at its backoff (or p_delay when later) or failed for '
'good (at once when p_final); no row when the claim is not current. Errors: none.';

-- db/src/functions/campaign_idle.sql
-- A campaign worker about to sleep, on the connection that LISTENs pgcoord_campaigns
-- (its own session, in autocommit; not through a transaction pooler): mark the session
-- as an idle worker of run p_run_id (of every run when NULL) until campaign_busy or the
-- session's end, then say how long it may sleep. campaign_enqueue notifies while some
-- worker of its run is marked idle, or while no worker has said it is busy
-- (campaign_busy); it skips the NOTIFY when the run's workers are all busy, so that
-- enqueues feeding them never take turns at the commit (a notifying commit holds a lock
-- of the whole server while it flushes).
--
-- No wake-up is lost: an enqueue holds the gate, a lock shared by every enqueue into a
-- running run, from before it looks for marks to its commit. Marked first, this call
-- then takes the gate for an instant. Taken, every enqueue that began before is
-- committed, so the look at the queue that follows sees its messages, and every enqueue
-- that begins after sees the mark and notifies. Not taken (an enqueue is still
-- committing, which may have looked before the mark), settled is false: the look may
-- have missed it, and the worker looks again soon rather than sleeping due_in.
--
-- due_in is campaign_due_in's: zero when a message is due now, NULL when nothing is
-- pending or held. The gate and the marks are session advisory locks
-- (campaign_mark_key), the mark recorded in the setting pgcoord.campaign_mark
-- (campaign_unmark).
CREATE OR REPLACE FUNCTION pgcoord.campaign_idle(
    p_run_id bigint DEFAULT NULL, OUT due_in interval, OUT settled boolean
)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_mark constant text := 'idle ' || coalesce(p_run_id::text, 'all');
    v_key integer[];
BEGIN
    IF p_run_id IS NOT NULL
        AND NOT EXISTS (SELECT FROM pgcoord.campaign_runs AS r WHERE r.id = p_run_id) THEN
        PERFORM pgcoord.raise_bad_argument('p_run_id', p_run_id, 'the id of a campaign run');
    END IF;
    settled := TRUE;
    IF coalesce(current_setting('pgcoord.campaign_mark', TRUE), '') <> v_mark THEN
        PERFORM pgcoord.campaign_unmark();
        v_key := pgcoord.campaign_mark_key('idle', p_run_id);
        -- tried, not waited for: held exclusively, the key is an enqueue's for an
        -- instant (campaign_notify_wanted), or a session's that any role could take;
        -- then no mark this time, and the worker looks again soon
        IF pg_try_advisory_lock_shared(v_key[1], v_key[2]) THEN
            PERFORM set_config('pgcoord.campaign_mark', v_mark, FALSE);
        ELSE
            settled := FALSE;
        END IF;
    END IF;

    IF settled THEN
        v_key := pgcoord.campaign_mark_key('gate', NULL);
        settled := pg_try_advisory_lock(v_key[1], v_key[2]);
        IF settled THEN
            PERFORM pg_advisory_unlock(v_key[1], v_key[2]);
        END IF;
    END IF;
    -- a statement of its own: its snapshot is taken after the gate
    due_in := pgcoord.campaign_due_in(p_run_id);
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_idle(bigint) IS
'For a campaign worker about to sleep, on its LISTEN connection: mark the session as an '
'idle worker of run p_run_id (of every run when NULL) until campaign_busy, so that '
'campaign_enqueue notifies it; then due_in as campaign_due_in, and settled false when an '
'enqueue still committing may be missing from it (look again soon). Errors: 22023 '
'unknown p_run_id.';

-- db/src/functions/campaign_mark_key.sql
-- Internal. The advisory lock key, as its two integers, of the enqueue gate ('gate') and
-- of a campaign worker's marks ('idle', 'busy') for run p_run_id (of every run when
-- NULL): first key 1885823844, second 0 for the gate and 1 and 2 for the marks of every
-- run; first keys 1885823845 (idle) and 1885823846 (busy) with the run id's low 31 bits
-- for one run (two runs more than 2^31 ids apart share their marks). See campaign_idle.
CREATE OR REPLACE FUNCTION pgcoord.campaign_mark_key(p_mark text, p_run_id bigint)
RETURNS integer[]
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN CASE
        WHEN p_mark = 'gate' THEN ARRAY[1885823844, 0]
        WHEN p_run_id IS NULL THEN ARRAY[1885823844, CASE p_mark WHEN 'idle' THEN 1 ELSE 2 END]
        ELSE ARRAY[
            CASE p_mark WHEN 'idle' THEN 1885823845 ELSE 1885823846 END,
            (p_run_id & 2147483647)::integer
        ]
    END;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_mark_key(text, bigint) IS
'Internal. The advisory lock key (two integers) of the enqueue gate or of a campaign '
'worker''s idle or busy mark, for run p_run_id or every run.';

-- db/src/functions/campaign_metrics.sql
-- The metrics of many messages as a client sends them, one JSON array (one value to
-- encode, not an array of JSON texts, each quoted again), as the jsonb[] that
-- campaign_completed and campaign_complete_many take: element i for message i, in order.
-- NULL stays NULL ({} for each). Whether each element is an object is the completion's
-- check.
CREATE OR REPLACE FUNCTION pgcoord.campaign_metrics(p_metrics jsonb)
RETURNS jsonb[]
LANGUAGE plpgsql
IMMUTABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_metrics IS NULL THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_metrics) <> 'array' THEN
        PERFORM pgcoord.raise_bad_argument('p_metrics', p_metrics, 'NULL or a JSON array of objects');
    END IF;
    RETURN array(
        SELECT e.metrics
        FROM jsonb_array_elements(p_metrics) WITH ORDINALITY AS e (metrics, n)
        ORDER BY e.n
    );
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_metrics(jsonb) IS
'Many messages'' metrics, one JSON array (or NULL), as the jsonb[] the completions take. '
'Errors: 22023 p_metrics not an array.';

-- db/src/functions/campaign_notify_wanted.sql
-- Internal, for campaign_enqueue into a running run: take the gate (see campaign_idle),
-- shared until this transaction's end, then say whether to notify: when a worker of run
-- p_run_id (or of every run) is marked idle, or when none has said it is busy (a
-- listener that never marks is notified as before). An idle mark is tested by taking its
-- lock exclusively for an instant, so a concurrent enqueue testing the same mark can be
-- taken for one, and this enqueue then notifies for nothing: about 1% of enqueues at 16
-- connections on 2 cores (bench/producers.py), where the one holding it had been
-- descheduled in that instant. A busy mark is tested with a shared lock, which other
-- enqueues' tests never block: an error there would skip a NOTIFY. Nothing here waits
-- on a lock, so no other session can hold an enqueue up by taking one of these keys.
CREATE OR REPLACE FUNCTION pgcoord.campaign_notify_wanted(p_run_id bigint)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_gate constant integer[] := pgcoord.campaign_mark_key('gate', NULL);
    -- the marks of a worker of every run, then of this run
    v_runs constant bigint[] := ARRAY[NULL, p_run_id];
    v_run bigint;
    v_key integer[];
BEGIN
    -- tried, not waited for: held exclusively, the gate is campaign_idle's for an
    -- instant, or a session's that any role could take (pg_advisory_lock is PUBLIC's);
    -- either way this enqueue notifies, which loses no wake-up, instead of waiting on it
    IF NOT pg_try_advisory_xact_lock_shared(v_gate[1], v_gate[2]) THEN
        RETURN TRUE;
    END IF;
    FOREACH v_run IN ARRAY v_runs LOOP
        v_key := pgcoord.campaign_mark_key('idle', v_run);
        IF NOT pg_try_advisory_lock(v_key[1], v_key[2]) THEN
            RETURN TRUE;  -- an idle worker
        END IF;
        PERFORM pg_advisory_unlock(v_key[1], v_key[2]);
    END LOOP;
    FOREACH v_run IN ARRAY v_runs LOOP
        v_key := pgcoord.campaign_mark_key('busy', v_run);
        IF NOT pg_try_advisory_lock_shared(v_key[1], v_key[2]) THEN
            RETURN FALSE;  -- none idle, a busy one finds the messages
        END IF;
        PERFORM pg_advisory_unlock_shared(v_key[1], v_key[2]);
    END LOOP;
    RETURN TRUE;  -- no marks: a listener that never marks is notified
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_notify_wanted(bigint) IS
'Internal. Take the enqueue gate (shared, to the transaction''s end) and say whether to '
'notify: a worker of run p_run_id or of every run is marked idle (campaign_idle), or '
'none is marked busy (campaign_busy).';

-- db/src/functions/campaign_prune.sql
-- Retention: delete the messages of runs that ended (finished or cancelled) more than
-- p_older_than ago, with their outcomes and the open work a cancelled run left, about
-- p_limit messages per call, the run that ended first first; a run is deleted (with its
-- enqueue keys) with its last message. Open work goes in whole groups (up to 15
-- messages, see 030_campaigns.sql), each started within the limit, so a call deletes at
-- most p_limit + 14. Returns how many messages were deleted: run it from a scheduled job until it
-- returns less than p_limit. Running and paused runs are never touched. While
-- a run is pruned over several calls, campaign_progress counts what is left of it (its
-- total and skipped go down with what is deleted). A claim still held on a
-- pruned cancelled run is stale afterwards, so keep runs longer than their leases.
-- Concurrent calls prune different runs (a run's row lock, skipped when taken).
CREATE OR REPLACE FUNCTION pgcoord.campaign_prune(
    p_older_than interval, p_limit integer DEFAULT 10000
)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cutoff timestamptz;
    v_run record;
    v_left integer;
    v_count integer;
    v_done integer;
    v_skipped integer;
    v_total bigint;
    v_first bigint;
    v_last bigint;
BEGIN
    PERFORM pgcoord.check_prune_arguments(p_older_than, p_limit);
    v_cutoff := clock_timestamp() - p_older_than;
    v_left := p_limit;

    FOR v_run IN
        SELECT r.id
        FROM pgcoord.campaign_runs AS r
        WHERE r.status IN ('finished', 'cancelled') AND r.status_changed_at < v_cutoff
        ORDER BY r.status_changed_at, r.id
        FOR UPDATE SKIP LOCKED
    LOOP
        -- the open work of the run (a cancelled run's pending messages, claims never
        -- completed): whole groups, each started within the limit, with their messages
        WITH picked AS (
            SELECT g.token
            FROM (
                SELECT
                    q.token,
                    sum(cardinality(q.message_ids)) OVER (ORDER BY q.token)
                    - cardinality(q.message_ids) AS before
                FROM pgcoord.campaign_queue AS q
                WHERE q.run_id = v_run.id
            ) AS g
            WHERE g.before < v_left
        ),

        gone AS (
            DELETE FROM pgcoord.campaign_queue AS q
            USING picked
            WHERE q.token = picked.token
            RETURNING q.message_ids
        ),

        messages AS (
            DELETE FROM pgcoord.campaign_messages AS m
            USING gone
            WHERE m.id = any(gone.message_ids)
            RETURNING m.id
        )

        SELECT count(*)::integer INTO v_done FROM messages;
        v_left := v_left - v_done;
        v_skipped := 0;

        -- then, once no open work is left, the messages that ended, with their outcomes
        IF
            v_left > 0
            AND NOT EXISTS (SELECT FROM pgcoord.campaign_queue AS q WHERE q.run_id = v_run.id)
        THEN
            SELECT min(e.first_message_id), max(e.last_message_id) INTO v_first, v_last
            FROM pgcoord.campaign_enqueues AS e
            WHERE e.run_id = v_run.id;
            WITH picked AS (
                SELECT m.id
                FROM pgcoord.campaign_messages AS m
                WHERE
                    m.id BETWEEN v_first AND v_last
                    AND m.run_id = v_run.id
                ORDER BY m.id
                LIMIT v_left
            ),

            outcomes AS (
                DELETE FROM pgcoord.campaign_outcomes AS o
                USING picked
                WHERE o.message_id = picked.id
                RETURNING o.status
            ),

            messages AS (
                DELETE FROM pgcoord.campaign_messages AS m
                USING picked
                WHERE m.id = picked.id
                RETURNING m.id
            )

            SELECT
                (SELECT count(*)::integer FROM messages),
                (SELECT count(*)::integer FROM outcomes WHERE outcomes.status = 'skipped')
            INTO v_count, v_skipped;
            v_left := v_left - v_count;
            v_done := v_done + v_count;
        END IF;

        UPDATE pgcoord.campaign_runs AS r
        SET
            pruned = r.pruned + v_done,
            skipped = r.skipped - v_skipped
        WHERE r.id = v_run.id;
        SELECT p.total INTO v_total FROM pgcoord.campaign_progress AS p WHERE p.run_id = v_run.id;
        IF v_total = 0 THEN
            DELETE FROM pgcoord.campaign_enqueues AS e WHERE e.run_id = v_run.id;
            DELETE FROM pgcoord.campaign_enqueue_keys AS k WHERE k.run_id = v_run.id;
            DELETE FROM pgcoord.campaign_runs AS r WHERE r.id = v_run.id;
        END IF;
        EXIT WHEN v_left <= 0;
    END LOOP;
    RETURN p_limit - v_left;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_prune(interval, integer) IS
'Delete about p_limit messages (at most p_limit + 14: open work goes in whole groups), '
'with their outcomes and open work, of runs finished or cancelled more than p_older_than '
'ago, the run that ended first first, and each run with its last message; returns how '
'many. Ranges: p_older_than above 0 and at most 100 years; '
'p_limit 1 to 1000000. Errors: 22004 NULL argument, 22023 an argument out of its range '
'(an infinite interval included).';

-- db/src/functions/campaign_release.sql
-- Give a claimed message back untouched, for a worker that stops before its handler
-- finished: pending, due at once, and the try is not counted, so restarts and deploys
-- never push a message towards failing. False, changing nothing, for a stale token.
CREATE OR REPLACE FUNCTION pgcoord.campaign_release(p_message_id bigint, p_claim_token bigint)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_message_id IS NULL THEN
        PERFORM pgcoord.raise_bad_argument('p_message_id', p_message_id, 'a message id');
    END IF;
    IF p_claim_token IS NULL THEN
        PERFORM pgcoord.raise_bad_argument('p_claim_token', p_claim_token, 'a bigint');
    END IF;

    RETURN EXISTS (
        SELECT
        FROM pgcoord.campaign_give_back(
            p_message_id, p_claim_token, clock_timestamp(), interval '0', NULL,
            p_snooze => FALSE, p_final => FALSE
        )
    );
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_release(bigint, bigint) IS
'Give message p_message_id of claim p_claim_token back without spending a try, due at '
'once; false, changing nothing, for a stale token. Errors: 22004 NULL argument.';

-- db/src/functions/campaign_set_status.sql
-- Change a run's status; returns the previous one. running <-> paused; running or
-- paused -> cancelled or finished; cancelled and finished are final. Setting the status
-- a run already has changes nothing and returns it (so a retried call is harmless).
-- Paused, cancelled and finished runs' messages are not claimed; their pending messages
-- stay as they are, for the record, and held ones may still be completed. Resuming a
-- run tells the workers of its first due message, as campaign_enqueue does
-- (campaign_wake).
CREATE OR REPLACE FUNCTION pgcoord.campaign_set_status(p_run_id bigint, p_status text)
RETURNS text
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the queue through its indexes, whatever it held when the plan was made (030_campaigns.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_previous text;
BEGIN
    IF p_run_id IS NULL THEN
        PERFORM pgcoord.raise_bad_argument('p_run_id', p_run_id, 'a run id');
    END IF;
    IF p_status IS NULL OR p_status NOT IN ('running', 'paused', 'cancelled', 'finished') THEN
        PERFORM pgcoord.raise_bad_argument(
            'p_status', p_status, 'one of running, paused, cancelled, finished'
        );
    END IF;

    SELECT r.status INTO v_previous
    FROM pgcoord.campaign_runs AS r
    WHERE r.id = p_run_id
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM pgcoord.raise_bad_argument('p_run_id', p_run_id, 'the id of a campaign run');
    END IF;
    IF v_previous = p_status THEN
        RETURN v_previous;
    END IF;
    IF v_previous IN ('cancelled', 'finished') THEN
        RAISE EXCEPTION 'p_status: run % is %, which is final; it cannot become %',
            p_run_id, v_previous, p_status
            USING ERRCODE = '22023';
    END IF;

    UPDATE pgcoord.campaign_runs AS r
    SET status = p_status, status_changed_at = v_now
    WHERE r.id = p_run_id;

    IF p_status = 'running' THEN
        PERFORM pgcoord.campaign_wake(
            p_run_id,
            v_now,
            (SELECT min(q.due_at) FROM pgcoord.campaign_queue AS q WHERE q.run_id = p_run_id)
        );
    END IF;
    RETURN v_previous;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_set_status(bigint, text) IS
'Set the status of run p_run_id (running, paused, cancelled, finished); returns the '
'previous status. running <-> paused, running or paused -> cancelled or finished; the '
'same status again is a no-op. Errors: 22004 NULL argument, 22023 unknown run, unknown '
'status, or a change from cancelled or finished.';

-- db/src/functions/campaign_skip_stale.sql
-- Mark 'skipped' the pending messages of running runs scheduled (as enqueued) more than
-- p_older_than ago, by default each run's stale_after; returns how many. Held messages
-- are left to their claim, and a message waiting for a retry whose scheduled_at is that
-- old is skipped too. Runs are visited in id order and their skipped counters updated
-- in that order, so concurrent calls cannot deadlock; groups a claim holds at that
-- moment are passed over (SKIP LOCKED).
CREATE OR REPLACE FUNCTION pgcoord.campaign_skip_stale(p_older_than interval DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the queue through its indexes, whatever it held when the plan was made (030_campaigns.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_run record;
    v_skipped integer;
    v_total integer := 0;
BEGIN
    IF NOT coalesce(
        p_older_than IS NULL
        OR p_older_than >= interval '0' AND p_older_than <= interval '100 years'
        -- the cutoff lies in the past, and within 100 years, by the calendar too (the
        -- comparison counts a month as 30 days, the subtraction does not)
        -- its months and days alone within 100 years (raise_bad_argument.sql says why)
        AND abs(extract(YEAR FROM p_older_than)) <= 100
        AND abs(extract(DAY FROM p_older_than)) <= 36500
        AND v_now - p_older_than <= v_now
        AND v_now - p_older_than >= v_now - interval '100 years',
        false
    ) THEN
        PERFORM pgcoord.raise_bad_argument(
            'p_older_than', p_older_than, 'NULL or an interval from 0 to 100 years'
        );
    END IF;

    FOR v_run IN
        SELECT r.id, v_now - coalesce(p_older_than, r.stale_after) AS cutoff
        FROM pgcoord.campaign_runs AS r
        WHERE r.status = 'running'
        ORDER BY r.id
    LOOP
        WITH stale AS (
            SELECT q.token
            FROM pgcoord.campaign_queue AS q
            WHERE
                q.run_id = v_run.id AND q.claimed_by IS NULL
                AND q.scheduled_at < v_run.cutoff
            FOR UPDATE SKIP LOCKED
        ),

        gone AS (
            DELETE FROM pgcoord.campaign_queue AS q
            USING stale
            WHERE q.token = stale.token
            RETURNING q.run_id, q.tries, q.snoozes, q.last_error, q.message_ids
        ),

        skipped AS (
            INSERT INTO pgcoord.campaign_outcomes (
                message_id, run_id, status, finished_at, attempts, snoozes, error
            )
            SELECT m.id, gone.run_id, 'skipped', v_now, gone.tries, gone.snoozes, gone.last_error
            FROM gone CROSS JOIN LATERAL unnest(gone.message_ids) AS m (id)
            RETURNING 1
        )

        SELECT count(*)::integer INTO v_skipped FROM skipped;
        IF v_skipped > 0 THEN
            UPDATE pgcoord.campaign_runs AS r
            SET skipped = r.skipped + v_skipped
            WHERE r.id = v_run.id;
            v_total := v_total + v_skipped;
        END IF;
    END LOOP;
    RETURN v_total;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_skip_stale(interval) IS
'Mark skipped the pending messages of running runs scheduled more than p_older_than ago '
'(NULL: each run''s stale_after); returns how many. Ranges: p_older_than NULL or 0 to 100 '
'years. Errors: 22023 p_older_than out of range.';

-- db/src/functions/campaign_snooze.sql
-- Put a claimed message back, pending at now + p_delay, without spending a try (the
-- provider said 429 / Retry-After: not the message's fault). A late snooze (lease run
-- out, not yet reclaimed) succeeds too. False, changing nothing, for a stale token.
CREATE OR REPLACE FUNCTION pgcoord.campaign_snooze(
    p_message_id bigint, p_claim_token bigint, p_delay interval
)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        p_message_id IS NOT NULL
        AND p_claim_token IS NOT NULL
        AND p_delay >= interval '0' AND p_delay <= interval '30 days'
        AND date_trunc('month', p_delay) = interval '0'
        AND abs(extract(DAY FROM p_delay)) <= 36500
    ) IS NOT TRUE THEN
        IF p_message_id IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_message_id', p_message_id, 'a message id');
        END IF;
        IF p_claim_token IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_claim_token', p_claim_token, 'a bigint');
        END IF;
        PERFORM pgcoord.raise_bad_argument(
            'p_delay', p_delay, 'an interval from 0 to 30 days, with no months'
        );
    END IF;

    RETURN EXISTS (
        SELECT
        FROM pgcoord.campaign_give_back(
            p_message_id, p_claim_token, clock_timestamp(), p_delay, NULL,
            p_snooze => TRUE, p_final => FALSE
        )
    );
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_snooze(bigint, bigint, interval) IS
'Put message p_message_id of claim p_claim_token back, pending at now + p_delay, '
'without spending a try; false, changing nothing, for a stale token. Ranges: p_delay 0 '
'to 30 days. Intervals with no months. Errors: 22004 NULL argument, 22023 p_delay out '
'of range.';

-- db/src/functions/campaign_stats.sql
-- How a run is going, for operators (pgcoord campaigns, pgcoord watch), one row per run
-- (of p_run_id only, when given), by run id: the messages sent in the last minute; the
-- failed tries so far (retries: fails and lost leases, of finished and open messages);
-- the snoozes so far; and the median and 95th percentile of the handler's time in ms
-- (metrics key handler_ms, which the campaign worker stores with each message) over the
-- run's last 1000 sent messages, NULL when none of them has it (a value that is not a
-- number from 0 to 1e12 is ignored).
-- Cheap however long the run: the open messages are summed over the run's queue groups
-- (the backlog); the finished ones' retries and snoozes over an index holding only the
-- outcomes that had any (campaign_outcomes_eventful, rare); the last minute and the last
-- 1000 sent are read backwards on the sent messages' index by finish time
-- (campaign_outcomes_sent): no statement reads a run's history.
CREATE OR REPLACE FUNCTION pgcoord.campaign_stats(p_run_id bigint DEFAULT NULL)
RETURNS TABLE (
    run_id bigint,
    sent_last_minute bigint,
    retries bigint,
    snoozes bigint,
    handler_p50_ms double precision,
    handler_p95_ms double precision
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_now constant timestamptz := clock_timestamp();
BEGIN
    IF p_run_id IS NOT NULL AND NOT EXISTS (
        SELECT FROM pgcoord.campaign_runs AS r WHERE r.id = p_run_id
    ) THEN
        PERFORM pgcoord.raise_bad_argument('p_run_id', p_run_id, 'the id of a campaign run');
    END IF;

    RETURN QUERY
    SELECT
        r.id,
        recent.sent,
        open_work.retries + finished.retries,
        open_work.snoozes + finished.snoozes,
        handler.p50,
        handler.p95
    FROM pgcoord.campaign_runs AS r
    CROSS JOIN LATERAL (
        SELECT
            coalesce(sum(q.tries::bigint * cardinality(q.message_ids)), 0)::bigint AS retries,
            coalesce(sum(q.snoozes::bigint * cardinality(q.message_ids)), 0)::bigint AS snoozes
        FROM pgcoord.campaign_queue AS q
        WHERE q.run_id = r.id
    ) AS open_work
    CROSS JOIN LATERAL (
        -- failed tries: every try of a failed or skipped message, all but the last of a
        -- sent one; the predicate is the index's
        SELECT
            coalesce(sum(o.attempts - (o.status = 'sent')::integer), 0)::bigint AS retries,
            coalesce(sum(o.snoozes), 0)::bigint AS snoozes
        FROM pgcoord.campaign_outcomes AS o
        WHERE
            o.run_id = r.id
            AND (o.attempts > (o.status = 'sent')::integer OR o.snoozes > 0)
    ) AS finished
    CROSS JOIN LATERAL (
        SELECT count(*) AS sent
        FROM pgcoord.campaign_outcomes AS o
        WHERE
            o.run_id = r.id AND o.status = 'sent'
            AND o.finished_at > v_now - interval '1 minute'
    ) AS recent
    CROSS JOIN LATERAL (
        SELECT
            percentile_cont(0.5) WITHIN GROUP (ORDER BY last_sent.ms) AS p50,
            percentile_cont(0.95) WITHIN GROUP (ORDER BY last_sent.ms) AS p95
        FROM (
            -- nested: the cast only of a JSON number (AND has no order of evaluation);
            -- rounded to the microsecond, so no value underflows double precision
            SELECT
                CASE WHEN jsonb_typeof(o.metrics -> 'handler_ms') = 'number' THEN
                    CASE WHEN (o.metrics ->> 'handler_ms')::numeric BETWEEN 0 AND 1e12 THEN
                        round((o.metrics ->> 'handler_ms')::numeric, 3)::double precision
                    END
                END AS ms
            FROM pgcoord.campaign_outcomes AS o
            WHERE o.run_id = r.id AND o.status = 'sent'
            ORDER BY o.finished_at DESC
            LIMIT 1000
        ) AS last_sent
    ) AS handler
    WHERE p_run_id IS NULL OR r.id = p_run_id
    ORDER BY r.id;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_stats(bigint) IS
'Per run (of p_run_id when given, else every run): messages sent in the last minute, '
'failed tries so far (retries), snoozes so far, and the median and 95th percentile of '
'metrics.handler_ms over the last 1000 sent messages (NULL when none has it). Ranges: '
'p_run_id NULL or the id of a run. Errors: 22023 unknown p_run_id.';

-- db/src/functions/campaign_unmark.sql
-- Internal. Let go of the session's campaign worker mark (campaign_idle, campaign_busy),
-- as recorded in the setting pgcoord.campaign_mark; nothing without one.
CREATE OR REPLACE FUNCTION pgcoord.campaign_unmark()
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_mark constant text[] := string_to_array(
        coalesce(current_setting('pgcoord.campaign_mark', TRUE), ''), ' '
    );
    v_key integer[];
BEGIN
    IF cardinality(v_mark) <> 2 THEN
        RETURN;
    END IF;
    v_key := pgcoord.campaign_mark_key(v_mark[1], nullif(v_mark[2], 'all')::bigint);
    IF v_mark[1] = 'idle' THEN
        PERFORM pg_advisory_unlock_shared(v_key[1], v_key[2]);
    ELSE
        PERFORM pg_advisory_unlock(v_key[1], v_key[2]);
    END IF;
    PERFORM set_config('pgcoord.campaign_mark', '', FALSE);
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_unmark() IS
'Internal. Let go of the session''s campaign worker mark (campaign_idle, campaign_busy).';

-- db/src/functions/campaign_wake.sql
-- Internal. Tell idle campaign workers that run p_run_id has work falling due: NOTIFY
-- pgcoord_campaigns (payload the run id) when p_due_at comes within 5 seconds of p_now,
-- the longest an idle campaign worker sleeps (CampaignWork.max_idle_poll in the
-- driver). A woken worker claims what is due and sleeps until the next due message
-- (campaign_due_in), so a message due within that sleep is sent when it falls due; the
-- sleep itself finds anything due later. Nothing for a NULL p_due_at (nothing queued).
-- Its callers (campaign_enqueue, campaign_set_status) call it only for a running run.
CREATE OR REPLACE FUNCTION pgcoord.campaign_wake(
    p_run_id bigint, p_now timestamptz, p_due_at timestamptz
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_due_at < p_now + interval '5 seconds' THEN
        PERFORM pg_notify('pgcoord_campaigns', p_run_id::text);
    END IF;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_wake(bigint, timestamptz, timestamptz) IS
'Internal. NOTIFY pgcoord_campaigns (payload p_run_id) when p_due_at is within 5 seconds '
'of p_now, the longest an idle campaign worker sleeps; else nothing.';

-- db/src/functions/check_prune_arguments.sql
-- Internal. The arguments of the retention functions (message_prune, campaign_prune),
-- checked in one place: p_older_than above 0 and at most 100 years, p_limit from 1 to
-- 1000000. Raises (raise_bad_argument) naming the first bad one; returns when both are
-- good. Retention is no hot path: its callers call this every time. The cutoff
-- (the clock - p_older_than) must lie in the past, and within 100 years, by the
-- calendar too: '-1 year 361 days' compares as 1 day but reaches 4 days ahead.
CREATE OR REPLACE FUNCTION pgcoord.check_prune_arguments(
    p_older_than interval, p_limit integer
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
BEGIN
    IF NOT coalesce(
        p_older_than > interval '0' AND p_older_than <= interval '100 years'
        -- its months and days alone within 100 years (raise_bad_argument.sql says why)
        AND abs(extract(YEAR FROM p_older_than)) <= 100
        AND abs(extract(DAY FROM p_older_than)) <= 36500
        AND v_now - p_older_than < v_now
        AND v_now - p_older_than >= v_now - interval '100 years',
        false
    ) THEN
        PERFORM pgcoord.raise_bad_argument(
            'p_older_than', p_older_than, 'an interval above 0 and at most 100 years'
        );
    END IF;
    IF NOT coalesce(p_limit BETWEEN 1 AND 1000000, false) THEN
        PERFORM pgcoord.raise_bad_argument('p_limit', p_limit, 'from 1 to 1000000');
    END IF;
END;
$$;

COMMENT ON FUNCTION pgcoord.check_prune_arguments(interval, integer) IS
'Internal. Raises 22004 for a NULL argument, 22023 for one out of its range (p_older_than '
'above 0 and at most 100 years, p_limit 1 to 1000000), naming it; else returns.';

-- db/src/functions/lock_acquire.sql
-- Take or renew the lease of a key. A free or expired key is granted with a new token;
-- the live holder renews and keeps its token; anyone else is answered acquired = false
-- with the holder's owner, token and expiry. It never locks the row of a live lease
-- held by another owner. Renewals and take-overs are compare-and-swap on the token and
-- expiry read, so took_over is exact and a renewal is never overwritten. With
-- p_wait > 0 it tries again until the key frees or p_wait has passed, holding no row
-- lock while it waits. A try never waits long on another transaction writing the key's
-- row (an acquire or takeover inside a caller's transaction not yet committed): after
-- 1 s (the lock_timeout below) the key is answered not granted, its holder unknown
-- (owner, token and expires_at NULL) until that transaction ends.
CREATE OR REPLACE FUNCTION pgcoord.lock_acquire(
    p_key text,
    p_owner text,
    p_ttl interval DEFAULT interval '2 minutes',
    p_wait interval DEFAULT interval '0 seconds'
)
RETURNS TABLE (
    acquired boolean, owner text, token bigint, expires_at timestamptz, took_over boolean
)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- its table through its key, whatever it held when the plan was made (010_locks.sql)
SET enable_seqscan = off
-- a try's longest wait on a row another transaction is writing (an autocommit caller's
-- commit takes far less; an open transaction of a caller's, longer); the setting
-- pgcoord.lock_try_timeout, when set, replaces it. Restored when the call ends.
SET lock_timeout = '1s'
AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_deadline timestamptz;
    v_pause float8 := 0.002::float8;
    v_holder text;
    v_try_timeout text;
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_key) BETWEEN 1 AND 1024
        AND octet_length(p_owner) BETWEEN 1 AND 1024
        AND p_ttl > interval '0' AND p_ttl <= interval '1 day'
        AND date_trunc('month', p_ttl) = interval '0'
        AND abs(extract(DAY FROM p_ttl)) <= 36500 AND v_now + p_ttl > v_now
        AND p_wait >= interval '0' AND p_wait <= interval '1 hour'
        AND date_trunc('month', p_wait) = interval '0'
        AND abs(extract(DAY FROM p_wait)) <= 36500
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
        END IF;
        IF coalesce(octet_length(p_owner), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_owner', p_owner, 'a text of 1 to 1024 bytes');
        END IF;
        IF NOT coalesce(
            p_ttl > interval '0' AND p_ttl <= interval '1 day'
            AND date_trunc('month', p_ttl) = interval '0'
            AND abs(extract(DAY FROM p_ttl)) <= 36500 AND v_now + p_ttl > v_now,
            false
        ) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_ttl', p_ttl, 'an interval above 0 and at most 1 day, with no months'
            );
        END IF;
        IF NOT coalesce(
            p_wait >= interval '0' AND p_wait <= interval '1 hour'
            AND date_trunc('month', p_wait) = interval '0'
            AND abs(extract(DAY FROM p_wait)) <= 36500,
            false
        ) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_wait', p_wait, 'an interval from 0 to 1 hour, with no months'
            );
        END IF;
    END IF;

    IF p_wait > interval '0' THEN
        v_deadline := clock_timestamp() + p_wait;
        LOOP
            -- Each try is a subtransaction, rolled back when not granted: a try that
            -- lost a race may have locked the winner's row, and a waiter must not keep
            -- that lock while it sleeps (the holder's release would wait on it).
            BEGIN
                SELECT t.acquired, t.owner, t.token, t.expires_at, t.took_over
                INTO acquired, owner, token, expires_at, took_over
                FROM pgcoord.lock_acquire(p_key, p_owner, p_ttl) AS t;
                IF NOT acquired THEN
                    RAISE EXCEPTION USING ERRCODE = 'PGC01';
                END IF;
            EXCEPTION
                WHEN SQLSTATE 'PGC01' THEN NULL;
            END;
            v_now := clock_timestamp();
            IF acquired OR v_now >= v_deadline THEN
                RETURN NEXT;
                RETURN;
            END IF;
            PERFORM pg_sleep(least(v_pause, extract(EPOCH FROM v_deadline - v_now)::float8));
            v_pause := least(v_pause * 2, 0.05::float8);
        END LOOP;
    END IF;

    -- a longer wait on another transaction's write of the key, where the session asks
    -- for one (tests that hold the row to force an interleaving)
    v_try_timeout := current_setting('pgcoord.lock_try_timeout', true);
    IF v_try_timeout <> '' THEN
        PERFORM set_config('lock_timeout', v_try_timeout, true);  -- until the call ends
    END IF;
    BEGIN
        LOOP
            v_now := clock_timestamp();

            -- a free key: insert (nextval only runs when no row exists, so contenders
            -- spend no tokens)
            INSERT INTO pgcoord.locks AS l (key, owner, token, acquired_at, expires_at)
            SELECT p_key, p_owner, nextval('pgcoord.lock_token'), v_now, v_now + p_ttl
            WHERE NOT EXISTS (SELECT FROM pgcoord.locks AS h WHERE h.key = p_key)
            ON CONFLICT (key) DO NOTHING
            RETURNING true, l.owner, l.token, l.expires_at, false
            INTO acquired, owner, token, expires_at, took_over;
            IF FOUND THEN
                RETURN NEXT;
                RETURN;
            END IF;

            SELECT false, l.owner, l.token, l.expires_at, false
            INTO acquired, owner, token, expires_at, took_over
            FROM pgcoord.locks AS l
            WHERE l.key = p_key;
            IF FOUND THEN
                IF expires_at > v_now AND owner <> p_owner THEN
                    RETURN NEXT;
                    RETURN;
                END IF;

                IF expires_at > v_now THEN
                    -- the live holder renews: same token
                    UPDATE pgcoord.locks AS l
                    SET expires_at = v_now + p_ttl
                    WHERE l.key = p_key AND l.token = lock_acquire.token AND l.expires_at > v_now
                    RETURNING true, l.expires_at INTO acquired, expires_at;
                ELSE
                    -- an expired lease is a free key: a new grant with a new token. The swap
                    -- compares the expiry too: a renewal keeps the token, so the token alone
                    -- cannot tell that the holder renewed since our read.
                    v_holder := owner;
                    UPDATE pgcoord.locks AS l
                    SET owner = p_owner,
                        token = nextval('pgcoord.lock_token'),
                        acquired_at = v_now,
                        expires_at = v_now + p_ttl
                    WHERE l.key = p_key AND l.token = lock_acquire.token AND l.expires_at <= v_now
                    RETURNING true, l.owner, l.token, l.expires_at, v_holder <> p_owner
                    INTO acquired, owner, token, expires_at, took_over;
                END IF;
                IF FOUND THEN
                    RETURN NEXT;
                    RETURN;
                END IF;
            END IF;
            -- the row changed between the read and the write: read it again
        END LOOP;
    EXCEPTION
        WHEN lock_not_available THEN
            -- another transaction is writing the key's row and has not committed: the
            -- key is not free, and its holder is not known until that transaction ends
            acquired := false;
            owner := NULL;
            token := NULL;
            expires_at := NULL;
            took_over := false;
            RETURN NEXT;
            RETURN;
    END;
END;
$$;

COMMENT ON FUNCTION pgcoord.lock_acquire(text, text, interval, interval) IS
'Take or renew the lease of p_key for p_owner; always one row. Non-blocking unless '
'p_wait > 0 (a try waits at most 1 s on another transaction writing the key: then '
'not granted, owner, token and expires_at NULL until it commits). Ranges: p_key, '
'p_owner 1 to 1024 bytes; p_ttl above 0 and at most 1 day; p_wait 0 to 1 hour. '
'Intervals with no months. Errors: 22004 NULL argument, 22023 an argument out of its '
'range (an infinite interval included).';

-- db/src/functions/lock_extend.sql
-- Heartbeat: push the expiry of a live lease held by p_owner to now + p_ttl.
CREATE OR REPLACE FUNCTION pgcoord.lock_extend(
    p_key text, p_owner text, p_ttl interval DEFAULT interval '2 minutes'
)
RETURNS timestamptz
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- its table through its key, whatever it held when the plan was made (010_locks.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_expires timestamptz;
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_key) BETWEEN 1 AND 1024
        AND octet_length(p_owner) BETWEEN 1 AND 1024
        AND p_ttl > interval '0' AND p_ttl <= interval '1 day'
        AND date_trunc('month', p_ttl) = interval '0'
        AND abs(extract(DAY FROM p_ttl)) <= 36500 AND v_now + p_ttl > v_now
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
        END IF;
        IF coalesce(octet_length(p_owner), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_owner', p_owner, 'a text of 1 to 1024 bytes');
        END IF;
        IF NOT coalesce(
            p_ttl > interval '0' AND p_ttl <= interval '1 day'
            AND date_trunc('month', p_ttl) = interval '0'
            AND abs(extract(DAY FROM p_ttl)) <= 36500 AND v_now + p_ttl > v_now,
            false
        ) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_ttl', p_ttl, 'an interval above 0 and at most 1 day, with no months'
            );
        END IF;
    END IF;

    UPDATE pgcoord.locks AS l
    SET expires_at = v_now + p_ttl
    WHERE l.key = p_key AND l.owner = p_owner AND l.expires_at > v_now
    RETURNING l.expires_at INTO v_expires;
    RETURN v_expires;
END;
$$;

COMMENT ON FUNCTION pgcoord.lock_extend(text, text, interval) IS
'New expiry when p_owner still holds a live lease of p_key; NULL when it has lost it. '
'Ranges: p_key, p_owner 1 to 1024 bytes; p_ttl above 0 and at most 1 day. Intervals '
'with no months. Errors: 22004 NULL argument, 22023 an argument out of its range (an '
'infinite interval included).';

-- db/src/functions/lock_extend_token.sql
-- A lease's heartbeat by its grant: push the expiry of the live grant p_token of p_key
-- to now + p_ttl. Unlike lock_extend (by owner), never a grant made since under the
-- same owner name. Beyond the contract.
CREATE OR REPLACE FUNCTION pgcoord.lock_extend_token(
    p_key text, p_token bigint, p_ttl interval DEFAULT interval '2 minutes'
)
RETURNS timestamptz
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- its table through its key, whatever it held when the plan was made (010_locks.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_expires timestamptz;
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_key) BETWEEN 1 AND 1024
        AND p_token IS NOT NULL
        AND p_ttl > interval '0' AND p_ttl <= interval '1 day'
        AND date_trunc('month', p_ttl) = interval '0'
        AND abs(extract(DAY FROM p_ttl)) <= 36500 AND v_now + p_ttl > v_now
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
        END IF;
        IF p_token IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_token', p_token, 'given');
        END IF;
        PERFORM pgcoord.raise_bad_argument(
            'p_ttl', p_ttl, 'an interval above 0 and at most 1 day, with no months'
        );
    END IF;

    UPDATE pgcoord.locks AS l
    SET expires_at = v_now + p_ttl
    WHERE l.key = p_key AND l.token = p_token AND l.expires_at > v_now
    RETURNING l.expires_at INTO v_expires;
    RETURN v_expires;
END;
$$;

COMMENT ON FUNCTION pgcoord.lock_extend_token(text, bigint, interval) IS
'New expiry when p_token is still the live grant of p_key; NULL, changing nothing, when '
'it is not. Beyond the contract. Ranges: p_key 1 to 1024 bytes; p_token any bigint; '
'p_ttl above 0 and at most 1 day, with no months. Errors: 22004 NULL argument, 22023 an '
'argument out of its range (an infinite interval included).';

-- db/src/functions/lock_is_current.sql
-- Fencing check: is p_token the live grant of p_key right now (server clock)?
CREATE OR REPLACE FUNCTION pgcoord.lock_is_current(p_key text, p_token bigint)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- its table through its key, whatever it held when the plan was made (010_locks.sql)
SET enable_seqscan = off
AS $$
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_key) BETWEEN 1 AND 1024
        AND p_token IS NOT NULL
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
        END IF;
        IF p_token IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_token', p_token, 'given');
        END IF;
    END IF;

    RETURN EXISTS (
        SELECT
        FROM pgcoord.locks AS l
        WHERE l.key = p_key AND l.token = p_token AND l.expires_at > clock_timestamp()
    );
END;
$$;

COMMENT ON FUNCTION pgcoord.lock_is_current(text, bigint) IS
'True only while p_token is the live grant of p_key; usable in the caller''s own WHERE. '
'Ranges: p_key 1 to 1024 bytes; p_token any bigint. Errors: 22004 NULL argument, 22023 '
'empty or over-long key.';

-- db/src/functions/lock_release.sql
-- Free a key, but only for the owner that holds it (live, or expired and not yet taken).
CREATE OR REPLACE FUNCTION pgcoord.lock_release(p_key text, p_owner text)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- its table through its key, whatever it held when the plan was made (010_locks.sql)
SET enable_seqscan = off
AS $$
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_key) BETWEEN 1 AND 1024
        AND octet_length(p_owner) BETWEEN 1 AND 1024
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
        END IF;
        IF coalesce(octet_length(p_owner), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_owner', p_owner, 'a text of 1 to 1024 bytes');
        END IF;
    END IF;

    DELETE FROM pgcoord.locks AS l
    WHERE l.key = p_key AND l.owner = p_owner;
    RETURN FOUND;
END;
$$;

COMMENT ON FUNCTION pgcoord.lock_release(text, text) IS
'True when p_owner held p_key and it is now free; false otherwise, changing nothing. '
'Ranges: p_key, p_owner 1 to 1024 bytes. Errors: 22004 NULL argument, 22023 empty or '
'over-long key/owner.';

-- db/src/functions/lock_release_token.sql
-- A lease's release by its grant: free p_key while its grant is p_token, live or run
-- out but not yet taken over (a takeover is a new grant, with a new token). Unlike
-- lock_release (by owner), never a grant made since under the same owner name. Beyond
-- the contract.
CREATE OR REPLACE FUNCTION pgcoord.lock_release_token(p_key text, p_token bigint)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $$
BEGIN
    IF (
        octet_length(p_key) BETWEEN 1 AND 1024
        AND p_token IS NOT NULL
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
        END IF;
        PERFORM pgcoord.raise_bad_argument('p_token', p_token, 'given');
    END IF;

    DELETE FROM pgcoord.locks AS l
    WHERE l.key = p_key AND l.token = p_token;
    RETURN FOUND;
END;
$$;

COMMENT ON FUNCTION pgcoord.lock_release_token(text, bigint) IS
'True when p_token was the grant of p_key (live, or run out but not taken over) and the '
'key is now free; false otherwise, changing nothing. Beyond the contract. Ranges: p_key '
'1 to 1024 bytes; p_token any bigint. Errors: 22004 NULL argument, 22023 empty or '
'over-long key.';

-- db/src/functions/message_ingest.sql
-- Store an inbound message once and buffer it for its conversation's next flush.
-- The insert settles every race on the unique (provider, provider_message_id): a
-- repeat, however concurrent, waits for the first delivery and returns its row with
-- duplicate = true, changing nothing. The first delivery then appends to the
-- conversation's buffer row (under its row lock) and schedules the flush at
-- last message + p_debounce, never later than first waiting message + p_max_wait.
-- When the message opens a window due within a second, workers listening on
-- pgcoord_buffers are told: an idle worker polls at least once a second, so it finds a
-- later flush in time without the hint. (A NOTIFY serialises commits, so sending one
-- for every new window would halve ingest throughput.)
CREATE OR REPLACE FUNCTION pgcoord.message_ingest(
    p_provider text,
    p_provider_message_id text,
    p_conversation_key text,
    p_body text,
    p_payload jsonb DEFAULT '{}',
    p_debounce interval DEFAULT interval '10 seconds',
    p_max_wait interval DEFAULT interval '60 seconds'
)
RETURNS TABLE (message_id bigint, duplicate boolean, received_at timestamptz)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_conversation_key text;
    v_body text;
    v_due_at timestamptz;
BEGIN
    -- One lean test on the hot path; the checks naming the bad argument run only when it
    -- fails. (Each IF's expression is set up again in every transaction: the number of
    -- expression nodes is what costs, not their evaluation.)
    IF (
        octet_length(p_provider) BETWEEN 1 AND 1024
        AND octet_length(p_provider_message_id) BETWEEN 1 AND 1024
        AND octet_length(p_conversation_key) BETWEEN 1 AND 1024
        AND p_body IS NOT NULL
        AND jsonb_typeof(p_payload) = 'object'
        AND p_debounce >= interval '0' AND p_debounce <= interval '1 day'
        AND date_trunc('month', p_debounce) = interval '0'
        AND abs(extract(DAY FROM p_debounce)) <= 36500
        AND p_max_wait >= interval '0' AND p_max_wait <= interval '7 days'
        AND date_trunc('month', p_max_wait) = interval '0'
        AND abs(extract(DAY FROM p_max_wait)) <= 36500
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_provider), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_provider', p_provider, 'a text of 1 to 1024 bytes');
        END IF;
        IF coalesce(octet_length(p_provider_message_id), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_provider_message_id', p_provider_message_id, 'a text of 1 to 1024 bytes'
            );
        END IF;
        IF coalesce(octet_length(p_conversation_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_conversation_key', p_conversation_key, 'a text of 1 to 1024 bytes'
            );
        END IF;
        IF p_body IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_body', p_body, 'a text');
        END IF;
        IF coalesce(jsonb_typeof(p_payload), '') <> 'object' THEN
            PERFORM pgcoord.raise_bad_argument('p_payload', p_payload, 'a JSON object');
        END IF;
        IF NOT coalesce(
            p_debounce >= interval '0' AND p_debounce <= interval '1 day'
            AND date_trunc('month', p_debounce) = interval '0'
            AND abs(extract(DAY FROM p_debounce)) <= 36500,
            false
        ) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_debounce', p_debounce, 'an interval from 0 to 1 day, with no months'
            );
        END IF;
        IF NOT coalesce(
            p_max_wait >= interval '0' AND p_max_wait <= interval '7 days'
            AND date_trunc('month', p_max_wait) = interval '0'
            AND abs(extract(DAY FROM p_max_wait)) <= 36500,
            false
        ) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_max_wait', p_max_wait, 'an interval from 0 to 7 days, with no months'
            );
        END IF;
    END IF;

    LOOP
        INSERT INTO pgcoord.messages AS m (
            provider, provider_message_id, conversation_key, body, payload, received_at
        )
        VALUES (
            p_provider, p_provider_message_id, p_conversation_key, p_body, p_payload, v_now
        )
        ON CONFLICT (provider, provider_message_id) DO NOTHING
        RETURNING m.id, false, m.received_at INTO message_id, duplicate, received_at;
        EXIT WHEN FOUND;

        -- a repeat: the first delivery has committed (the insert waited for it)
        SELECT m.id, true, m.received_at, m.conversation_key, m.body
        INTO message_id, duplicate, received_at, v_conversation_key, v_body
        FROM pgcoord.messages AS m
        WHERE m.provider = p_provider AND m.provider_message_id = p_provider_message_id;
        IF FOUND THEN
            IF v_conversation_key <> p_conversation_key OR v_body <> p_body THEN
                RAISE EXCEPTION
                    'provider message id % of provider % was already received with a different %',
                    left(p_provider_message_id, 200), left(p_provider, 200),
                    CASE WHEN v_conversation_key <> p_conversation_key
                        THEN 'conversation key' ELSE 'body' END
                    USING ERRCODE = '23505',
                    HINT = 'A provider message id must name one message.';
            END IF;
            RETURN NEXT;
            RETURN;
        END IF;
        -- the row is gone again (pruned): store this delivery as the first
    END LOOP;

    INSERT INTO pgcoord.buffers AS b (
        conversation_key, waiting, waiting_first_at, waiting_last_at, flush_at, due_at
    )
    VALUES (
        p_conversation_key, 1, v_now, v_now,
        v_now + least(p_debounce, p_max_wait), v_now + least(p_debounce, p_max_wait)
    )
    ON CONFLICT (conversation_key) WHERE NOT dead DO UPDATE
    SET waiting = b.waiting + 1,
        waiting_first_at = coalesce(b.waiting_first_at, v_now),
        waiting_last_at = greatest(b.waiting_last_at, v_now),
        flush_at = least(
            greatest(b.waiting_last_at, v_now) + p_debounce,
            coalesce(b.waiting_first_at, v_now) + p_max_wait
        ),
        -- while a claim holds the batch, the row is due when its lease ends
        due_at = CASE WHEN b.batch_size > 0 THEN b.due_at ELSE least(
            greatest(b.waiting_last_at, v_now) + p_debounce,
            coalesce(b.waiting_first_at, v_now) + p_max_wait
        ) END
    RETURNING CASE WHEN b.waiting = 1 AND b.batch_size = 0 THEN b.due_at END INTO v_due_at;

    IF v_due_at < v_now + interval '1 second' THEN
        PERFORM pg_notify('pgcoord_buffers', '');
    END IF;

    RETURN NEXT;
END;
$$;

COMMENT ON FUNCTION pgcoord.message_ingest(text, text, text, text, jsonb, interval, interval) IS
'Store an inbound message once and buffer it for its conversation; a repeat returns the '
'original message_id and received_at with duplicate = true and changes nothing. '
'Ranges: p_provider, p_provider_message_id, p_conversation_key 1 to 1024 bytes; '
'p_payload a JSON object; p_debounce 0 to 1 day; p_max_wait 0 to 7 days. Intervals with '
'no months. Errors: 22004 NULL argument, 22023 an argument out of its range (an '
'infinite interval included); 23505 a repeated provider message id with a different '
'conversation key or body.';

-- db/src/functions/message_payloads.sql
-- The stored payloads (what the provider sent besides the body: the sender's name, a
-- media URL...) of the messages p_message_ids, one row per id that has a stored message,
-- in the order of the ids given. A worker that wants them asks once per claim, for the
-- messages of all its batches. Not in the contract.
CREATE OR REPLACE FUNCTION pgcoord.message_payloads(p_message_ids bigint[])
RETURNS TABLE (message_id bigint, payload jsonb)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the inbox through its indexes, whatever it held when the plan was made (020_inbox.sql)
SET enable_seqscan = off
AS $$
BEGIN
    IF (cardinality(p_message_ids) <= 10000) IS NOT TRUE THEN
        PERFORM pgcoord.raise_bad_argument(
            'p_message_ids', p_message_ids, 'an array of at most 10000 message ids'
        );
    END IF;
    RETURN QUERY
    SELECT m.id, m.payload
    FROM unnest(p_message_ids) WITH ORDINALITY AS given (id, position)
    INNER JOIN pgcoord.messages AS m ON given.id = m.id
    -- the given ids, looked up by key, whatever the plan estimated the table to hold
    WHERE m.id = any(p_message_ids)
    ORDER BY given.position;
END;
$$;

COMMENT ON FUNCTION pgcoord.message_payloads(bigint[]) IS
'The payloads of the messages p_message_ids that are stored, in the order given (an id '
'given twice answers twice; an unknown or NULL id answers nothing). Ranges: '
'p_message_ids at most 10000 elements. Errors: 22004 NULL argument, 22023 more than '
'10000 ids.';

-- db/src/functions/message_prune.sql
-- Retention: delete up to p_limit answered ('done') messages received more than
-- p_older_than ago, oldest first, and return how many. Run it from a scheduled job until
-- it returns less than p_limit. Waiting, claimed and parked (dead) messages stay.
-- A provider's retry of a pruned message is stored as a new message, so keep messages
-- longer than the provider retries (days, not minutes).
-- Ids grow with received_at, so a bisection over the primary key finds where the old
-- messages end, and the delete reads only what it removes.
CREATE OR REPLACE FUNCTION pgcoord.message_prune(
    p_older_than interval, p_limit integer DEFAULT 10000
)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the inbox through its indexes, whatever it held when the plan was made (020_inbox.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_cutoff timestamptz;
    v_low bigint;
    v_high bigint;
    v_mid bigint;
    v_id bigint;
    v_at timestamptz;
    v_count integer;
BEGIN
    PERFORM pgcoord.check_prune_arguments(p_older_than, p_limit);
    v_cutoff := clock_timestamp() - p_older_than;

    SELECT min(m.id), max(m.id) + 1 INTO v_low, v_high FROM pgcoord.messages AS m;
    IF v_low IS NULL THEN
        RETURN 0;
    END IF;
    -- the old messages have ids below v_high; v_low only grows past old ones
    WHILE v_low < v_high LOOP
        v_mid := v_low + (v_high - v_low) / 2;
        SELECT m.id, m.received_at INTO v_id, v_at
        FROM pgcoord.messages AS m
        WHERE m.id >= v_mid
        ORDER BY m.id
        LIMIT 1;
        IF NOT FOUND OR v_at >= v_cutoff THEN
            v_high := v_mid;
        ELSE
            v_low := v_id + 1;
        END IF;
    END LOOP;

    DELETE FROM pgcoord.messages AS m
    WHERE m.id IN (
        SELECT o.id
        FROM pgcoord.messages AS o
        WHERE o.id < v_high AND o.state = 'done' AND o.received_at < v_cutoff
        ORDER BY o.id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    );
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

COMMENT ON FUNCTION pgcoord.message_prune(interval, integer) IS
'Delete up to p_limit done messages received more than p_older_than ago, oldest first; '
'returns how many. Ranges: p_older_than above 0 and at most 100 years; p_limit 1 to '
'1000000. Errors: 22004 NULL argument, 22023 an argument out of its range (an infinite '
'interval included).';

-- db/src/functions/raise_bad_argument.sql
-- The one way the API reports a bad argument. Callers test the rule inline (a call on
-- the hot path costs more than the test) and call this only when it fails. The value is
-- shown in the message: a text in double quotes (so an empty one shows as ""), and a
-- value longer than 80 characters cut there and marked with ... after it.
-- Besides its range, an interval argument has its days within 36500 either way (and, where
-- months are allowed, its years within 100): the server adds an interval to the clock
-- part by part, and compares intervals by their sum, so '-100000000 days 2400000001:00:00'
-- compares as 1 hour yet its days alone would reach a date the server cannot represent.
CREATE OR REPLACE FUNCTION pgcoord.raise_bad_argument(
    p_name text, p_value anyelement, p_requirement text
)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_text text;
    v_shown text;
BEGIN
    IF p_value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', p_name
            USING ERRCODE = '22004';
    END IF;
    v_text := p_value::text;
    v_shown := left(v_text, 80);
    IF pg_typeof(p_value) IN ('text'::regtype, 'character varying'::regtype) THEN
        v_shown := '"' || v_shown || '"';
    END IF;
    IF length(v_text) > 80 THEN
        v_shown := v_shown || '...';
    END IF;
    RAISE EXCEPTION '% must be %, got %', p_name, p_requirement, v_shown
        USING ERRCODE = '22023';
END;
$$;

COMMENT ON FUNCTION pgcoord.raise_bad_argument(text, anyelement, text) IS
'Internal. Always raises: 22004 when p_value is NULL, else 22023; the message names the '
'argument p_name, what it must be, and the value (a text in double quotes, cut after 80 '
'characters and then marked with ...).';

-- db/src/functions/rate_acquire.sql
-- Take p_cost tokens from the bucket of p_key, shared by every caller of the key: the
-- bucket refills at p_per_second up to p_burst and starts full. Granted: '0 seconds',
-- the tokens are spent. Refused: how long until p_cost tokens are there, or until the
-- pause in force ends, whichever is later; nothing is spent (nor written, below).
-- The rate and burst are the call's own (a caller may change them; the tokens spent so
-- far stay spent).
--
-- A plain read decides, without locking the bucket: tokens leave a bucket only through
-- committed grants, so the bucket as the read sees it holds at least what it holds now.
-- A refusal seen is therefore a true refusal (its wait at worst a little short, when
-- another caller's grant commits meanwhile: the caller asks again) and writes nothing,
-- no row version and no row lock, however hot the key. A grant seen is then made by one
-- UPDATE on the newest version of the row under its row lock, compared with what was
-- read (every grant changes tokens or tokens_at) and checked for a pause; when another
-- caller changed the row meanwhile, the call reads again (it keeps the row lock it
-- waited for: a lost race is the one refusal that writes, a lock but no row version).
-- Callers of one key are serialized by the row only when they may be granted; different
-- keys never meet.
CREATE OR REPLACE FUNCTION pgcoord.rate_acquire(
    p_key text,
    p_per_second double precision,
    p_burst integer,
    p_cost integer DEFAULT 1
)
RETURNS interval
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- its table through its key, whatever it held when the plan was made (040_rates.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    -- float8 underflows below about 1e-318 per second; a rate below 1e-300 refills
    -- nothing in any lifetime, and its waits are answered as the longest wait anyway
    v_rate constant double precision := greatest(p_per_second, 1e-300::float8);
    v_granted boolean := false;
    v_stored double precision;
    v_tokens_at timestamptz;
    v_tokens double precision;
    v_paused_until timestamptz;
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction). NaN and
    -- infinity fail the bound: PostgreSQL orders NaN above every number.
    IF (
        octet_length(p_key) BETWEEN 1 AND 1024
        AND p_per_second > 0 AND p_per_second <= 1000000
        AND p_burst BETWEEN 1 AND 1000000
        AND p_cost BETWEEN 1 AND p_burst
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
        END IF;
        IF NOT coalesce(p_per_second > 0 AND p_per_second <= 1000000, false) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_per_second', p_per_second, 'a number above 0 and at most 1000000'
            );
        END IF;
        IF NOT coalesce(p_burst BETWEEN 1 AND 1000000, false) THEN
            PERFORM pgcoord.raise_bad_argument('p_burst', p_burst, 'from 1 to 1000000');
        END IF;
        IF NOT coalesce(p_cost BETWEEN 1 AND p_burst, false) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_cost', p_cost, format('from 1 to p_burst (%s)', p_burst)
            );
        END IF;
    END IF;

    LOOP
        SELECT
            r.tokens,
            r.tokens_at,
            r.paused_until,
            -- a bucket without tokens (made by a pause) is full
            least(p_burst, coalesce(
                r.tokens + v_rate * greatest(extract(EPOCH FROM v_now - r.tokens_at), 0)::float8,
                p_burst
            ))
        INTO v_stored, v_tokens_at, v_paused_until, v_tokens
        FROM pgcoord.rates AS r
        WHERE r.key = p_key;

        IF NOT FOUND THEN
            -- a new key starts full
            INSERT INTO pgcoord.rates AS r (key, tokens, tokens_at, per_second, burst, updated_at)
            VALUES (p_key, p_burst - p_cost, v_now, v_rate, p_burst, v_now)
            ON CONFLICT (key) DO NOTHING;
        ELSIF coalesce(v_paused_until > v_now, false) OR v_tokens < p_cost THEN
            EXIT;  -- refused on the row as read: nothing written
        ELSE
            UPDATE pgcoord.rates AS r
            SET tokens = v_tokens - p_cost,
                -- a caller that read the clock before a later grant committed counts
                -- from that grant: time never runs backwards for the bucket
                tokens_at = greatest(r.tokens_at, v_now),
                per_second = v_rate,
                burst = p_burst,
                updated_at = greatest(r.updated_at, v_now)
            WHERE
                r.key = p_key
                AND r.tokens IS NOT DISTINCT FROM v_stored
                AND r.tokens_at IS NOT DISTINCT FROM v_tokens_at
                AND NOT coalesce(r.paused_until > v_now, false);
        END IF;
        v_granted := FOUND;
        -- else another caller created or changed the row since it was read: read again
        EXIT WHEN v_granted;
    END LOOP;

    IF v_granted THEN
        RETURN interval '0';
    END IF;
    -- greatest() ignores NULL: no pause, or enough tokens
    RETURN greatest(
        v_paused_until - v_now,
        CASE WHEN v_tokens < p_cost THEN
            -- rounded up to the microsecond, at most 100 years
            ceil(least((p_cost - v_tokens) / v_rate, 3155760000::float8) * 1e6::float8)
            * interval '1 microsecond'
        END
    );
END;
$$;

COMMENT ON FUNCTION pgcoord.rate_acquire(text, double precision, integer, integer) IS
'Take p_cost tokens from the token bucket of p_key (refilling at p_per_second up to '
'p_burst, full at first): ''0 seconds'' when granted, else how long to wait before asking '
'again (until p_cost tokens are there or the pause ends, at most 100 years), spending '
'nothing. Ranges: p_key 1 to 1024 bytes; p_per_second above 0 and at most 1000000 '
'(finite); p_burst 1 to 1000000; p_cost 1 to p_burst. Errors: 22004 NULL argument, 22023 '
'an argument out of its range.';

-- db/src/functions/rate_pause.sql
-- Pause every caller of p_key (a provider answered 429 with Retry-After): until the
-- returned time, rate_acquire refuses with the remaining pause. A pause never shortens
-- the one in force (the later end wins); the tokens are left as they are.
CREATE OR REPLACE FUNCTION pgcoord.rate_pause(p_key text, p_for interval)
RETURNS timestamptz
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- its table through its key, whatever it held when the plan was made (040_rates.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_until timestamptz;
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_key) BETWEEN 1 AND 1024
        AND p_for >= interval '0' AND p_for <= interval '1 day'
        AND date_trunc('month', p_for) = interval '0'
        AND abs(extract(DAY FROM p_for)) <= 36500
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
        END IF;
        IF NOT coalesce(
            p_for >= interval '0' AND p_for <= interval '1 day'
            AND date_trunc('month', p_for) = interval '0'
            AND abs(extract(DAY FROM p_for)) <= 36500,
            false
        ) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_for', p_for, 'an interval from 0 to 1 day, with no months'
            );
        END IF;
    END IF;

    INSERT INTO pgcoord.rates AS r (key, paused_until, updated_at)
    VALUES (p_key, v_now + p_for, v_now)
    ON CONFLICT (key) DO UPDATE
    SET paused_until = greatest(r.paused_until, v_now + p_for),
        updated_at = greatest(r.updated_at, v_now)
    RETURNING r.paused_until INTO v_until;
    RETURN v_until;
END;
$$;

COMMENT ON FUNCTION pgcoord.rate_pause(text, interval) IS
'Make every rate_acquire of p_key wait until the returned time: now + p_for, or the end '
'of the pause in force when that is later (a pause is never shortened). Ranges: p_key '
'1 to 1024 bytes; p_for 0 to 1 day. Intervals with no months. Errors: 22004 NULL '
'argument, 22023 an argument out of its range (a negative or infinite p_for included).';

-- db/src/functions/rate_reset.sql
-- Forget the bucket of p_key: the next rate_acquire finds it full and unpaused (after
-- the provider raised the limit, or to lift a pause set by mistake). Callers already
-- told to wait are not called back. True when the key had a bucket.
CREATE OR REPLACE FUNCTION pgcoord.rate_reset(p_key text)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- its table through its key, whatever it held when the plan was made (040_rates.sql)
SET enable_seqscan = off
AS $$
BEGIN
    IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
        PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
    END IF;

    DELETE FROM pgcoord.rates AS r WHERE r.key = p_key;
    RETURN FOUND;
END;
$$;

COMMENT ON FUNCTION pgcoord.rate_reset(text) IS
'Forget the bucket and the pause of p_key (full and unpaused again); true when it had one. '
'Ranges: p_key 1 to 1024 bytes. Errors: 22004 NULL argument, 22023 empty or over-long key.';

-- db/src/functions/version.sql
-- The installed pgcoord version.
CREATE OR REPLACE FUNCTION pgcoord.version()
RETURNS text
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT v.version
    FROM pgcoord.schema_version AS v
    ORDER BY v.installed_at DESC, v.version DESC
    LIMIT 1;
END;

COMMENT ON FUNCTION pgcoord.version() IS
'The pgcoord version installed in this database (NULL before the first install). '
'Errors: none.';

-- db/src/views/buffer_status.sql
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

-- db/src/views/campaign_message_status.sql
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

-- db/src/views/campaign_progress.sql
-- One row per campaign run, counted without reading its sent messages: pending and
-- processing (held, an orphan included until it is claimed again) are summed over the
-- run's open groups, failed is counted on a partial index of the outcomes, total is
-- summed over the run's enqueue calls less its pruned messages, skipped is the run's
-- counter, and sent is the rest. Cheap for a run of a million messages: it reads the
-- backlog's groups, the failures and a row per enqueue call.
-- The columns are in the contract's order.
CREATE OR REPLACE VIEW pgcoord.campaign_progress AS
SELECT  -- noqa: ST06
    r.id AS run_id,
    r.name,
    r.status,
    o.pending,
    o.processing,
    e.total - o.pending - o.processing - f.failed - r.skipped AS sent,
    f.failed,
    r.skipped,
    e.total
FROM pgcoord.campaign_runs AS r
CROSS JOIN
    LATERAL (
        SELECT coalesce(sum(x.messages), 0) - r.pruned AS total
        FROM pgcoord.campaign_enqueues AS x
        WHERE x.run_id = r.id
    ) AS e
CROSS JOIN
    LATERAL (
        SELECT
            coalesce(sum(cardinality(q.message_ids)) FILTER (WHERE q.claimed_by IS NULL), 0)
                AS pending,
            coalesce(sum(cardinality(q.message_ids)) FILTER (WHERE q.claimed_by IS NOT NULL), 0)
                AS processing
        FROM pgcoord.campaign_queue AS q
        WHERE q.run_id = r.id
    ) AS o
CROSS JOIN LATERAL (
    SELECT count(*) AS failed
    FROM pgcoord.campaign_outcomes AS x
    WHERE x.run_id = r.id AND x.status = 'failed'
) AS f;

COMMENT ON VIEW pgcoord.campaign_progress IS
'Campaign runs and their messages by state: run_id, name, status, pending, processing, '
'sent, failed, skipped, total.';

-- db/src/views/lock_status.sql
-- One row per held key; expired leases stay listed until taken over or released.
CREATE OR REPLACE VIEW pgcoord.lock_status AS
SELECT
    l.key,
    l.owner,
    l.token,
    l.acquired_at,
    l.expires_at,
    l.expires_at <= clock_timestamp() AS expired
FROM pgcoord.locks AS l;

COMMENT ON VIEW pgcoord.lock_status IS
'Held lease locks: key, owner, token, acquired_at, expires_at, expired.';

-- db/src/views/rate_status.sql
-- One row per rate key: the tokens in its bucket now (refilled at the rate of its last
-- grant up to that grant's burst; NULL while no grant was made, a full bucket), that
-- rate and burst, the end of the pause in force (NULL when none), and the last write.
-- The columns are in the order pgcoord status shows them.
CREATE OR REPLACE VIEW pgcoord.rate_status AS
WITH clock AS (SELECT clock_timestamp() AS now)

SELECT  -- noqa: ST06
    r.key,
    least(
        r.burst,
        r.tokens + r.per_second * greatest(extract(EPOCH FROM c.now - r.tokens_at), 0)::float8
    ) AS tokens,
    r.per_second,
    r.burst,
    CASE WHEN r.paused_until > c.now THEN r.paused_until END AS paused_until,
    r.updated_at
FROM pgcoord.rates AS r
CROSS JOIN clock AS c;

COMMENT ON VIEW pgcoord.rate_status IS
'Rate limit keys: key, tokens (as of now), per_second, burst, paused_until (the pause in '
'force), updated_at.';

-- db/src/grants.sql
-- Only the documented API is granted, and only to pgcoord_client. The API functions are
-- SECURITY DEFINER, so callers need no privileges on the tables behind them.

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgcoord FROM PUBLIC;  -- noqa: CP02
REVOKE ALL ON ALL TABLES IN SCHEMA pgcoord FROM PUBLIC;  -- noqa: CP02
REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgcoord FROM PUBLIC;  -- noqa: CP02

-- Every install and upgrade sets the privileges on the schema's functions, tables, views
-- and sequences to exactly these grants: whatever another role holds on them is revoked
-- (the default privileges of the installing role, ALTER DEFAULT PRIVILEGES ... TO anon,
-- give every new object to that role; so does a grant on ALL TABLES IN SCHEMA pgcoord).
-- Roles get pgcoord through pgcoord_client, never through grants on its objects.
DO $$
DECLARE
    v_grant record;
BEGIN
    FOR v_grant IN
        SELECT DISTINCT
            'FUNCTIONS' AS kind,
            a.grantee
        FROM pg_catalog.pg_proc AS p
        CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) AS a
        WHERE p.pronamespace = 'pgcoord'::regnamespace AND a.grantee NOT IN (0, p.proowner)
        UNION
        SELECT DISTINCT
            CASE WHEN c.relkind = 'S' THEN 'SEQUENCES' ELSE 'TABLES' END,
            a.grantee
        FROM pg_catalog.pg_class AS c
        CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) AS a
        WHERE c.relnamespace = 'pgcoord'::regnamespace AND a.grantee NOT IN (0, c.relowner)
    LOOP
        EXECUTE format(
            'REVOKE ALL ON ALL %s IN SCHEMA pgcoord FROM %s CASCADE',
            v_grant.kind, v_grant.grantee::regrole
        );
    END LOOP;
END;
$$;

GRANT EXECUTE ON FUNCTION pgcoord.lock_acquire(text, text, interval, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.lock_release(text, text) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.lock_extend(text, text, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.lock_is_current(text, bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.lock_extend_token(text, bigint, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.lock_release_token(text, bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.version() TO pgcoord_client;

GRANT EXECUTE ON FUNCTION
pgcoord.message_ingest(text, text, text, text, jsonb, interval, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_claim(text, integer, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_complete(text, bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_fail(text, bigint, text, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_fail_for_good(text, bigint, text) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_failed(text, bigint, text, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_extend(text, bigint, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_release(text, bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_revive(text) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_due_in() TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.message_prune(interval, integer) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.message_payloads(bigint[]) TO pgcoord_client;

GRANT EXECUTE ON FUNCTION
pgcoord.rate_acquire(text, double precision, integer, integer) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.rate_pause(text, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.rate_reset(text) TO pgcoord_client;

GRANT SELECT ON pgcoord.lock_status TO pgcoord_client;
GRANT SELECT ON pgcoord.buffer_status TO pgcoord_client;
GRANT SELECT ON pgcoord.rate_status TO pgcoord_client;

GRANT EXECUTE ON FUNCTION
pgcoord.campaign_create(text, integer, interval[], interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_set_status(bigint, text) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_enqueue(bigint, jsonb) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_enqueue_once(bigint, text, jsonb) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION
pgcoord.campaign_claim(text, integer, interval, bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_complete(bigint, bigint, jsonb) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION
pgcoord.campaign_complete_many(bigint[], bigint[], jsonb[]) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION
pgcoord.campaign_completed(bigint[], bigint[], jsonb[]) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_metrics(jsonb) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_completed_then_claim(
    bigint[], bigint[], jsonb, text, integer, interval, bigint
) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_fail(bigint, bigint, text, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_fail_for_good(bigint, bigint, text) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_snooze(bigint, bigint, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_skip_stale(interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_extend(bigint, bigint, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_release(bigint, bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_due_in(bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_idle(bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_busy(bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_stats(bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_prune(interval, integer) TO pgcoord_client;

GRANT SELECT ON pgcoord.campaign_progress TO pgcoord_client;
GRANT SELECT ON pgcoord.campaign_message_status TO pgcoord_client;

INSERT INTO pgcoord.schema_version (version) VALUES ('0.3.0')
ON CONFLICT (version) DO NOTHING;

COMMIT;
