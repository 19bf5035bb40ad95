-- Fencing check: is p_token the live grant of p_key right now (server clock)?
CREATE OR REPLACE FUNCTION pgcoord.lock_is_current(p_key text, p_token bigint)
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
        AND p_token IS NOT NULL
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
        END IF;
        IF p_token IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_token', p_token, 'given');
        END IF;
    END IF;

    RETURN EXISTS (
        SELECT
        FROM pgcoord.locks AS l
        WHERE l.key = p_key AND l.token = p_token AND l.expires_at > clock_timestamp()
    );
END;
$$;

COMMENT ON FUNCTION pgcoord.lock_is_current(text, bigint) IS
'True only while p_token is the live grant of p_key; usable in the caller''s own WHERE. '
'Ranges: p_key 1 to 1024 bytes; p_token any bigint. Errors: 22004 NULL argument, 22023 '
'empty or over-long key.';
