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
