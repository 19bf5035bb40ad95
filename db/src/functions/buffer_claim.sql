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
