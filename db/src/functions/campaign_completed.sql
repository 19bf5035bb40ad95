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
