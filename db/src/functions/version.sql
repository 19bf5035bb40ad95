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
