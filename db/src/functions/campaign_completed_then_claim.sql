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
