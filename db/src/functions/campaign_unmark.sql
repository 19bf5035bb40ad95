-- Internal. Let go of the session's campaign worker mark (campaign_idle, campaign_busy),
-- as recorded in the setting pgcoord.campaign_mark; nothing without one.
CREATE OR REPLACE FUNCTION pgcoord.campaign_unmark()
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_mark constant text[] := string_to_array(
        coalesce(current_setting('pgcoord.campaign_mark', TRUE), ''), ' '
    );
    v_run integer;
BEGIN
    IF cardinality(v_mark) <> 2 THEN
        RETURN;
    END IF;
    IF v_mark[2] <> 'all' THEN
        v_run := (v_mark[2]::bigint & 2147483647)::integer;
    END IF;
    IF v_mark[1] = 'idle' AND v_run IS NULL THEN
        PERFORM pg_advisory_unlock_shared(1885823844, 1);
    ELSIF v_mark[1] = 'idle' THEN
        PERFORM pg_advisory_unlock_shared(1885823845, v_run);
    ELSIF v_run IS NULL THEN
        PERFORM pg_advisory_unlock(1885823844, 2);
    ELSE
        PERFORM pg_advisory_unlock(1885823846, v_run);
    END IF;
    PERFORM set_config('pgcoord.campaign_mark', '', FALSE);
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_unmark() IS
'Internal. Let go of the session''s campaign worker mark (campaign_idle, campaign_busy).';
