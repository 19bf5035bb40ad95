-- One row per rate key: the tokens in its bucket now (refilled at the rate of its last
-- grant up to that grant's burst; NULL while no grant was made, a full bucket), that
-- rate and burst, the end of the pause in force (NULL when none), and the last write.
-- The columns are in the order pgcoord status shows them.
CREATE OR REPLACE VIEW pgcoord.rate_status AS
WITH clock AS (SELECT clock_timestamp() AS now)

SELECT  -- noqa: ST06
    r.key,
    least(
        r.burst,
        r.tokens + r.per_second * greatest(extract(EPOCH FROM c.now - r.tokens_at), 0)::float8
    ) AS tokens,
    r.per_second,
    r.burst,
    CASE WHEN r.paused_until > c.now THEN r.paused_until END AS paused_until,
    r.updated_at
FROM pgcoord.rates AS r
CROSS JOIN clock AS c;

COMMENT ON VIEW pgcoord.rate_status IS
'Rate limit keys: key, tokens (as of now), per_second, burst, paused_until (the pause in '
'force), updated_at.';
