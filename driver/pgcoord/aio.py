"""Async lease locks: the calls of `locks` over the caller's psycopg.AsyncConnection, with
the same names and arguments, and AsyncClient, the twin of `client.Client` over an
AsyncConnectionPool (same method names, the inbox calls of `inbox_aio` included; `lock()`
is an `async with` and its heartbeat is an asyncio task).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool, PoolClosed

from . import inbox_aio, sql
from .errors import LockNotAcquired, translated
from .inbox import (
    DEFAULT_CLAIM_LIMIT,
    DEFAULT_DEBOUNCE,
    DEFAULT_LEASE,
    DEFAULT_MAX_WAIT,
    DEFAULT_PRUNE_LIMIT,
    DEFAULT_RETRY_IN,
)
from .lease import LEASE_TTL, Lease, default_owner, heartbeat_interval
from .locks import CONNECTION_OPTIONS, DEFAULT_TTL, NO_WAIT
from .types import BufferStatus, Burst, Ingested, Lock, LockStatus

log = logging.getLogger(__name__)

AsyncPool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]


async def lock_acquire(
    conn: psycopg.AsyncConnection[Any],
    key: str,
    owner: str,
    ttl: timedelta = DEFAULT_TTL,
    wait: timedelta = NO_WAIT,
) -> Lock:
    """See `locks.lock_acquire`."""
    params = {"key": key, "owner": owner, "ttl": ttl, "wait": wait}
    with translated():
        async with conn.cursor(row_factory=class_row(Lock)) as cur:
            row = await (await cur.execute(sql.LOCK_ACQUIRE, params)).fetchone()
    assert row is not None  # the function always returns one row
    return row


async def lock_release(conn: psycopg.AsyncConnection[Any], key: str, owner: str) -> bool:
    """See `locks.lock_release`."""
    with translated():
        cur = await conn.execute(sql.LOCK_RELEASE, {"key": key, "owner": owner})
        row = await cur.fetchone()
    return bool(row and row[0])


async def lock_extend(
    conn: psycopg.AsyncConnection[Any], key: str, owner: str, ttl: timedelta = DEFAULT_TTL
) -> datetime | None:
    """See `locks.lock_extend`."""
    with translated():
        cur = await conn.execute(sql.LOCK_EXTEND, {"key": key, "owner": owner, "ttl": ttl})
        row = await cur.fetchone()
    return row[0] if row else None


async def lock_is_current(conn: psycopg.AsyncConnection[Any], key: str, token: int) -> bool:
    """See `locks.lock_is_current`."""
    with translated():
        cur = await conn.execute(sql.LOCK_IS_CURRENT, {"key": key, "token": token})
        row = await cur.fetchone()
    return bool(row and row[0])


async def lock_status(conn: psycopg.AsyncConnection[Any]) -> list[LockStatus]:
    """See `locks.lock_status`."""
    with translated():
        async with conn.cursor(row_factory=class_row(LockStatus)) as cur:
            return await (await cur.execute(sql.LOCK_STATUS)).fetchall()


class AsyncClient:
    """Lease locks and the inbox calls over an async connection pool; see `client.Client`.

    An async pool opens in an event loop: use `async with AsyncClient(...)` or
    `await client.open()` before the first call.
    """

    def __init__(
        self,
        conninfo: str | None = None,
        *,
        pool: AsyncPool | None = None,
        min_size: int = 1,
        max_size: int = 8,
    ) -> None:
        if pool is not None and conninfo is not None:
            raise TypeError("AsyncClient takes conninfo or pool, not both")
        self._owns_pool = pool is None
        if pool is None:
            pool = AsyncConnectionPool(
                conninfo or "",
                kwargs=dict(CONNECTION_OPTIONS),
                min_size=min_size,
                max_size=max_size,
                open=False,
                name="pgcoord",
            )
        self._pool = pool

    @property
    def pool(self) -> AsyncPool:
        """The pool the calls take their connections from."""
        return self._pool

    async def open(self) -> None:
        """Open the client's own pool (calling again is harmless)."""
        if self._owns_pool:
            await self._pool.open()

    async def close(self) -> None:
        """Close the client's own pool; a borrowed pool stays open."""
        if self._owns_pool:
            await self._pool.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def lock_acquire(
        self, key: str, owner: str, ttl: timedelta = DEFAULT_TTL, wait: timedelta = NO_WAIT
    ) -> Lock:
        """See `locks.lock_acquire`."""
        async with self._pool.connection() as conn:
            return await lock_acquire(conn, key, owner, ttl, wait)

    async def lock_release(self, key: str, owner: str) -> bool:
        """See `locks.lock_release`."""
        async with self._pool.connection() as conn:
            return await lock_release(conn, key, owner)

    async def lock_extend(
        self, key: str, owner: str, ttl: timedelta = DEFAULT_TTL
    ) -> datetime | None:
        """See `locks.lock_extend`."""
        async with self._pool.connection() as conn:
            return await lock_extend(conn, key, owner, ttl)

    async def lock_is_current(self, key: str, token: int) -> bool:
        """See `locks.lock_is_current`."""
        async with self._pool.connection() as conn:
            return await lock_is_current(conn, key, token)

    async def lock_status(self) -> list[LockStatus]:
        """See `locks.lock_status`."""
        async with self._pool.connection() as conn:
            return await lock_status(conn)

    async def message_ingest(
        self,
        provider: str,
        provider_message_id: str,
        conversation_key: str,
        body: str,
        payload: Mapping[str, Any] | None = None,
        debounce: timedelta = DEFAULT_DEBOUNCE,
        max_wait: timedelta = DEFAULT_MAX_WAIT,
    ) -> Ingested:
        """See `inbox.message_ingest`."""
        async with self._pool.connection() as conn:
            return await inbox_aio.message_ingest(
                conn,
                provider,
                provider_message_id,
                conversation_key,
                body,
                payload,
                debounce,
                max_wait,
            )

    async def buffer_claim(
        self, worker: str, limit: int = DEFAULT_CLAIM_LIMIT, lease: timedelta = DEFAULT_LEASE
    ) -> list[Burst]:
        """See `inbox.buffer_claim`."""
        async with self._pool.connection() as conn:
            return await inbox_aio.buffer_claim(conn, worker, limit, lease)

    async def buffer_complete(self, conversation_key: str, claim_token: int) -> bool:
        """See `inbox.buffer_complete`."""
        async with self._pool.connection() as conn:
            return await inbox_aio.buffer_complete(conn, conversation_key, claim_token)

    async def buffer_fail(
        self,
        conversation_key: str,
        claim_token: int,
        error: str,
        retry_in: timedelta = DEFAULT_RETRY_IN,
    ) -> bool:
        """See `inbox.buffer_fail`."""
        async with self._pool.connection() as conn:
            return await inbox_aio.buffer_fail(conn, conversation_key, claim_token, error, retry_in)

    async def buffer_extend(
        self, conversation_key: str, claim_token: int, lease: timedelta = DEFAULT_LEASE
    ) -> datetime | None:
        """See `inbox.buffer_extend`."""
        async with self._pool.connection() as conn:
            return await inbox_aio.buffer_extend(conn, conversation_key, claim_token, lease)

    async def message_prune(self, older_than: timedelta, limit: int = DEFAULT_PRUNE_LIMIT) -> int:
        """See `inbox.message_prune`."""
        async with self._pool.connection() as conn:
            return await inbox_aio.message_prune(conn, older_than, limit)

    async def buffer_release(self, conversation_key: str, claim_token: int) -> bool:
        """See `inbox.buffer_release`."""
        async with self._pool.connection() as conn:
            return await inbox_aio.buffer_release(conn, conversation_key, claim_token)

    async def buffer_revive(self, conversation_key: str) -> int:
        """See `inbox.buffer_revive`."""
        async with self._pool.connection() as conn:
            return await inbox_aio.buffer_revive(conn, conversation_key)

    async def buffer_due_in(self) -> timedelta | None:
        """See `inbox.buffer_due_in`."""
        async with self._pool.connection() as conn:
            return await inbox_aio.buffer_due_in(conn)

    async def buffer_status(self) -> list[BufferStatus]:
        """See `inbox.buffer_status`."""
        async with self._pool.connection() as conn:
            return await inbox_aio.buffer_status(conn)

    @asynccontextmanager
    async def lock(
        self,
        key: str,
        owner: str | None = None,
        *,
        ttl: timedelta = LEASE_TTL,
        wait: timedelta = NO_WAIT,
        heartbeat: timedelta | None = None,
    ) -> AsyncIterator[Lease]:
        """See `client.Client.lock`; the heartbeat is a task, cancelled on exit."""
        interval = heartbeat_interval(ttl, heartbeat)
        grant = await self.lock_acquire(key, default_owner() if owner is None else owner, ttl, wait)
        if not grant.acquired:
            raise LockNotAcquired(key, grant)
        lease = Lease(key, grant)
        beat = asyncio.create_task(
            self._heartbeat(lease, ttl, interval), name=f"pgcoord-heartbeat {key}"
        )
        try:
            yield lease
        finally:
            beat.cancel()
            await asyncio.wait([beat])
            lease.ended(await self.lock_release(key, lease.owner))

    async def _heartbeat(self, lease: Lease, ttl: timedelta, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                expires_at = await self.lock_extend(lease.key, lease.owner, ttl)
            except PoolClosed:
                log.warning("heartbeat of lock %r stopped: the client is closed", lease.key)
                return
            except Exception:
                log.warning("heartbeat of lock %r failed, retrying", lease.key, exc_info=True)
                continue
            if not lease.extended(expires_at):
                return
