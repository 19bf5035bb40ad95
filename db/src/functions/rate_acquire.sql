-- Take p_cost tokens from the bucket of p_key, shared by every caller of the key: the
-- bucket refills at p_per_second up to p_burst and starts full. Granted: '0 seconds',
-- the tokens are spent. Refused: how long until p_cost tokens are there, or until the
-- pause in force ends, whichever is later; nothing is spent (nor written, below).
-- The rate and burst are the call's own (a caller may change them; the tokens spent so
-- far stay spent).
--
-- A plain read decides, without locking the bucket: tokens leave a bucket only through
-- committed grants, so the bucket as the read sees it holds at least what it holds now.
-- A refusal seen is therefore a true refusal (its wait at worst a little short, when
-- another caller's grant commits meanwhile: the caller asks again) and writes nothing,
-- no row version and no row lock, however hot the key. A grant seen is then made by one
-- UPDATE on the newest version of the row under its row lock, compared with what was
-- read (every grant changes tokens or tokens_at) and checked for a pause; when another
-- caller changed the row meanwhile, the call reads again (it keeps the row lock it
-- waited for: a lost race is the one refusal that writes, a lock but no row version).
-- Callers of one key are serialized by the row only when they may be granted; different
-- keys never meet.
CREATE OR REPLACE FUNCTION pgcoord.rate_acquire(
    p_key text,
    p_per_second double precision,
    p_burst integer,
    p_cost integer DEFAULT 1
)
RETURNS interval
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- its table through its key, whatever it held when the plan was made (040_rates.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_now constant timestamptz := clock_timestamp();
    -- float8 underflows below about 1e-318 per second; a rate below 1e-300 refills
    -- nothing in any lifetime, and its waits are answered as the longest wait anyway
    v_rate constant double precision := greatest(p_per_second, 1e-300::float8);
    v_granted boolean := false;
    v_stored double precision;
    v_tokens_at timestamptz;
    v_tokens double precision;
    v_paused_until timestamptz;
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction). NaN and
    -- infinity fail the bound: PostgreSQL orders NaN above every number.
    IF (
        octet_length(p_key) BETWEEN 1 AND 1024
        AND p_per_second > 0 AND p_per_second <= 1000000
        AND p_burst BETWEEN 1 AND 1000000
        AND p_cost BETWEEN 1 AND p_burst
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
        END IF;
        IF NOT coalesce(p_per_second > 0 AND p_per_second <= 1000000, false) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_per_second', p_per_second, 'a number above 0 and at most 1000000'
            );
        END IF;
        IF NOT coalesce(p_burst BETWEEN 1 AND 1000000, false) THEN
            PERFORM pgcoord.raise_bad_argument('p_burst', p_burst, 'from 1 to 1000000');
        END IF;
        IF NOT coalesce(p_cost BETWEEN 1 AND p_burst, false) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_cost', p_cost, format('from 1 to p_burst (%s)', p_burst)
            );
        END IF;
    END IF;

    LOOP
        SELECT
            r.tokens,
            r.tokens_at,
            r.paused_until,
            -- a bucket without tokens (made by a pause) is full
            least(p_burst, coalesce(
                r.tokens + v_rate * greatest(extract(EPOCH FROM v_now - r.tokens_at), 0)::float8,
                p_burst
            ))
        INTO v_stored, v_tokens_at, v_paused_until, v_tokens
        FROM pgcoord.rates AS r
        WHERE r.key = p_key;

        IF NOT FOUND THEN
            -- a new key starts full
            INSERT INTO pgcoord.rates AS r (key, tokens, tokens_at, per_second, burst, updated_at)
            VALUES (p_key, p_burst - p_cost, v_now, v_rate, p_burst, v_now)
            ON CONFLICT (key) DO NOTHING;
        ELSIF coalesce(v_paused_until > v_now, false) OR v_tokens < p_cost THEN
            EXIT;  -- refused on the row as read: nothing written
        ELSE
            UPDATE pgcoord.rates AS r
            SET tokens = v_tokens - p_cost,
                -- a caller that read the clock before a later grant committed counts
                -- from that grant: time never runs backwards for the bucket
                tokens_at = greatest(r.tokens_at, v_now),
                per_second = v_rate,
                burst = p_burst,
                updated_at = greatest(r.updated_at, v_now)
            WHERE
                r.key = p_key
                AND r.tokens IS NOT DISTINCT FROM v_stored
                AND r.tokens_at IS NOT DISTINCT FROM v_tokens_at
                AND NOT coalesce(r.paused_until > v_now, false);
        END IF;
        v_granted := FOUND;
        -- else another caller created or changed the row since it was read: read again
        EXIT WHEN v_granted;
    END LOOP;

    IF v_granted THEN
        RETURN interval '0';
    END IF;
    -- greatest() ignores NULL: no pause, or enough tokens
    RETURN greatest(
        v_paused_until - v_now,
        CASE WHEN v_tokens < p_cost THEN
            -- rounded up to the microsecond, at most 100 years
            ceil(least((p_cost - v_tokens) / v_rate, 3155760000::float8) * 1e6::float8)
            * interval '1 microsecond'
        END
    );
END;
$$;

COMMENT ON FUNCTION pgcoord.rate_acquire(text, double precision, integer, integer) IS
'Take p_cost tokens from the token bucket of p_key (refilling at p_per_second up to '
'p_burst, full at first): ''0 seconds'' when granted, else how long to wait before asking '
'again (until p_cost tokens are there or the pause ends, at most 100 years), spending '
'nothing. Ranges: p_key 1 to 1024 bytes; p_per_second above 0 and at most 1000000 '
'(finite); p_burst 1 to 1000000; p_cost 1 to p_burst. Errors: 22004 NULL argument, 22023 '
'an argument out of its range.';
