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
