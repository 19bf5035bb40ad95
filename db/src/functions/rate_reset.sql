-- Forget the bucket of p_key: the next rate_acquire finds it full and unpaused (after
-- the provider raised the limit, or to lift a pause set by mistake). Callers already
-- told to wait are not called back. True when the key had a bucket.
CREATE OR REPLACE FUNCTION pgcoord.rate_reset(p_key text)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- its table through its key, whatever it held when the plan was made (040_rates.sql)
SET enable_seqscan = off
AS $$
BEGIN
    IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
        PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
    END IF;

    DELETE FROM pgcoord.rates AS r WHERE r.key = p_key;
    RETURN FOUND;
END;
$$;

COMMENT ON FUNCTION pgcoord.rate_reset(text) IS
'Forget the bucket and the pause of p_key (full and unpaused again); true when it had one. '
'Ranges: p_key 1 to 1024 bytes. Errors: 22004 NULL argument, 22023 empty or over-long key.';
