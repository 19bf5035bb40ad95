-- One row per held key; expired leases stay listed until taken over or released.
CREATE OR REPLACE VIEW pgcoord.lock_status AS
SELECT
    l.key,
    l.owner,
    l.token,
    l.acquired_at,
    l.expires_at,
    l.expires_at <= clock_timestamp() AS expired
FROM pgcoord.locks AS l;

COMMENT ON VIEW pgcoord.lock_status IS
'Held lease locks: key, owner, token, acquired_at, expires_at, expired.';
