# DO NOT CHANGE! Generated from locks_async.py by scripts/async-to-sync;
# change the original instead.
"""Lease locks over the caller's psycopg.Connection: one statement, one round trip per
call, never prepared on the server.

The calls run in the connection's current transaction, so a grant and the caller's own
writes can commit together; on an autocommit connection each call commits by itself.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg

from . import query, sql
from .config import LOCK_TTL, LOCK_WAIT
from .types import Lock, LockStatus


def lock_acquire(
    conn: psycopg.Connection[Any],
    key: str,
    owner: str,
    ttl: timedelta = LOCK_TTL,
    wait: timedelta = LOCK_WAIT,
) -> Lock:
    """Take or renew the lease of `key` for `ttl`, waiting up to `wait` (on the server) while
    another owner holds it. `acquired` is False when another owner still holds it, and then
    the other fields describe that holder; `token` is the grant's fencing token."""
    params = {"key": key, "owner": owner, "ttl": ttl, "wait": wait}
    return query.one(conn, Lock, sql.LOCK_ACQUIRE, params)


def lock_release(conn: psycopg.Connection[Any], key: str, owner: str) -> bool:
    """True when `owner` held `key` and it is now free."""
    return bool(query.value(conn, sql.LOCK_RELEASE, {"key": key, "owner": owner}))


def lock_extend(
    conn: psycopg.Connection[Any], key: str, owner: str, ttl: timedelta = LOCK_TTL
) -> datetime | None:
    """The new expiry, `ttl` from now, or None when `owner` no longer holds a live lease of
    `key`."""
    params = {"key": key, "owner": owner, "ttl": ttl}
    expires_at: datetime | None = query.value(conn, sql.LOCK_EXTEND, params)
    return expires_at


def _lease_extend(
    conn: psycopg.Connection[Any], key: str, token: int, ttl: timedelta
) -> datetime | None:
    """A Lease's heartbeat: `lock_extend` of the grant `token` (lock_extend_token); None,
    and nothing changed, when it is not the key's live grant."""
    params = {"key": key, "token": token, "ttl": ttl}
    expires_at: datetime | None = query.value(conn, sql.LEASE_EXTEND, params)
    return expires_at


def _lease_release(conn: psycopg.Connection[Any], key: str, token: int) -> bool:
    """A Lease's exit: `lock_release` of the grant `token` (lock_release_token), live or
    run out but not taken over; False, and nothing changed, otherwise."""
    params = {"key": key, "token": token}
    return bool(query.value(conn, sql.LEASE_RELEASE, params))


def lock_is_current(conn: psycopg.Connection[Any], key: str, token: int) -> bool:
    """True only while `token` is the live grant of `key`."""
    params = {"key": key, "token": token}
    return bool(query.value(conn, sql.LOCK_IS_CURRENT, params))


def lock_status(conn: psycopg.Connection[Any]) -> list[LockStatus]:
    """Every held key, live or expired, by key."""
    return query.rows(conn, LockStatus, sql.LOCK_STATUS)
