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
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    v_ids bigint[];
    v_orphan record;
BEGIN
    IF coalesce(octet_length(p_worker), 0) NOT BETWEEN 1 AND 1024 THEN
        PERFORM pgcoord.raise_bad_argument('p_worker', p_worker, 'a text of 1 to 1024 bytes');
    END IF;
    IF NOT coalesce(p_limit >= 1, false) THEN
        PERFORM pgcoord.raise_bad_argument('p_limit', p_limit, 'at least 1');
    END IF;
    IF NOT coalesce(p_lease > interval '0', false) THEN
        PERFORM pgcoord.raise_bad_argument('p_lease', p_lease, 'a positive interval');
    END IF;

    v_ids := array(
        SELECT b.id
        FROM pgcoord.buffers AS b
        WHERE NOT b.dead AND b.due_at <= v_now
        ORDER BY b.due_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    );
    IF cardinality(v_ids) = 0 THEN
        RETURN;
    END IF;

    -- orphans: the lease ran out while a claim held the batch
    FOR v_orphan IN
        SELECT b.id, b.claimed_by
        FROM pgcoord.buffers AS b
        WHERE b.id = any(v_ids) AND b.claimed_by IS NOT NULL
    LOOP
        IF pgcoord.buffer_fail_try(
            v_orphan.id, format('lease expired (claimed by %s)', v_orphan.claimed_by), v_now
        ) THEN
            v_ids := array_remove(v_ids, v_orphan.id);
        END IF;
    END LOOP;

    -- fresh flushes: the waiting messages become the batch
    WITH taken AS (
        UPDATE pgcoord.messages AS m
        SET state = 'claimed'
        FROM pgcoord.buffers AS b
        WHERE
            b.id = any(v_ids) AND b.batch_size = 0
            AND m.conversation_key = b.conversation_key AND m.state = 'waiting'
        RETURNING b.id AS buffer_id, m.received_at
    )

    UPDATE pgcoord.buffers AS b
    SET batch_size = t.size,
        batch_first_at = t.first_at,
        batch_last_at = t.last_at,
        waiting = 0,
        waiting_first_at = NULL,
        waiting_last_at = NULL,
        flush_at = NULL
    FROM (
        SELECT
            taken.buffer_id,
            count(*)::integer AS size,
            min(taken.received_at) AS first_at,
            max(taken.received_at) AS last_at
        FROM taken
        GROUP BY taken.buffer_id
    ) AS t
    WHERE b.id = t.buffer_id;

    RETURN QUERY
    WITH claimed AS (
        UPDATE pgcoord.buffers AS b
        SET claim_token = nextval('pgcoord.claim_token'),
            claimed_by = p_worker,
            claimed_until = v_now + p_lease,
            due_at = v_now + p_lease
        WHERE b.id = any(v_ids) AND b.batch_size > 0
        RETURNING
            b.conversation_key, b.claim_token, b.batch_first_at, b.batch_last_at, b.failures
    )

    SELECT
        c.conversation_key,
        c.claim_token,
        array_agg(m.id ORDER BY m.id),
        array_agg(m.body ORDER BY m.id),
        c.batch_first_at,
        c.batch_last_at,
        c.failures + 1
    FROM claimed AS c
    INNER JOIN pgcoord.messages AS m
        ON m.conversation_key = c.conversation_key AND m.state = 'claimed'
    GROUP BY c.conversation_key, c.claim_token, c.batch_first_at, c.batch_last_at, c.failures
    ORDER BY c.claim_token;
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_claim(text, integer, interval) IS
'Claim up to p_limit due conversations, one claim per conversation at a time, messages '
'in arrival order; never waits on other claimers. Errors: 22004 NULL argument, 22023 '
'empty or over-long worker, p_limit < 1, non-positive p_lease.';
