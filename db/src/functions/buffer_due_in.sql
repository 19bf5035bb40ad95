-- How long until buffer_claim may find work: zero when a buffer is due now, NULL when
-- nothing is buffered. Workers sleep this long (woken early by pgcoord_buffers).
CREATE OR REPLACE FUNCTION pgcoord.buffer_due_in()
RETURNS interval
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- greatest() ignores NULL: nothing buffered must stay NULL, not zero
    RETURN (
        SELECT CASE
            WHEN min(b.due_at) IS NOT NULL
                THEN greatest(min(b.due_at) - clock_timestamp(), interval '0')
        END
        FROM pgcoord.buffers AS b
        WHERE NOT b.dead
    );
END;
$$;

COMMENT ON FUNCTION pgcoord.buffer_due_in() IS
'Time until the next buffer is due (zero when one is due now, NULL when none is '
'buffered). Errors: none.';
