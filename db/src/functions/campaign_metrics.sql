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
