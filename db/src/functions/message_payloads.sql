-- The stored payloads (what the provider sent besides the body: the sender's name, a
-- media URL...) of the messages p_message_ids, one row per id that has a stored message,
-- in the order of the ids given. A worker that wants them asks once per claim, for the
-- messages of all its batches. Not in the contract.
CREATE OR REPLACE FUNCTION pgcoord.message_payloads(p_message_ids bigint[])
RETURNS TABLE (message_id bigint, payload jsonb)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the inbox through its indexes, whatever it held when the plan was made (020_inbox.sql)
SET enable_seqscan = off
AS $$
BEGIN
    IF (cardinality(p_message_ids) <= 10000) IS NOT TRUE THEN
        PERFORM pgcoord.raise_bad_argument(
            'p_message_ids', p_message_ids, 'an array of at most 10000 message ids'
        );
    END IF;
    RETURN QUERY
    SELECT m.id, m.payload
    FROM unnest(p_message_ids) WITH ORDINALITY AS given (id, position)
    INNER JOIN pgcoord.messages AS m ON given.id = m.id
    -- the given ids, looked up by key, whatever the plan estimated the table to hold
    WHERE m.id = any(p_message_ids)
    ORDER BY given.position;
END;
$$;

COMMENT ON FUNCTION pgcoord.message_payloads(bigint[]) IS
'The payloads of the messages p_message_ids that are stored, in the order given (an id '
'given twice answers twice; an unknown or NULL id answers nothing). Ranges: '
'p_message_ids at most 10000 elements. Errors: 22004 NULL argument, 22023 more than '
'10000 ids.';
