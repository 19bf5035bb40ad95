-- The same producer on the plain row-per-message table (bench_plain.messages): one
-- INSERT of one message, due now. One statement, one transaction.
INSERT INTO bench_plain.messages (recipient, payload, scheduled_at)
VALUES ('+15550000000', '{"text": "hello"}', clock_timestamp());
