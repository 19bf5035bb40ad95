"""Every SQL statement the driver sends. Each call is one statement, one round trip."""

from __future__ import annotations

from typing import LiteralString

LOCK_ACQUIRE: LiteralString = (
    "SELECT * FROM pgcoord.lock_acquire("
    "p_key => %(key)s, p_owner => %(owner)s, p_ttl => %(ttl)s, p_wait => %(wait)s)"
)
LOCK_RELEASE: LiteralString = "SELECT pgcoord.lock_release(p_key => %(key)s, p_owner => %(owner)s)"
LOCK_EXTEND: LiteralString = (
    "SELECT pgcoord.lock_extend(p_key => %(key)s, p_owner => %(owner)s, p_ttl => %(ttl)s)"
)
LOCK_IS_CURRENT: LiteralString = (
    "SELECT pgcoord.lock_is_current(p_key => %(key)s, p_token => %(token)s)"
)
LOCK_STATUS: LiteralString = (
    "SELECT key, owner, token, acquired_at, expires_at, expired"
    " FROM pgcoord.lock_status ORDER BY key"
)
# raises 3F000 / 42883 where pgcoord is not installed (callers treat that as "none")
VERSION: LiteralString = "SELECT pgcoord.version()"

# held by `pgcoord migrate` from reading the version until its last release file commits
INSTALL_LOCK: LiteralString = "SELECT pg_advisory_lock(%(key)s)"
INSTALL_UNLOCK: LiteralString = "SELECT pg_advisory_unlock(%(key)s)"
