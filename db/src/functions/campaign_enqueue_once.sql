-- campaign_enqueue with a key (not in API.md): safe to call again when the answer of a
-- call was lost (the connection dropped during the commit, a timeout, a retried HTTP
-- request), which campaign_enqueue is not: a retry of that would enqueue the items
-- twice. The key is recorded with the run in the enqueue's transaction. A call with a
-- key the run already has enqueues nothing and returns the first call's count with
-- duplicate = true; a call while another with the same key is in flight waits for it
-- (and enqueues only if that one rolled back). The items of a repeat are not compared
-- with the first call's: the key says they are the same.
CREATE OR REPLACE FUNCTION pgcoord.campaign_enqueue_once(
    p_run_id bigint, p_key text, p_items jsonb
)
RETURNS TABLE (enqueued integer, duplicate boolean)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- p_run_id and the items are campaign_enqueue's to judge; the items' shape is tested
    -- here too, before they are counted, so that a repeat is refused bad items as well
    IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
        PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
    END IF;
    IF coalesce(jsonb_typeof(p_items), '') <> 'array' THEN
        PERFORM pgcoord.raise_bad_argument('p_items', p_items, 'a JSON array of items');
    END IF;
    -- the key first: a concurrent call with the same key waits here for this one
    INSERT INTO pgcoord.campaign_enqueue_keys AS k (run_id, key, messages)
    SELECT r.id, p_key, jsonb_array_length(p_items)
    FROM pgcoord.campaign_runs AS r
    WHERE r.id = p_run_id
    ON CONFLICT ON CONSTRAINT campaign_enqueue_keys_pkey DO NOTHING;
    IF NOT FOUND THEN
        SELECT k.messages INTO enqueued
        FROM pgcoord.campaign_enqueue_keys AS k
        WHERE k.run_id = p_run_id AND k.key = p_key;
        IF FOUND THEN
            duplicate := TRUE;
            RETURN NEXT;
            RETURN;
        END IF;
        -- no such run (or a NULL p_run_id): campaign_enqueue says so
    END IF;
    enqueued := pgcoord.campaign_enqueue(p_run_id => p_run_id, p_items => p_items);
    duplicate := FALSE;
    RETURN NEXT;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_enqueue_once(bigint, text, jsonb) IS
'campaign_enqueue of p_items into run p_run_id under the key p_key (1 to 1024 bytes), '
'once: a call with a key the run already has enqueues nothing and returns the first '
'call''s count with duplicate = true. Returns (enqueued, duplicate). Errors: those of '
'campaign_enqueue; 22004 NULL argument, 22023 p_key out of range.';
