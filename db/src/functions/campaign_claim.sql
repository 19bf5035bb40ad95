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
