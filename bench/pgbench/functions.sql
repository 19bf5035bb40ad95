-- (a) one lease pair through the SQL functions: one statement, one transaction each.
\set k random(1, 1000000)
SELECT * FROM pgcoord.lock_acquire(
    p_key => 'k' || :k, p_owner => 'o' || :client_id,
    p_ttl => interval '2 minutes', p_wait => interval '0 seconds'
);
SELECT pgcoord.lock_release(p_key => 'k' || :k, p_owner => 'o' || :client_id);
