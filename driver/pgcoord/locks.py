"""Lease locks over the caller's connection: one statement, one round trip per call.

The calls run in the connection's current transaction, so a grant and the caller's own
writes can commit together; on an autocommit connection each call commits by itself.
psycopg prepares a statement on its sixth use, which costs one extra round trip once;
connect with `prepare_threshold=None` behind a transaction-mode pooler (PgBouncer,
Supavisor), as the clients do.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import class_row

from . import sql
from .errors import translated
from .types import Lock, LockStatus

# Options of the clients' pooled connections: each call commits by itself, and no
# statement is prepared on the server (one round trip always; safe behind poolers).
CONNECTION_OPTIONS: dict[str, Any] = {"autocommit": True, "prepare_threshold": None}

DEFAULT_TTL = timedelta(minutes=2)
NO_WAIT = timedelta(0)


def lock_acquire(
    conn: psycopg.Connection[Any],
    key: str,
    owner: str,
    ttl: timedelta = DEFAULT_TTL,
    wait: timedelta = NO_WAIT,
) -> Lock:
    """Take or renew the lease of `key`; `acquired` is False when another owner holds it,
    and then the other fields describe that holder."""
    params = {"key": key, "owner": owner, "ttl": ttl, "wait": wait}
    with translated(), conn.cursor(row_factory=class_row(Lock)) as cur:
        row = cur.execute(sql.LOCK_ACQUIRE, params).fetchone()
    assert row is not None  # the function always returns one row
    return row


def lock_release(conn: psycopg.Connection[Any], key: str, owner: str) -> bool:
    """True when `owner` held `key` and it is now free."""
    with translated():
        row = conn.execute(sql.LOCK_RELEASE, {"key": key, "owner": owner}).fetchone()
    return bool(row and row[0])


def lock_extend(
    conn: psycopg.Connection[Any], key: str, owner: str, ttl: timedelta = DEFAULT_TTL
) -> datetime | None:
    """The new expiry, or None when `owner` no longer holds a live lease of `key`."""
    with translated():
        row = conn.execute(sql.LOCK_EXTEND, {"key": key, "owner": owner, "ttl": ttl}).fetchone()
    return row[0] if row else None


def lock_is_current(conn: psycopg.Connection[Any], key: str, token: int) -> bool:
    """True only while `token` is the live grant of `key`."""
    with translated():
        row = conn.execute(sql.LOCK_IS_CURRENT, {"key": key, "token": token}).fetchone()
    return bool(row and row[0])


def lock_status(conn: psycopg.Connection[Any]) -> list[LockStatus]:
    """Every held key, live or expired, by key."""
    with translated(), conn.cursor(row_factory=class_row(LockStatus)) as cur:
        return cur.execute(sql.LOCK_STATUS).fetchall()
