-- A lease's release by its grant: free p_key while its grant is p_token, live or run
-- out but not yet taken over (a takeover is a new grant, with a new token). Unlike
-- lock_release (by owner), never a grant made since under the same owner name. Beyond
-- the contract.
CREATE OR REPLACE FUNCTION pgcoord.lock_release_token(p_key text, p_token bigint)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $$
BEGIN
    IF (
        octet_length(p_key) BETWEEN 1 AND 1024
        AND p_token IS NOT NULL
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
        END IF;
        PERFORM pgcoord.raise_bad_argument('p_token', p_token, 'given');
    END IF;

    DELETE FROM pgcoord.locks AS l
    WHERE l.key = p_key AND l.token = p_token;
    RETURN FOUND;
END;
$$;

COMMENT ON FUNCTION pgcoord.lock_release_token(text, bigint) IS
'True when p_token was the grant of p_key (live, or run out but not taken over) and the '
'key is now free; false otherwise, changing nothing. Beyond the contract. Ranges: p_key '
'1 to 1024 bytes; p_token any bigint. Errors: 22004 NULL argument, 22023 empty or '
'over-long key.';
