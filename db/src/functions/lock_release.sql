-- Free a key, but only for the owner that holds it (live, or expired and not yet taken).
CREATE OR REPLACE FUNCTION pgcoord.lock_release(p_key text, p_owner text)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- its table through its key, whatever it held when the plan was made (010_locks.sql)
SET enable_seqscan = off
AS $$
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_key) BETWEEN 1 AND 1024
        AND octet_length(p_owner) BETWEEN 1 AND 1024
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
        END IF;
        IF coalesce(octet_length(p_owner), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_owner', p_owner, 'a text of 1 to 1024 bytes');
        END IF;
    END IF;

    DELETE FROM pgcoord.locks AS l
    WHERE l.key = p_key AND l.owner = p_owner;
    RETURN FOUND;
END;
$$;

COMMENT ON FUNCTION pgcoord.lock_release(text, text) IS
'True when p_owner held p_key and it is now free; false otherwise, changing nothing. '
'Ranges: p_key, p_owner 1 to 1024 bytes. Errors: 22004 NULL argument, 22023 empty or '
'over-long key/owner.';
