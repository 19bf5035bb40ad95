"""Shared rate limits over the caller's psycopg.AsyncConnection: one token bucket per key
in the database, so every process of a fleet spends from the same provider budget. One
statement, one round trip per call, never prepared on the server."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg

from . import query_async, sql
from .config import RATE_COST
from .types import RateStatus


async def rate_acquire(
    conn: psycopg.AsyncConnection[Any],
    key: str,
    per_second: float,
    burst: int,
    cost: int = RATE_COST,
) -> timedelta:
    """Spend `cost` tokens of the bucket of `key` (refilled at `per_second`, holding at
    most `burst`): zero when granted, else how long to wait before asking again (nothing
    spent; while the key is paused, the rest of the pause)."""
    params = {"key": key, "per_second": per_second, "burst": burst, "cost": cost}
    wait: timedelta = await query_async.value(conn, sql.RATE_ACQUIRE, params)
    return wait


async def rate_pause(conn: psycopg.AsyncConnection[Any], key: str, pause: timedelta) -> datetime:
    """Tell every caller of `key` to wait `pause` from now (the provider answered 429 with
    Retry-After); a pause already in force that ends later is kept. Returns its end."""
    until: datetime = await query_async.value(conn, sql.RATE_PAUSE, {"key": key, "pause": pause})
    return until


async def rate_status(conn: psycopg.AsyncConnection[Any]) -> list[RateStatus]:
    """Every rate key's bucket and pause, by key."""
    return await query_async.rows(conn, RateStatus, sql.RATE_STATUS)
