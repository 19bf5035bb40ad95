-- A producer that hands over one message per call (a webhook as each message comes):
-- campaign_enqueue of one item into run :run_id. One statement, one transaction.
SELECT pgcoord.campaign_enqueue(
    :run_id, '[{"recipient": "+15550000000", "payload": {"text": "hello"}}]'::jsonb
);
