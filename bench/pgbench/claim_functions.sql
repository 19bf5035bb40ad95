-- One worker's loop through the SQL functions: claim one due conversation (limit 1,
-- default lease), then complete it; one statement, one transaction each. The backlog of
-- due 1-message buffers is stored before the run and outlasts it; should it run dry, an
-- empty claim completes nothing (\aset leaves :token at 0) and the bench reports it.
\set token 0
SELECT b.conversation_key AS key, b.claim_token AS token
FROM pgcoord.buffer_claim(p_worker => 'w' || :client_id, p_limit => 1) AS b
\aset
\if :token > 0
SELECT pgcoord.buffer_complete(p_conversation_key => :key, p_claim_token => :token);
\endif
