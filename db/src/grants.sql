-- Only the documented API is granted, and only to pgcoord_client. The API functions are
-- SECURITY DEFINER, so callers need no privileges on the tables behind them.

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgcoord FROM PUBLIC;  -- noqa: CP02
REVOKE ALL ON ALL TABLES IN SCHEMA pgcoord FROM PUBLIC;  -- noqa: CP02
REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgcoord FROM PUBLIC;  -- noqa: CP02

-- Every install and upgrade sets the privileges on the schema's functions, tables, views
-- and sequences to exactly these grants: whatever another role holds on them is revoked
-- (the default privileges of the installing role, ALTER DEFAULT PRIVILEGES ... TO anon,
-- give every new object to that role; so does a grant on ALL TABLES IN SCHEMA pgcoord).
-- Roles get pgcoord through pgcoord_client, never through grants on its objects.
DO $$
DECLARE
    v_grant record;
BEGIN
    FOR v_grant IN
        SELECT DISTINCT
            'FUNCTIONS' AS kind,
            a.grantee
        FROM pg_catalog.pg_proc AS p
        CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) AS a
        WHERE p.pronamespace = 'pgcoord'::regnamespace AND a.grantee NOT IN (0, p.proowner)
        UNION
        SELECT DISTINCT
            CASE WHEN c.relkind = 'S' THEN 'SEQUENCES' ELSE 'TABLES' END,
            a.grantee
        FROM pg_catalog.pg_class AS c
        CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) AS a
        WHERE c.relnamespace = 'pgcoord'::regnamespace AND a.grantee NOT IN (0, c.relowner)
    LOOP
        EXECUTE format(
            'REVOKE ALL ON ALL %s IN SCHEMA pgcoord FROM %s CASCADE',
            v_grant.kind, v_grant.grantee::regrole
        );
    END LOOP;
END;
$$;

GRANT EXECUTE ON FUNCTION pgcoord.lock_acquire(text, text, interval, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.lock_release(text, text) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.lock_extend(text, text, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.lock_is_current(text, bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.lock_extend_token(text, bigint, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.lock_release_token(text, bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.version() TO pgcoord_client;

GRANT EXECUTE ON FUNCTION
pgcoord.message_ingest(text, text, text, text, jsonb, interval, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_claim(text, integer, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_complete(text, bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_fail(text, bigint, text, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_fail_for_good(text, bigint, text) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.buffer_failed(text, bigint, text, interval) TO pgcoord_client;
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

GRANT EXECUTE ON FUNCTION
pgcoord.campaign_create(text, integer, interval[], interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_set_status(bigint, text) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_enqueue(bigint, jsonb) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_enqueue_once(bigint, text, jsonb) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION
pgcoord.campaign_claim(text, integer, interval, bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_complete(bigint, bigint, jsonb) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION
pgcoord.campaign_complete_many(bigint[], bigint[], jsonb[]) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION
pgcoord.campaign_completed(bigint[], bigint[], jsonb[]) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_metrics(jsonb) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_completed_then_claim(
    bigint[], bigint[], jsonb, text, integer, interval, bigint
) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_fail(bigint, bigint, text, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_fail_for_good(bigint, bigint, text) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_snooze(bigint, bigint, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_skip_stale(interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_extend(bigint, bigint, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_release(bigint, bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_due_in(bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_idle(bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_busy(bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_stats(bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.campaign_prune(interval, integer) TO pgcoord_client;

GRANT SELECT ON pgcoord.campaign_progress TO pgcoord_client;
GRANT SELECT ON pgcoord.campaign_message_status TO pgcoord_client;
