-- The ceiling: the same token bucket as one plain UPDATE of the one row of
-- bench_rates.buckets, with the same arithmetic (refill at :per_second since tokens_at,
-- up to :burst; one token per call): granted when it updates the row (returning what is
-- left), refused when it matches nothing, which neither writes nor locks the row. It
-- leaves out what rate_acquire adds: the argument checks, a key's first call creating
-- its row, pauses, and how long a refused caller should wait.
UPDATE bench_rates.buckets AS b
SET tokens = least(
        :burst::double precision,
        b.tokens + :per_second::double precision
        * greatest(extract(EPOCH FROM clock_timestamp() - b.tokens_at), 0)::double precision
    ) - 1,
    tokens_at = greatest(b.tokens_at, clock_timestamp())
WHERE
    b.key = 'hot'
    AND least(
        :burst::double precision,
        b.tokens + :per_second::double precision
        * greatest(extract(EPOCH FROM clock_timestamp() - b.tokens_at), 0)::double precision
    ) >= 1
RETURNING b.tokens;
