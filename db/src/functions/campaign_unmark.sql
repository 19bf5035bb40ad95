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
    v_key integer[];
BEGIN
    IF cardinality(v_mark) <> 2 THEN
        RETURN;
    END IF;
    v_key := pgcoord.campaign_mark_key(v_mark[1], nullif(v_mark[2], 'all')::bigint);
    IF v_mark[1] = 'idle' THEN
        PERFORM pg_advisory_unlock_shared(v_key[1], v_key[2]);
    ELSE
        PERFORM pg_advisory_unlock(v_key[1], v_key[2]);
    END IF;
    PERFORM set_config('pgcoord.campaign_mark', '', FALSE);
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_unmark() IS
'Internal. Let go of the session''s campaign worker mark (campaign_idle, campaign_busy).';
