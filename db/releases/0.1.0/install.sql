-- pgcoord 0.1.0: install file, generated from db/src by scripts/freeze-release.
-- Apply with: psql -v ON_ERROR_STOP=1 -f install.sql "$DATABASE_URL"
-- One transaction: all or nothing. Safe to run again, and from several sessions at once.

BEGIN;

SELECT pg_advisory_xact_lock(7001517330252001);

DO $$
DECLARE
    v_installed text;
BEGIN
    IF to_regclass('pgcoord.schema_version') IS NOT NULL THEN
        SELECT v.version INTO v_installed
        FROM pgcoord.schema_version AS v
        ORDER BY v.installed_at DESC, v.version DESC
        LIMIT 1;
    END IF;
    IF v_installed <> '0.1.0' THEN
        RAISE EXCEPTION 'pgcoord % is installed here; this file installs 0.1.0 afresh', coalesce(v_installed, 'none')
            USING ERRCODE = '55000', HINT = 'Upgrade with pgcoord migrate or alembic upgrade head instead.';
    END IF;
END;
$$;

-- db/src/000_schema.sql
-- The pgcoord schema, and the role that is granted its API.
-- Nothing in the schema is granted to PUBLIC: a role calls pgcoord only once it is
-- a member of pgcoord_client (GRANT pgcoord_client TO app_role).

CREATE SCHEMA IF NOT EXISTS pgcoord;

REVOKE ALL ON SCHEMA pgcoord FROM PUBLIC;  -- noqa: CP02

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgcoord_client') THEN
        CREATE ROLE pgcoord_client NOLOGIN;
    END IF;
EXCEPTION
    -- another database of the same cluster created it at the same moment
    WHEN duplicate_object OR unique_violation THEN NULL;
END;
$$;

GRANT USAGE ON SCHEMA pgcoord TO pgcoord_client;

CREATE TABLE IF NOT EXISTS pgcoord.schema_version (
    version text PRIMARY KEY,
    installed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- db/src/010_locks.sql
-- Lease locks: one row per held key. Releasing deletes the row; every grant takes its
-- token from one sequence, so a later grant of a key always has a larger token.

CREATE TABLE IF NOT EXISTS pgcoord.locks (
    key text PRIMARY KEY,
    owner text NOT NULL,
    token bigint NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
) WITH (fillfactor = 80);

CREATE SEQUENCE IF NOT EXISTS pgcoord.lock_token AS bigint;

-- db/src/functions/lock_acquire.sql
-- Take or renew the lease of a key. A free or expired key is granted with a new token;
-- the live holder renews and keeps its token; anyone else is answered acquired = false
-- with the holder's owner, token and expiry. It never locks the row of a live lease
-- held by another owner. Renewals and take-overs are compare-and-swap on the token and
-- expiry read, so took_over is exact and a renewal is never overwritten. With
-- p_wait > 0 it tries again until the key frees or p_wait has passed, holding no row
-- lock while it waits.
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
AS $$
DECLARE
    v_now timestamptz;
    v_deadline timestamptz;
    v_pause float8 := 0.002::float8;
    v_holder text;
BEGIN
    IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
        PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
    END IF;
    IF coalesce(octet_length(p_owner), 0) NOT BETWEEN 1 AND 1024 THEN
        PERFORM pgcoord.raise_bad_argument('p_owner', p_owner, 'a text of 1 to 1024 bytes');
    END IF;
    IF NOT coalesce(p_ttl > interval '0', false) THEN
        PERFORM pgcoord.raise_bad_argument('p_ttl', p_ttl, 'a positive interval');
    END IF;
    IF NOT coalesce(p_wait >= interval '0', false) THEN
        PERFORM pgcoord.raise_bad_argument('p_wait', p_wait, 'a non-negative interval');
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
END;
$$;

COMMENT ON FUNCTION pgcoord.lock_acquire(text, text, interval, interval) IS
'Take or renew the lease of p_key for p_owner; always one row. Non-blocking unless '
'p_wait > 0. Errors: 22004 NULL argument, 22023 empty or over-long key/owner, non-positive p_ttl, '
'negative p_wait.';

-- db/src/functions/lock_extend.sql
-- Heartbeat: push the expiry of a live lease held by p_owner to now + p_ttl.
CREATE OR REPLACE FUNCTION pgcoord.lock_extend(
    p_key text, p_owner text, p_ttl interval DEFAULT interval '2 minutes'
)
RETURNS timestamptz
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_expires timestamptz;
BEGIN
    IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
        PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
    END IF;
    IF coalesce(octet_length(p_owner), 0) NOT BETWEEN 1 AND 1024 THEN
        PERFORM pgcoord.raise_bad_argument('p_owner', p_owner, 'a text of 1 to 1024 bytes');
    END IF;
    IF NOT coalesce(p_ttl > interval '0', false) THEN
        PERFORM pgcoord.raise_bad_argument('p_ttl', p_ttl, 'a positive interval');
    END IF;

    UPDATE pgcoord.locks AS l
    SET expires_at = v_now + p_ttl
    WHERE l.key = p_key AND l.owner = p_owner AND l.expires_at > v_now
    RETURNING l.expires_at INTO v_expires;
    RETURN v_expires;
END;
$$;

COMMENT ON FUNCTION pgcoord.lock_extend(text, text, interval) IS
'New expiry when p_owner still holds a live lease of p_key; NULL when it has lost it. '
'Errors: 22004 NULL argument, 22023 empty or over-long key/owner, non-positive p_ttl.';

-- db/src/functions/lock_is_current.sql
-- Fencing check: is p_token the live grant of p_key right now (server clock)?
CREATE OR REPLACE FUNCTION pgcoord.lock_is_current(p_key text, p_token bigint)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
        PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
    END IF;
    IF p_token IS NULL THEN
        PERFORM pgcoord.raise_bad_argument('p_token', p_token, 'given');
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
'Errors: 22004 NULL argument, 22023 empty or over-long key.';

-- db/src/functions/lock_release.sql
-- Free a key, but only for the owner that holds it (live, or expired and not yet taken).
CREATE OR REPLACE FUNCTION pgcoord.lock_release(p_key text, p_owner text)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce(octet_length(p_key), 0) NOT BETWEEN 1 AND 1024 THEN
        PERFORM pgcoord.raise_bad_argument('p_key', p_key, 'a text of 1 to 1024 bytes');
    END IF;
    IF coalesce(octet_length(p_owner), 0) NOT BETWEEN 1 AND 1024 THEN
        PERFORM pgcoord.raise_bad_argument('p_owner', p_owner, 'a text of 1 to 1024 bytes');
    END IF;

    DELETE FROM pgcoord.locks AS l
    WHERE l.key = p_key AND l.owner = p_owner;
    RETURN FOUND;
END;
$$;

COMMENT ON FUNCTION pgcoord.lock_release(text, text) IS
'True when p_owner held p_key and it is now free; false otherwise, changing nothing. '
'Errors: 22004 NULL argument, 22023 empty or over-long key/owner.';

-- db/src/functions/raise_bad_argument.sql
-- The one way the API reports a bad argument. Callers test the rule inline (a call on
-- the hot path costs more than the test) and call this only when it fails.
CREATE OR REPLACE FUNCTION pgcoord.raise_bad_argument(
    p_name text, p_value anyelement, p_requirement text
)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', p_name
            USING ERRCODE = '22004';
    END IF;
    RAISE EXCEPTION '% must be %, got %', p_name, p_requirement, left(p_value::text, 80)
        USING ERRCODE = '22023';
END;
$$;

COMMENT ON FUNCTION pgcoord.raise_bad_argument(text, anyelement, text) IS
'Internal. Always raises: 22004 when p_value is NULL, else 22023; the message names the '
'argument p_name and what it must be.';

-- db/src/functions/version.sql
-- The installed pgcoord version.
CREATE OR REPLACE FUNCTION pgcoord.version()
RETURNS text
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT v.version
    FROM pgcoord.schema_version AS v
    ORDER BY v.installed_at DESC, v.version DESC
    LIMIT 1;
END;

COMMENT ON FUNCTION pgcoord.version() IS
'The pgcoord version installed in this database (NULL before the first install). '
'Errors: none.';

-- db/src/views/lock_status.sql
-- One row per held key; expired leases stay listed until taken over or released.
CREATE OR REPLACE VIEW pgcoord.lock_status AS
SELECT
    l.key,
    l.owner,
    l.token,
    l.acquired_at,
    l.expires_at,
    l.expires_at <= clock_timestamp() AS expired
FROM pgcoord.locks AS l;

COMMENT ON VIEW pgcoord.lock_status IS
'Held lease locks: key, owner, token, acquired_at, expires_at, expired.';

-- db/src/grants.sql
-- Only the documented API is granted, and only to pgcoord_client. The API functions are
-- SECURITY DEFINER, so callers need no privileges on the tables behind them.

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgcoord FROM PUBLIC;  -- noqa: CP02
REVOKE ALL ON ALL TABLES IN SCHEMA pgcoord FROM PUBLIC;  -- noqa: CP02
REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgcoord FROM PUBLIC;  -- noqa: CP02

GRANT EXECUTE ON FUNCTION pgcoord.lock_acquire(text, text, interval, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.lock_release(text, text) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.lock_extend(text, text, interval) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.lock_is_current(text, bigint) TO pgcoord_client;
GRANT EXECUTE ON FUNCTION pgcoord.version() TO pgcoord_client;

GRANT SELECT ON pgcoord.lock_status TO pgcoord_client;

INSERT INTO pgcoord.schema_version (version) VALUES ('0.1.0')
ON CONFLICT (version) DO NOTHING;

COMMIT;
