-- Retention: delete up to p_limit answered ('done') messages received more than
-- p_older_than ago, oldest first, and return how many. Run it from a scheduled job until
-- it returns less than p_limit. Waiting, claimed and parked (dead) messages stay.
-- A provider's retry of a pruned message is stored as a new message, so keep messages
-- longer than the provider retries (days, not minutes).
-- Ids grow with received_at, so a bisection over the primary key finds where the old
-- messages end, and the delete reads only what it removes.
CREATE OR REPLACE FUNCTION pgcoord.message_prune(
    p_older_than interval, p_limit integer DEFAULT 10000
)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the inbox through its indexes, whatever it held when the plan was made (020_inbox.sql)
SET enable_seqscan = off
AS $$
DECLARE
    v_cutoff timestamptz;
    v_low bigint;
    v_high bigint;
    v_mid bigint;
    v_id bigint;
    v_at timestamptz;
    v_count integer;
BEGIN
    PERFORM pgcoord.check_prune_arguments(p_older_than, p_limit);
    v_cutoff := clock_timestamp() - p_older_than;

    SELECT min(m.id), max(m.id) + 1 INTO v_low, v_high FROM pgcoord.messages AS m;
    IF v_low IS NULL THEN
        RETURN 0;
    END IF;
    -- the old messages have ids below v_high; v_low only grows past old ones
    WHILE v_low < v_high LOOP
        v_mid := v_low + (v_high - v_low) / 2;
        SELECT m.id, m.received_at INTO v_id, v_at
        FROM pgcoord.messages AS m
        WHERE m.id >= v_mid
        ORDER BY m.id
        LIMIT 1;
        IF NOT FOUND OR v_at >= v_cutoff THEN
            v_high := v_mid;
        ELSE
            v_low := v_id + 1;
        END IF;
    END LOOP;

    DELETE FROM pgcoord.messages AS m
    WHERE m.id IN (
        SELECT o.id
        FROM pgcoord.messages AS o
        WHERE o.id < v_high AND o.state = 'done' AND o.received_at < v_cutoff
        ORDER BY o.id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    );
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

COMMENT ON FUNCTION pgcoord.message_prune(interval, integer) IS
'Delete up to p_limit done messages received more than p_older_than ago, oldest first; '
'returns how many. Ranges: p_older_than above 0 and at most 100 years; p_limit 1 to '
'1000000. Errors: 22004 NULL argument, 22023 an argument out of its range (an infinite '
'interval included).';
