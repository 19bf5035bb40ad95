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
