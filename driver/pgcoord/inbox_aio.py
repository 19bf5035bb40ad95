"""Async twins of `inbox`: the same calls, names and arguments over the caller's
psycopg.AsyncConnection."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import class_row

from . import sql
from .errors import translated
from .inbox import (
    DEFAULT_CLAIM_LIMIT,
    DEFAULT_DEBOUNCE,
    DEFAULT_LEASE,
    DEFAULT_MAX_WAIT,
    DEFAULT_PRUNE_LIMIT,
    DEFAULT_RETRY_IN,
    ingest_params,
)
from .types import BufferStatus, Burst, Ingested


async def message_ingest(
    conn: psycopg.AsyncConnection[Any],
    provider: str,
    provider_message_id: str,
    conversation_key: str,
    body: str,
    payload: Mapping[str, Any] | None = None,
    debounce: timedelta = DEFAULT_DEBOUNCE,
    max_wait: timedelta = DEFAULT_MAX_WAIT,
) -> Ingested:
    """See `inbox.message_ingest`."""
    params = ingest_params(
        provider, provider_message_id, conversation_key, body, payload, debounce, max_wait
    )
    with translated():
        async with conn.cursor(row_factory=class_row(Ingested)) as cur:
            row = await (await cur.execute(sql.MESSAGE_INGEST, params)).fetchone()
    assert row is not None  # the function always returns one row
    return row


async def message_prune(
    conn: psycopg.AsyncConnection[Any], older_than: timedelta, limit: int = DEFAULT_PRUNE_LIMIT
) -> int:
    """See `inbox.message_prune`."""
    params = {"older_than": older_than, "limit": limit}
    with translated():
        row = await (await conn.execute(sql.MESSAGE_PRUNE, params)).fetchone()
    return int(row[0]) if row else 0


async def buffer_claim(
    conn: psycopg.AsyncConnection[Any],
    worker: str,
    limit: int = DEFAULT_CLAIM_LIMIT,
    lease: timedelta = DEFAULT_LEASE,
) -> list[Burst]:
    """See `inbox.buffer_claim`."""
    params = {"worker": worker, "limit": limit, "lease": lease}
    with translated():
        async with conn.cursor(row_factory=class_row(Burst)) as cur:
            return await (await cur.execute(sql.BUFFER_CLAIM, params)).fetchall()


async def buffer_complete(
    conn: psycopg.AsyncConnection[Any], conversation_key: str, claim_token: int
) -> bool:
    """See `inbox.buffer_complete`."""
    params = {"conversation_key": conversation_key, "claim_token": claim_token}
    with translated():
        row = await (await conn.execute(sql.BUFFER_COMPLETE, params)).fetchone()
    return bool(row and row[0])


async def buffer_fail(
    conn: psycopg.AsyncConnection[Any],
    conversation_key: str,
    claim_token: int,
    error: str,
    retry_in: timedelta = DEFAULT_RETRY_IN,
) -> bool:
    """See `inbox.buffer_fail`."""
    params = {
        "conversation_key": conversation_key,
        "claim_token": claim_token,
        "error": error,
        "retry_in": retry_in,
    }
    with translated():
        row = await (await conn.execute(sql.BUFFER_FAIL, params)).fetchone()
    return bool(row and row[0])


async def buffer_extend(
    conn: psycopg.AsyncConnection[Any],
    conversation_key: str,
    claim_token: int,
    lease: timedelta = DEFAULT_LEASE,
) -> datetime | None:
    """See `inbox.buffer_extend`."""
    params = {"conversation_key": conversation_key, "claim_token": claim_token, "lease": lease}
    with translated():
        row = await (await conn.execute(sql.BUFFER_EXTEND, params)).fetchone()
    return row[0] if row else None


async def buffer_release(
    conn: psycopg.AsyncConnection[Any], conversation_key: str, claim_token: int
) -> bool:
    """See `inbox.buffer_release`."""
    params = {"conversation_key": conversation_key, "claim_token": claim_token}
    with translated():
        row = await (await conn.execute(sql.BUFFER_RELEASE, params)).fetchone()
    return bool(row and row[0])


async def buffer_revive(conn: psycopg.AsyncConnection[Any], conversation_key: str) -> int:
    """See `inbox.buffer_revive`."""
    with translated():
        cur = await conn.execute(sql.BUFFER_REVIVE, {"conversation_key": conversation_key})
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def buffer_due_in(conn: psycopg.AsyncConnection[Any]) -> timedelta | None:
    """See `inbox.buffer_due_in`."""
    with translated():
        row = await (await conn.execute(sql.BUFFER_DUE_IN)).fetchone()
    return row[0] if row else None


async def buffer_status(conn: psycopg.AsyncConnection[Any]) -> list[BufferStatus]:
    """See `inbox.buffer_status`."""
    with translated():
        async with conn.cursor(row_factory=class_row(BufferStatus)) as cur:
            return await (await cur.execute(sql.BUFFER_STATUS)).fetchall()
