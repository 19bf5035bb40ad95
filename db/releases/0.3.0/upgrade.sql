-- pgcoord 0.3.0: upgrade from 0.2.0, generated from db/src by scripts/freeze-release.
-- Apply with: psql -v ON_ERROR_STOP=1 -f upgrade.sql "$DATABASE_URL"
-- One transaction: all or nothing. Safe to run again, and from several sessions at once.

BEGIN;

SELECT pg_advisory_xact_lock(7001517330252001);

DO $$
DECLARE
    v_installed text;
BEGIN
    IF to_regclass('pgcoord.schema_version') IS NOT NULL THEN
        SELECT v.version INTO v_installed
        FROM pgcoord.schema_version AS v
        ORDER BY v.installed_at DESC, v.version DESC
        LIMIT 1;
    END IF;
    IF v_installed IS NULL OR v_installed NOT IN ('0.2.0', '0.3.0') THEN
        RAISE EXCEPTION 'this file upgrades pgcoord 0.2.0 to 0.3.0; found %', coalesce(v_installed, 'none')
            USING ERRCODE = '55000', HINT = 'pgcoord migrate and alembic upgrade head apply every step in turn.';
    END IF;
END;
$$;

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

GRANT USAGE ON SCHEMA pgcoord TO pgcoord_client;

CREATE TABLE IF NOT EXISTS pgcoord.schema_version (
    version text PRIMARY KEY,
    installed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- db/src/010_locks.sql
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

CREATE SEQUENCE IF NOT EXISTS pgcoord.claim_token AS bigint;

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
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_worker), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_worker', p_worker, 'a text of 1 to 1024 bytes');
        END IF;
        IF NOT coalesce(p_limit BETWEEN 1 AND 10000, false) THEN
            PERFORM pgcoord.raise_bad_argument('p_limit', p_limit, 'from 1 to 10000');
        END IF;
        IF NOT coalesce(p_lease > interval '0' AND p_lease <= interval '1 day', false) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_lease', p_lease, 'an interval above 0 and at most 1 day'
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
            v_row.id, format('lease expired (claimed by %s)', v_row.claimed_by), v_now
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
'p_limit 1 to 10000; p_lease above 0 and at most 1 day. Errors: 22004 NULL argument, '
'22023 an argument out of its range (an infinite interval included).';

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
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_conversation_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_conversation_key', p_conversation_key, 'a text of 1 to 1024 bytes'
            );
        END IF;
        IF p_claim_token IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_claim_token', p_claim_token, 'a bigint');
        END IF;
        IF NOT coalesce(p_lease > interval '0' AND p_lease <= interval '1 day', false) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_lease', p_lease, 'an interval above 0 and at most 1 day'
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
'Ranges: p_conversation_key 1 to 1024 bytes; p_lease above 0 and at most 1 day. Errors: '
'22004 NULL argument, 22023 an argument out of its range (an infinite interval '
'included).';

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
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_buffer_id bigint;
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_conversation_key) BETWEEN 1 AND 1024
        AND p_claim_token IS NOT NULL
        AND p_error IS NOT NULL
        AND p_retry_in >= interval '0' AND p_retry_in <= interval '30 days'
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
        IF NOT coalesce(p_retry_in >= interval '0' AND p_retry_in <= interval '30 days', false) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_retry_in', p_retry_in, 'an interval from 0 to 30 days'
            );
        END IF;
    END IF;

    SELECT b.id INTO v_buffer_id
    FROM pgcoord.buffers AS b
    WHERE
        b.conversation_key = p_conversation_key AND NOT b.dead
        AND b.claim_token = p_claim_token AND b.claimed_by IS NOT NULL
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;

    PERFORM pgcoord.buffer_fail_try(v_buffer_id, p_error, v_now + p_retry_in);
    RETURN true;
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_fail(text, bigint, text, interval) IS
'Give the batch of claim p_claim_token back, claimable again after p_retry_in; after its '
'5th failed try it is parked as dead. False, changing nothing, when the claim is no '
'longer current. Ranges: p_conversation_key 1 to 1024 bytes; p_retry_in 0 to 30 days. '
'Errors: 22004 NULL argument, 22023 an argument out of its range (an infinite interval '
'included).';

-- db/src/functions/buffer_fail_try.sql
-- Internal. Count a failed try of the batch held by buffer row p_buffer_id (the caller
-- holds its row lock): give the batch back, claimable again at p_retry_at, or on its
-- 5th failed try park it as dead. A parked row keeps exactly the batch's messages; the
-- messages waiting behind it move to a fresh row of the conversation, due at their
-- own flush. Returns true when the batch was parked.
CREATE OR REPLACE FUNCTION pgcoord.buffer_fail_try(
    p_buffer_id bigint, p_error text, p_retry_at timestamptz
)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
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

    IF v_row.failures < 5 THEN
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

COMMENT ON FUNCTION pgcoord.buffer_fail_try(bigint, text, timestamptz) IS
'Internal. Count a failed try of a buffer row''s batch (caller holds the row lock): give it '
'back until p_retry_at, or park it as dead on the 5th; true when parked. Errors: none.';

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

-- db/src/functions/lock_acquire.sql
-- Take or renew the lease of a key. A free or expired key is granted with a new token;
-- the live holder renews and keeps its token; anyone else is answered acquired = false
-- with the holder's owner, token and expiry. It never locks the row of a live lease
-- held by another owner. Renewals and take-overs are compare-and-swap on the token and
-- expiry read, so took_over is exact and a renewal is never overwritten. With
-- p_wait > 0 it tries again until the key frees or p_wait has passed, holding no row
-- lock while it waits.
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
AS $$
DECLARE
    v_now timestamptz;
    v_deadline timestamptz;
    v_pause float8 := 0.002::float8;
    v_holder text;
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_key) BETWEEN 1 AND 1024
        AND octet_length(p_owner) BETWEEN 1 AND 1024
        AND p_ttl > interval '0' AND p_ttl <= interval '1 day'
        AND p_wait >= interval '0' AND p_wait <= interval '1 hour'
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
        END IF;
        IF coalesce(octet_length(p_owner), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_owner', p_owner, 'a text of 1 to 1024 bytes');
        END IF;
        IF NOT coalesce(p_ttl > interval '0' AND p_ttl <= interval '1 day', false) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_ttl', p_ttl, 'an interval above 0 and at most 1 day'
            );
        END IF;
        IF NOT coalesce(p_wait >= interval '0' AND p_wait <= interval '1 hour', false) THEN
            PERFORM pgcoord.raise_bad_argument('p_wait', p_wait, 'an interval from 0 to 1 hour');
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
END;
$$;

COMMENT ON FUNCTION pgcoord.lock_acquire(text, text, interval, interval) IS
'Take or renew the lease of p_key for p_owner; always one row. Non-blocking unless '
'p_wait > 0. Ranges: p_key, p_owner 1 to 1024 bytes; p_ttl above 0 and at most 1 day; '
'p_wait 0 to 1 hour. Errors: 22004 NULL argument, 22023 an argument out of its range '
'(an infinite interval included).';

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
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
        END IF;
        IF coalesce(octet_length(p_owner), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_owner', p_owner, 'a text of 1 to 1024 bytes');
        END IF;
        IF NOT coalesce(p_ttl > interval '0' AND p_ttl <= interval '1 day', false) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_ttl', p_ttl, 'an interval above 0 and at most 1 day'
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
'Ranges: p_key, p_owner 1 to 1024 bytes; p_ttl above 0 and at most 1 day. Errors: 22004 '
'NULL argument, 22023 an argument out of its range (an infinite interval included).';

-- db/src/functions/lock_is_current.sql
-- Fencing check: is p_token the live grant of p_key right now (server clock)?
CREATE OR REPLACE FUNCTION pgcoord.lock_is_current(p_key text, p_token bigint)
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
        AND p_max_wait >= interval '0' AND p_max_wait <= interval '7 days'
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
        IF NOT coalesce(p_debounce >= interval '0' AND p_debounce <= interval '1 day', false) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_debounce', p_debounce, 'an interval from 0 to 1 day'
            );
        END IF;
        IF NOT coalesce(p_max_wait >= interval '0' AND p_max_wait <= interval '7 days', false) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_max_wait', p_max_wait, 'an interval from 0 to 7 days'
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
'p_payload a JSON object; p_debounce 0 to 1 day; p_max_wait 0 to 7 days. Errors: 22004 '
'NULL argument, 22023 an argument out of its range (an infinite interval included); '
'23505 a repeated provider message id with a different conversation key or body.';

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
    -- one lean test; the checks naming the bad argument run only when it fails
    IF (
        p_older_than > interval '0' AND p_older_than <= interval '100 years'
        AND p_limit BETWEEN 1 AND 1000000
    ) IS NOT TRUE THEN
        IF NOT coalesce(
            p_older_than > interval '0' AND p_older_than <= interval '100 years', false
        ) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_older_than', p_older_than, 'an interval above 0 and at most 100 years'
            );
        END IF;
        IF NOT coalesce(p_limit BETWEEN 1 AND 1000000, false) THEN
            PERFORM pgcoord.raise_bad_argument('p_limit', p_limit, 'from 1 to 1000000');
        END IF;
    END IF;
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
-- One statement decides. It reads the bucket without locking it: tokens leave a bucket
-- only through committed grants, so the bucket as the statement sees it holds at least
-- what it holds now. A refusal seen is therefore a true refusal (its wait at worst a
-- little short, when another caller's grant commits meanwhile: the caller asks again)
-- and writes nothing, no row version and no row lock, however hot the key. A grant
-- seen is made on the newest version of the row under its row lock, compared with what
-- was read (every grant changes tokens or tokens_at) and checked for a pause; when
-- another caller changed the row meanwhile, the call looks again (it keeps the row lock
-- it waited for: a lost race is the one refusal that writes, a lock but no row
-- version). Callers of one key are serialized by the row only when they may be granted;
-- different keys never meet.
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
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    -- float8 underflows below about 1e-318 per second; a rate below 1e-300 refills
    -- nothing in any lifetime, and its waits are answered as the longest wait anyway
    v_rate constant double precision := greatest(p_per_second, 1e-300::float8);
    v_granted boolean;
    v_seen boolean;
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
        WITH seen AS (
            SELECT
                true AS found,
                r.tokens AS stored,
                r.tokens_at,
                r.paused_until,
                -- a bucket without tokens (made by a pause) is full
                least(p_burst, coalesce(
                    r.tokens
                    + v_rate * greatest(extract(EPOCH FROM v_now - r.tokens_at), 0)::float8,
                    p_burst
                )) AS tokens
            FROM pgcoord.rates AS r
            WHERE r.key = p_key
        ),

        spent AS (
            UPDATE pgcoord.rates AS r
            SET tokens = seen.tokens - p_cost,
                -- a caller that read the clock before a later grant committed counts
                -- from that grant: time never runs backwards for the bucket
                tokens_at = greatest(r.tokens_at, v_now),
                per_second = v_rate,
                burst = p_burst,
                updated_at = greatest(r.updated_at, v_now)
            FROM seen
            WHERE
                r.key = p_key AND seen.tokens >= p_cost
                AND r.tokens IS NOT DISTINCT FROM seen.stored
                AND r.tokens_at IS NOT DISTINCT FROM seen.tokens_at
                AND NOT coalesce(r.paused_until > v_now, false)
            RETURNING 1
        ),

        added AS (
            INSERT INTO pgcoord.rates AS r (key, tokens, tokens_at, per_second, burst, updated_at)
            SELECT p_key, p_burst - p_cost, v_now, v_rate, p_burst, v_now
            WHERE NOT EXISTS (SELECT FROM seen)
            ON CONFLICT (key) DO NOTHING
            RETURNING 1
        )

        SELECT
            EXISTS (SELECT FROM spent) OR EXISTS (SELECT FROM added),
            coalesce(s.found, false),
            s.tokens,
            s.paused_until
        INTO v_granted, v_seen, v_tokens, v_paused_until
        FROM (SELECT) AS one
        LEFT JOIN seen AS s ON true;

        -- decided: granted, or refused on the row as read; else another caller created
        -- or changed the row since it was read, and the call looks again
        EXIT WHEN v_granted
        OR v_seen AND (coalesce(v_paused_until > v_now, false) OR v_tokens < p_cost);
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
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
        END IF;
        IF NOT coalesce(p_for >= interval '0' AND p_for <= interval '1 day', false) THEN
            PERFORM pgcoord.raise_bad_argument('p_for', p_for, 'an interval from 0 to 1 day');
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
'of the pause in force when that is later (a pause is never shortened). Ranges: p_key 1 '
'to 1024 bytes; p_for 0 to 1 day. Errors: 22004 NULL argument, 22023 an argument out of '
'its range (a negative or infinite p_for included).';

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
GRANT EXECUTE ON FUNCTION pgcoord.version() TO pgcoord_client;

GRANT EXECUTE ON FUNCTION
pgcoord.message_ingest(text, text, text, text, jsonb, interval, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_claim(text, integer, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_complete(text, bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_fail(text, bigint, text, interval) TO pgcoord_client;
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

INSERT INTO pgcoord.schema_version (version) VALUES ('0.3.0')
ON CONFLICT (version) DO NOTHING;

COMMIT;
