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
