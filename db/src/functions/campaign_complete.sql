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
