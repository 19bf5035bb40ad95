-- A campaign worker's loop at batch 15 through the SQL functions, without the worker:
-- claim up to 15 due messages (default lease), then complete them in one call with
-- campaign_complete_many ({} metrics each). One statement, one transaction each.
\set n 0
SELECT count(*) AS n, array_agg(c.message_id) AS ids, array_agg(c.claim_token) AS tokens
FROM pgcoord.campaign_claim(p_worker => 'w' || :client_id, p_limit => 15) AS c
\gset
\if :n > 0
SELECT pgcoord.campaign_complete_many(
    p_message_ids => :ids::bigint[], p_claim_tokens => :tokens::bigint[]
);
\endif
