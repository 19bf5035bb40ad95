-- Only the documented API is granted, and only to pgcoord_client. The API functions are
-- SECURITY DEFINER, so callers need no privileges on the tables behind them.

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgcoord FROM PUBLIC;  -- noqa: CP02
REVOKE ALL ON ALL TABLES IN SCHEMA pgcoord FROM PUBLIC;  -- noqa: CP02
REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgcoord FROM PUBLIC;  -- noqa: CP02

GRANT EXECUTE ON FUNCTION pgcoord.lock_acquire(text, text, interval, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.lock_release(text, text) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.lock_extend(text, text, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.lock_is_current(text, bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.version() TO pgcoord_client;

GRANT EXECUTE ON FUNCTION
pgcoord.message_ingest(text, text, text, text, jsonb, interval, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_claim(text, integer, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_complete(text, bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_fail(text, bigint, text, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_extend(text, bigint, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_release(text, bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_revive(text) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_due_in() TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.message_prune(interval, integer) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.message_payloads(bigint[]) TO pgcoord_client;

GRANT EXECUTE ON FUNCTION
pgcoord.rate_acquire(text, double precision, integer, integer) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.rate_pause(text, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.rate_reset(text) TO pgcoord_client;

GRANT SELECT ON pgcoord.lock_status TO pgcoord_client;
GRANT SELECT ON pgcoord.buffer_status TO pgcoord_client;
GRANT SELECT ON pgcoord.rate_status TO pgcoord_client;
