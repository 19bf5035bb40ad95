-- Take or renew the lease of a key. A free or expired key is granted with a new token;
-- the live holder renews and keeps its token; anyone else is answered acquired = false
-- with the holder's owner, token and expiry. It never locks the row of a live lease
-- held by another owner. Renewals and take-overs are compare-and-swap on the token and
-- expiry read, so took_over is exact and a renewal is never overwritten. With
-- p_wait > 0 it tries again until the key frees or p_wait has passed, holding no row
-- lock while it waits. A try never waits long on another transaction writing the key's
-- row (an acquire or takeover inside a caller's transaction not yet committed): after
-- 1 s (the lock_timeout below) the key is answered not granted, its holder unknown
-- (owner, token and expires_at NULL) until that transaction ends.
CREATE OR REPLACE FUNCTION pgcoord.lock_acquire(
    p_key text,
    p_owner text,
    p_ttl interval DEFAULT interval '2 minutes',
    p_wait interval DEFAULT interval '0 seconds'
)
RETURNS TABLE (
    acquired boolean, owner text, token bigint, expires_at timestamptz, took_over boolean
)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- its table through its key, whatever it held when the plan was made (010_locks.sql)
SET enable_seqscan = off
-- a try's longest wait on a row another transaction is writing (an autocommit caller's
-- commit takes far less; an open transaction of a caller's, longer); the setting
-- pgcoord.lock_try_timeout, when set, replaces it. Restored when the call ends.
SET lock_timeout = '1s'
AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_deadline timestamptz;
    v_pause float8 := 0.002::float8;
    v_holder text;
    v_try_timeout text;
BEGIN
    -- one lean test on the hot path; the checks naming the bad argument run only when
    -- it fails (each IF's expression is set up again in every transaction)
    IF (
        octet_length(p_key) BETWEEN 1 AND 1024
        AND octet_length(p_owner) BETWEEN 1 AND 1024
        AND p_ttl > interval '0' AND p_ttl <= interval '1 day'
        AND date_trunc('month', p_ttl) = interval '0'
        AND abs(extract(DAY FROM p_ttl)) <= 36500 AND v_now + p_ttl > v_now
        AND p_wait >= interval '0' AND p_wait <= interval '1 hour'
        AND date_trunc('month', p_wait) = interval '0'
        AND abs(extract(DAY FROM p_wait)) <= 36500
    ) IS NOT TRUE THEN
        IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
        END IF;
        IF coalesce(octet_length(p_owner), 0) NOT BETWEEN 1 AND 1024 THEN
            PERFORM pgcoord.raise_bad_argument('p_owner', p_owner, 'a text of 1 to 1024 bytes');
        END IF;
        IF NOT coalesce(
            p_ttl > interval '0' AND p_ttl <= interval '1 day'
            AND date_trunc('month', p_ttl) = interval '0'
            AND abs(extract(DAY FROM p_ttl)) <= 36500 AND v_now + p_ttl > v_now,
            false
        ) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_ttl', p_ttl, 'an interval above 0 and at most 1 day, with no months'
            );
        END IF;
        IF NOT coalesce(
            p_wait >= interval '0' AND p_wait <= interval '1 hour'
            AND date_trunc('month', p_wait) = interval '0'
            AND abs(extract(DAY FROM p_wait)) <= 36500,
            false
        ) THEN
            PERFORM pgcoord.raise_bad_argument(
                'p_wait', p_wait, 'an interval from 0 to 1 hour, with no months'
            );
        END IF;
    END IF;

    IF p_wait > interval '0' THEN
        v_deadline := clock_timestamp() + p_wait;
        LOOP
            -- Each try is a subtransaction, rolled back when not granted: a try that
            -- lost a race may have locked the winner's row, and a waiter must not keep
            -- that lock while it sleeps (the holder's release would wait on it).
            BEGIN
                SELECT t.acquired, t.owner, t.token, t.expires_at, t.took_over
                INTO acquired, owner, token, expires_at, took_over
                FROM pgcoord.lock_acquire(p_key, p_owner, p_ttl) AS t;
                IF NOT acquired THEN
                    RAISE EXCEPTION USING ERRCODE = 'PGC01';
                END IF;
            EXCEPTION
                WHEN SQLSTATE 'PGC01' THEN NULL;
            END;
            v_now := clock_timestamp();
            IF acquired OR v_now >= v_deadline THEN
                RETURN NEXT;
                RETURN;
            END IF;
            PERFORM pg_sleep(least(v_pause, extract(EPOCH FROM v_deadline - v_now)::float8));
            v_pause := least(v_pause * 2, 0.05::float8);
        END LOOP;
    END IF;

    -- a longer wait on another transaction's write of the key, where the session asks
    -- for one (tests that hold the row to force an interleaving)
    v_try_timeout := current_setting('pgcoord.lock_try_timeout', true);
    IF v_try_timeout <> '' THEN
        PERFORM set_config('lock_timeout', v_try_timeout, true);  -- until the call ends
    END IF;
    BEGIN
        LOOP
            v_now := clock_timestamp();

            -- a free key: insert (nextval only runs when no row exists, so contenders
            -- spend no tokens)
            INSERT INTO pgcoord.locks AS l (key, owner, token, acquired_at, expires_at)
            SELECT p_key, p_owner, nextval('pgcoord.lock_token'), v_now, v_now + p_ttl
            WHERE NOT EXISTS (SELECT FROM pgcoord.locks AS h WHERE h.key = p_key)
            ON CONFLICT (key) DO NOTHING
            RETURNING true, l.owner, l.token, l.expires_at, false
            INTO acquired, owner, token, expires_at, took_over;
            IF FOUND THEN
                RETURN NEXT;
                RETURN;
            END IF;

            SELECT false, l.owner, l.token, l.expires_at, false
            INTO acquired, owner, token, expires_at, took_over
            FROM pgcoord.locks AS l
            WHERE l.key = p_key;
            IF FOUND THEN
                IF expires_at > v_now AND owner <> p_owner THEN
                    RETURN NEXT;
                    RETURN;
                END IF;

                IF expires_at > v_now THEN
                    -- the live holder renews: same token
                    UPDATE pgcoord.locks AS l
                    SET expires_at = v_now + p_ttl
                    WHERE l.key = p_key AND l.token = lock_acquire.token AND l.expires_at > v_now
                    RETURNING true, l.expires_at INTO acquired, expires_at;
                ELSE
                    -- an expired lease is a free key: a new grant with a new token. The swap
                    -- compares the expiry too: a renewal keeps the token, so the token alone
                    -- cannot tell that the holder renewed since our read.
                    v_holder := owner;
                    UPDATE pgcoord.locks AS l
                    SET owner = p_owner,
                        token = nextval('pgcoord.lock_token'),
                        acquired_at = v_now,
                        expires_at = v_now + p_ttl
                    WHERE l.key = p_key AND l.token = lock_acquire.token AND l.expires_at <= v_now
                    RETURNING true, l.owner, l.token, l.expires_at, v_holder <> p_owner
                    INTO acquired, owner, token, expires_at, took_over;
                END IF;
                IF FOUND THEN
                    RETURN NEXT;
                    RETURN;
                END IF;
            END IF;
            -- the row changed between the read and the write: read it again
        END LOOP;
    EXCEPTION
        WHEN lock_not_available THEN
            -- another transaction is writing the key's row and has not committed: the
            -- key is not free, and its holder is not known until that transaction ends
            acquired := false;
            owner := NULL;
            token := NULL;
            expires_at := NULL;
            took_over := false;
            RETURN NEXT;
            RETURN;
    END;
END;
$$;

COMMENT ON FUNCTION pgcoord.lock_acquire(text, text, interval, interval) IS
'Take or renew the lease of p_key for p_owner; always one row. Non-blocking unless '
'p_wait > 0 (a try waits at most 1 s on another transaction writing the key: then '
'not granted, owner, token and expires_at NULL until it commits). Ranges: p_key, '
'p_owner 1 to 1024 bytes; p_ttl above 0 and at most 1 day; p_wait 0 to 1 hour. '
'Intervals with no months. Errors: 22004 NULL argument, 22023 an argument out of its '
'range (an infinite interval included).';
