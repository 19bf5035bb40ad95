-- The pgcoord schema, and the role that is granted its API.
-- Nothing in the schema is granted to PUBLIC: a role calls pgcoord only once it is
-- a member of pgcoord_client (GRANT pgcoord_client TO app_role).
-- The installing role needs CREATE on the database; it creates pgcoord_client only when
-- the role is missing, so a role that may not create roles installs once a role that
-- may has created pgcoord_client (docs/roles.md).

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
    WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'the role pgcoord_client is missing, and % may not create roles',
        current_user
            USING ERRCODE = '42501',
            HINT = 'Create it once, as a role that may: CREATE ROLE pgcoord_client NOLOGIN;'
            || ' then install again.';
END;
$$;

-- Only its owner may create objects in the schema: a role that could would be able to put
-- an overload of one of pgcoord's internal functions ahead of pgcoord's own, and have its
-- code run as the owner. Every install and upgrade revokes CREATE from any other role
-- (given by the installing role's default privileges, or by a GRANT since).
DO $$
DECLARE
    v_grantee oid;
BEGIN
    FOR v_grantee IN
        SELECT a.grantee
        FROM pg_catalog.pg_namespace AS n
        CROSS JOIN LATERAL pg_catalog.aclexplode(n.nspacl) AS a
        WHERE
            n.nspname = 'pgcoord'
            AND a.privilege_type = 'CREATE'
            AND a.grantee NOT IN (0, n.nspowner)
    LOOP
        EXECUTE format('REVOKE CREATE ON SCHEMA pgcoord FROM %s CASCADE', v_grantee::regrole);
    END LOOP;
END;
$$;

GRANT USAGE ON SCHEMA pgcoord TO pgcoord_client;

CREATE TABLE IF NOT EXISTS pgcoord.schema_version (
    version text PRIMARY KEY,
    installed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
