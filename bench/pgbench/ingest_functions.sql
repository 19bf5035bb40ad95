-- Ingest through the SQL function: one statement, one transaction per call. 30% of the
-- calls repeat one of the 10,000 messages m1 .. m10000 stored before the run (same
-- conversation, same body: true duplicates, not conflicts); the rest are new messages
-- with random ids above 10,000, spread over 5,000 conversations. The default debounce
-- (10 s) keeps every flush more than a second away, so no call sends a NOTIFY.
\set r random(1, 100)
\if :r <= 30
\set k random(1, 10000)
\set c :k % 5000 + 1
\else
\set k random(10001, 9000000000000000000)
\set c random(1, 5000)
\endif
SELECT * FROM pgcoord.message_ingest(
    p_provider => 'bench', p_provider_message_id => 'm' || :k,
    p_conversation_key => 'c' || :c, p_body => 'body of m' || :k
);
