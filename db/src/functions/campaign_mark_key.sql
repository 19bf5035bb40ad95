-- Internal. The advisory lock key, as its two integers, of the enqueue gate ('gate') and
-- of a campaign worker's marks ('idle', 'busy') for run p_run_id (of every run when
-- NULL): first key 1885823844, second 0 for the gate and 1 and 2 for the marks of every
-- run; first keys 1885823845 (idle) and 1885823846 (busy) with the run id's low 31 bits
-- for one run (two runs more than 2^31 ids apart share their marks). See campaign_idle.
CREATE OR REPLACE FUNCTION pgcoord.campaign_mark_key(p_mark text, p_run_id bigint)
RETURNS integer[]
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN CASE
        WHEN p_mark = 'gate' THEN ARRAY[1885823844, 0]
        WHEN p_run_id IS NULL THEN ARRAY[1885823844, CASE p_mark WHEN 'idle' THEN 1 ELSE 2 END]
        ELSE ARRAY[
            CASE p_mark WHEN 'idle' THEN 1885823845 ELSE 1885823846 END,
            (p_run_id & 2147483647)::integer
        ]
    END;
END;
$$;

COMMENT ON FUNCTION pgcoord.campaign_mark_key(text, bigint) IS
'Internal. The advisory lock key (two integers) of the enqueue gate or of a campaign '
'worker''s idle or busy mark, for run p_run_id or every run.';
