-- A lease's heartbeat by its grant: push the expiry of the live grant p_token of p_key
-- to now + p_ttl. Unlike lock_extend (by owner), never a grant made since under the
-- same owner name. Beyond the contract.
CREATE OR REPLACE FUNCTION pgcoord.lock_extend_token(
    p_key text, p_token bigint, p_ttl interval DEFAULT interval '2 minutes'
)
RETURNS timestamptz
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- its table through its key, whatever it held when the plan was made (010_locks.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_expires timestamptz;
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_key) BETWEEN 1 AND 1024
        AND p_token IS NOT NULL
        AND p_ttl > interval '0' AND p_ttl <= interval '1 day'
        AND date_trunc('month', p_ttl) = interval '0'
        AND abs(extract(DAY FROM p_ttl)) <= 36500 AND v_now + p_ttl > v_now
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
        END IF;
        IF p_token IS NULL THEN
            PERFORM pgcoord.raise_bad_argument('p_token', p_token, 'given');
        END IF;
        PERFORM pgcoord.raise_bad_argument(
            'p_ttl', p_ttl, 'an interval above 0 and at most 1 day, with no months'
        );
    END IF;

    UPDATE pgcoord.locks AS l
    SET expires_at = v_now + p_ttl
    WHERE l.key = p_key AND l.token = p_token AND l.expires_at > v_now
    RETURNING l.expires_at INTO v_expires;
    RETURN v_expires;
END;
$$;

COMMENT ON FUNCTION pgcoord.lock_extend_token(text, bigint, interval) IS
'New expiry when p_token is still the live grant of p_key; NULL, changing nothing, when '
'it is not. Beyond the contract. Ranges: p_key 1 to 1024 bytes; p_token any bigint; '
'p_ttl above 0 and at most 1 day, with no months. Errors: 22004 NULL argument, 22023 an '
'argument out of its range (an infinite interval included).';
