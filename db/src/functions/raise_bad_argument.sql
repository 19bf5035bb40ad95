-- The one way the API reports a bad argument. Callers test the rule inline (a call on
-- the hot path costs more than the test) and call this only when it fails. The value is
-- shown in the message: a text in double quotes (so an empty one shows as ""), and a
-- value longer than 80 characters cut there and marked with ... after it.
-- Besides its range, an interval argument has its days within 36500 either way (and, where
-- months are allowed, its years within 100): the server adds an interval to the clock
-- part by part, and compares intervals by their sum, so '-100000000 days 2400000001:00:00'
-- compares as 1 hour yet its days alone would reach a date the server cannot represent.
CREATE OR REPLACE FUNCTION pgcoord.raise_bad_argument(
    p_name text, p_value anyelement, p_requirement text
)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_text text;
    v_shown text;
BEGIN
    IF p_value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', p_name
            USING ERRCODE = '22004';
    END IF;
    v_text := p_value::text;
    v_shown := left(v_text, 80);
    IF pg_typeof(p_value) IN ('text'::regtype, 'character varying'::regtype) THEN
        v_shown := '"' || v_shown || '"';
    END IF;
    IF length(v_text) > 80 THEN
        v_shown := v_shown || '...';
    END IF;
    RAISE EXCEPTION '% must be %, got %', p_name, p_requirement, v_shown
        USING ERRCODE = '22023';
END;
$$;

COMMENT ON FUNCTION pgcoord.raise_bad_argument(text, anyelement, text) IS
'Internal. Always raises: 22004 when p_value is NULL, else 22023; the message names the '
'argument p_name, what it must be, and the value (a text in double quotes, cut after 80 '
'characters and then marked with ...).';
