-- buffer_fail_try (internal) takes p_final since 0.3.0: the 0.2.0 signature goes, and
-- the function is made again below with the callers that pass it
DROP FUNCTION IF EXISTS pgcoord.buffer_fail_try(bigint, text, timestamptz);
