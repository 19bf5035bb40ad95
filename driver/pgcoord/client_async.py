"""AsyncClient: every call of `locks_async`, `inbox_async`, `campaigns_async` and
`rates_async` over a pool of autocommit connections, one connection and one round trip
per call, and `lock()`, a lease held for a block and kept alive by a heartbeat
(`lease.heartbeat_task`) on a lease pool of its own, which callers never use.

Each method is its call with the connection taken from the pool (`pooled`): same name,
arguments, defaults, result and docstring, so a new call costs one line here.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import psycopg

from . import campaigns_async, config, inbox_async, locks_async, rates_async
from .config import CLIENT_LOCK_TTL, LOCK_WAIT, AsyncPool
from .errors import LockNotAcquired
from .lease import Lease, default_owner, has_room, heartbeat_interval, heartbeat_task

P = ParamSpec("P")
R = TypeVar("R")


def pooled(
    call: Callable[Concatenate[psycopg.AsyncConnection[Any], P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, R]]:
    """The method of AsyncClient that runs `call` on a connection of the client's pool: the
    call's signature without its connection, its annotations and its docstring."""

    @functools.wraps(call)
    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            async with self.pool.connection() as conn:
                return await call(conn, *args, **kwargs)
        except psycopg.OperationalError:
            if conn is not None and conn.closed:
                await swept(self.pool)
            raise

    signature = inspect.signature(call)
    connection, *parameters = signature.parameters.values()
    self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[self_parameter, *parameters]
    )
    method.__annotations__ = {
        name: hint for name, hint in call.__annotations__.items() if name != connection.name
    }
    return method


async def swept(pool: AsyncPool) -> None:
    """A call found its connection dead (killed connections, a restarted server): check
    the pool's idle ones now, so that the next calls do not meet the others one by one."""
    await pool.check()


async def released(pool: AsyncPool, lease: Lease) -> bool:
    """The `lock_release` of a block's exit, of the lease's own grant only. On a dead
    connection, once more after the pool is swept: a release is safe to repeat (one that
    did free the key answers False the second time, and the lease then says lost, never
    held)."""
    conn: psycopg.AsyncConnection[Any] | None = None
    try:
        async with pool.connection() as conn:
            return await locks_async._lease_release(conn, lease.key, lease.token)
    except psycopg.OperationalError:
        if conn is None or not conn.closed:
            raise
    await swept(pool)
    async with pool.connection() as conn:
        return await locks_async._lease_release(conn, lease.key, lease.token)


class AsyncClient:
    """Lease locks, the inbox, the campaign queue and rate limits over a connection pool.

    With `conninfo` the client opens its own pool (`config.async_pool`; an empty conninfo
    uses the libpq environment) and closes it in `close()`. Its connections are
    autocommit, so every call commits by itself in one round trip; no call is ever
    prepared on the server, so they work through transaction-mode poolers. With `pool` it
    borrows the caller's pool and leaves it open; give that pool
    `kwargs=config.CONNECTION_OPTIONS`, or calls also cost the pool's COMMIT.

    The heartbeats of `lock()` take their connections from a lease pool of the client
    (`config.LEASE_POOL_SIZE` connections, opened at the first lease), so callers that
    hold every connection of the pool, for instance `lock(wait=...)` callers waiting on
    the server, cannot starve them. It connects where the pool does, or to
    `heartbeat_conninfo`: behind a transaction-mode pooler, give it a direct conninfo, as
    the heartbeats (and the releases) through the pooler queue behind the pooler's busy
    server connections; the releases of `lock()` blocks then go that way too.

    Use the client as a context manager, or call `open()` before the first call (a sync
    client's own pool is open from the start; an async pool opens in an event loop).
    """

    def __init__(
        self,
        conninfo: str | None = None,
        *,
        pool: AsyncPool | None = None,
        min_size: int = 1,
        max_size: int = 8,
        heartbeat_conninfo: str | None = None,
    ) -> None:
        if pool is not None and conninfo is not None:
            raise TypeError(f"{type(self).__name__} takes conninfo or pool, not both")
        self._owns_pool = pool is None
        if pool is None:
            pool = config.async_pool(conninfo or "", min_size=min_size, max_size=max_size)
        self._pool = pool
        self._heartbeat_conninfo = heartbeat_conninfo
        self._leases: AsyncPool | None = None
        # the leases of this client's lock() blocks under way, by (key, owner)
        self._held: dict[tuple[str, str], Lease] = {}
        self._leases_made = threading.Lock()

    @property
    def pool(self) -> AsyncPool:
        """The pool the calls take their connections from."""
        return self._pool

    async def open(self) -> None:
        """Open the client's own pool (calling again is harmless)."""
        if self._owns_pool:
            await self._pool.open()

    async def close(self) -> None:
        """Close the client's own pool and its lease pool; a borrowed pool stays open."""
        if self._owns_pool:
            await self._pool.close()
        with self._leases_made:
            leases, self._leases = self._leases, None
        if leases is not None:
            await leases.close()

    async def _lease_pool(self) -> AsyncPool:
        """The pool of the heartbeats (and of a block's release while the callers hold
        every connection of `pool`), opened at its first use."""
        with self._leases_made:
            if self._leases is None:
                self._leases = config.async_lease_pool(self._heartbeat_conninfo, self._pool)
            leases = self._leases
        await leases.open()
        return leases

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

    lock_acquire = pooled(locks_async.lock_acquire)
    lock_release = pooled(locks_async.lock_release)
    lock_extend = pooled(locks_async.lock_extend)
    lock_is_current = pooled(locks_async.lock_is_current)
    lock_status = pooled(locks_async.lock_status)

    message_ingest = pooled(inbox_async.message_ingest)
    message_prune = pooled(inbox_async.message_prune)
    message_payloads = pooled(inbox_async.message_payloads)
    buffer_claim = pooled(inbox_async.buffer_claim)
    buffer_claim_with_payloads = pooled(inbox_async.buffer_claim_with_payloads)
    buffer_complete = pooled(inbox_async.buffer_complete)
    buffer_fail = pooled(inbox_async.buffer_fail)
    buffer_fail_for_good = pooled(inbox_async.buffer_fail_for_good)
    buffer_extend = pooled(inbox_async.buffer_extend)
    buffer_release = pooled(inbox_async.buffer_release)
    buffer_revive = pooled(inbox_async.buffer_revive)
    buffer_due_in = pooled(inbox_async.buffer_due_in)
    buffer_status = pooled(inbox_async.buffer_status)

    campaign_create = pooled(campaigns_async.campaign_create)
    campaign_set_status = pooled(campaigns_async.campaign_set_status)
    campaign_enqueue = pooled(campaigns_async.campaign_enqueue)
    campaign_enqueue_once = pooled(campaigns_async.campaign_enqueue_once)
    campaign_claim = pooled(campaigns_async.campaign_claim)
    campaign_complete = pooled(campaigns_async.campaign_complete)
    campaign_complete_many = pooled(campaigns_async.campaign_complete_many)
    campaign_fail = pooled(campaigns_async.campaign_fail)
    campaign_fail_for_good = pooled(campaigns_async.campaign_fail_for_good)
    campaign_snooze = pooled(campaigns_async.campaign_snooze)
    campaign_extend = pooled(campaigns_async.campaign_extend)
    campaign_release = pooled(campaigns_async.campaign_release)
    campaign_skip_stale = pooled(campaigns_async.campaign_skip_stale)
    campaign_due_in = pooled(campaigns_async.campaign_due_in)
    campaign_progress = pooled(campaigns_async.campaign_progress)
    campaign_stats = pooled(campaigns_async.campaign_stats)
    campaign_prune = pooled(campaigns_async.campaign_prune)

    rate_acquire = pooled(rates_async.rate_acquire)
    rate_pause = pooled(rates_async.rate_pause)
    rate_status = pooled(rates_async.rate_status)

    @asynccontextmanager
    async def lock(
        self,
        key: str,
        owner: str | None = None,
        *,
        ttl: timedelta = CLIENT_LOCK_TTL,
        wait: timedelta = LOCK_WAIT,
        heartbeat: timedelta | None = None,
    ) -> AsyncIterator[Lease]:
        """Hold the lock of `key` for the block: acquire it (waiting up to `wait`, on the
        server), extend it every `heartbeat` (default `ttl / 3`) on a connection of the
        lease pool, and release it on exit: on a connection of the client's pool, or of
        the lease pool when it has a `heartbeat_conninfo` or while callers hold every
        connection of the client's pool. Raises LockNotAcquired, carrying the holder,
        when the lock is not granted, or when a block of this client holds it under the
        same owner (not re-entrant: the server would take the inner lock() for a renewal
        of the outer grant, and the inner exit would free it). `lease.lost` turns true
        as soon as the lease may have run out (see `Lease`), whether or not a heartbeat
        got through."""
        interval = heartbeat_interval(ttl, heartbeat)
        owner = default_owner() if owner is None else owner
        try:
            outer = self._held.get((key, owner))
        except TypeError:  # unhashable: not a text, which the server's answer names
            outer = None
        if outer is not None:
            # a block of this client holds the key under the same owner: the server
            # would take this lock() for a renewal of that grant (and could shorten it),
            # and this block's exit would free it; lock() is not re-entrant
            raise LockNotAcquired(key, outer.grant(), nested=True)
        leases = await self._lease_pool()
        sent = time.monotonic()
        grant = await self.lock_acquire(key, owner, ttl, wait)
        if not grant.acquired:
            raise LockNotAcquired(key, grant)
        lease = Lease(key, grant, ttl, sent)
        self._held[key, owner] = lease

        async def extend(lease: Lease, ttl: timedelta) -> datetime | None:
            async with leases.connection() as conn:
                return await locks_async._lease_extend(conn, lease.key, lease.token, ttl)

        try:
            async with heartbeat_task(extend, lease, ttl, interval):
                yield lease
        finally:
            shared = self._heartbeat_conninfo is None and has_room(self._pool)
            outcome: bool | None = None  # unknown, when the release raises
            try:
                outcome = await released(self._pool if shared else leases, lease)
            finally:
                lease.ended(outcome)
                del self._held[key, owner]
