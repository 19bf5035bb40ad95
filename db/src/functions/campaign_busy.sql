-- A campaign worker that has work again: end the mark of campaign_idle, so that
-- enqueues stop notifying it. Nothing when the session holds none.
CREATE OR REPLACE FUNCTION pgcoord.campaign_busy()
RETURNS void
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_mark constant text := coalesce(current_setting('pgcoord.campaign_idle', TRUE), '');
BEGIN
    IF v_mark = 'all' THEN
        PERFORM pg_advisory_unlock_shared(1885823844, 1);
    ELSIF v_mark <> '' THEN
        PERFORM pg_advisory_unlock_shared(1885823845, (v_mark::bigint & 2147483647)::integer);
    END IF;
    PERFORM set_config('pgcoord.campaign_idle', '', FALSE);
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_busy() IS
'End the session''s mark of campaign_idle: enqueues stop notifying it. Nothing when it '
'holds none.';
