# DO NOT CHANGE! Generated from client_async.py by scripts/async-to-sync;
# change the original instead.
"""Client: every call of `locks`, `inbox`, `campaigns` and
`rates` over a pool of autocommit connections, one connection and one round trip
per call, and `lock()`, a lease held for a block and kept alive by a heartbeat
(`lease.heartbeat_thread`) on a lease pool of its own, which callers never use.

Each method is its call with the connection taken from the pool (`pooled`): same name,
arguments, defaults, result and docstring, so a new call costs one line here.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import psycopg

from . import campaigns, config, inbox, locks, rates
from .config import CLIENT_LOCK_TTL, LOCK_WAIT, Pool
from .errors import LockNotAcquired
from .lease import Lease, default_owner, has_room, heartbeat_interval, heartbeat_thread

P = ParamSpec("P")
R = TypeVar("R")


def pooled(
    call: Callable[Concatenate[psycopg.Connection[Any], P], R],
) -> Callable[Concatenate[Client, P], R]:
    """The method of Client that runs `call` on a connection of the client's pool: the
    call's signature without its connection, its annotations and its docstring."""

    @functools.wraps(call)
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> R:
        conn: psycopg.Connection[Any] | None = None
        try:
            with self.pool.connection() as conn:
                return call(conn, *args, **kwargs)
        except psycopg.OperationalError:
            if conn is not None and conn.closed:
                swept(self.pool)
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


def swept(pool: Pool) -> None:
    """A call found its connection dead (killed connections, a restarted server): check
    the pool's idle ones now, so that the next calls do not meet the others one by one."""
    pool.check()


def released(pool: Pool, lease: Lease) -> bool:
    """The `lock_release` of a block's exit, of the lease's own grant only. On a dead
    connection, once more after the pool is swept: a release is safe to repeat (one that
    did free the key answers False the second time, and the lease then says lost, never
    held)."""
    conn: psycopg.Connection[Any] | None = None
    try:
        with pool.connection() as conn:
            return locks._lease_release(conn, lease.key, lease.token)
    except psycopg.OperationalError:
        if conn is None or not conn.closed:
            raise
    swept(pool)
    with pool.connection() as conn:
        return locks._lease_release(conn, lease.key, lease.token)


class Client:
    """Lease locks, the inbox, the campaign queue and rate limits over a connection pool.

    With `conninfo` the client opens its own pool (`config.pool`; an empty conninfo
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
        pool: Pool | None = None,
        min_size: int = 1,
        max_size: int = 8,
        heartbeat_conninfo: str | None = None,
    ) -> None:
        if pool is not None and conninfo is not None:
            raise TypeError(f"{type(self).__name__} takes conninfo or pool, not both")
        self._owns_pool = pool is None
        if pool is None:
            pool = config.pool(conninfo or "", min_size=min_size, max_size=max_size)
        self._pool = pool
        self._heartbeat_conninfo = heartbeat_conninfo
        self._leases: Pool | None = None
        # the leases of this client's lock() blocks under way, by (key, owner)
        self._held: dict[tuple[str, str], Lease] = {}
        self._leases_made = threading.Lock()

    @property
    def pool(self) -> Pool:
        """The pool the calls take their connections from."""
        return self._pool

    def open(self) -> None:
        """Open the client's own pool (calling again is harmless)."""
        if self._owns_pool:
            self._pool.open()

    def close(self) -> None:
        """Close the client's own pool and its lease pool; a borrowed pool stays open."""
        if self._owns_pool:
            self._pool.close()
        with self._leases_made:
            leases, self._leases = self._leases, None
        if leases is not None:
            leases.close()

    def _lease_pool(self) -> Pool:
        """The pool of the heartbeats (and of a block's release while the callers hold
        every connection of `pool`), opened at its first use."""
        with self._leases_made:
            if self._leases is None:
                self._leases = config.lease_pool(self._heartbeat_conninfo, self._pool)
            leases = self._leases
        leases.open()
        return leases

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    lock_acquire = pooled(locks.lock_acquire)
    lock_release = pooled(locks.lock_release)
    lock_extend = pooled(locks.lock_extend)
    lock_is_current = pooled(locks.lock_is_current)
    lock_status = pooled(locks.lock_status)

    message_ingest = pooled(inbox.message_ingest)
    message_prune = pooled(inbox.message_prune)
    message_payloads = pooled(inbox.message_payloads)
    buffer_claim = pooled(inbox.buffer_claim)
    buffer_claim_with_payloads = pooled(inbox.buffer_claim_with_payloads)
    buffer_complete = pooled(inbox.buffer_complete)
    buffer_fail = pooled(inbox.buffer_fail)
    buffer_fail_for_good = pooled(inbox.buffer_fail_for_good)
    buffer_extend = pooled(inbox.buffer_extend)
    buffer_release = pooled(inbox.buffer_release)
    buffer_revive = pooled(inbox.buffer_revive)
    buffer_due_in = pooled(inbox.buffer_due_in)
    buffer_status = pooled(inbox.buffer_status)

    campaign_create = pooled(campaigns.campaign_create)
    campaign_set_status = pooled(campaigns.campaign_set_status)
    campaign_enqueue = pooled(campaigns.campaign_enqueue)
    campaign_enqueue_once = pooled(campaigns.campaign_enqueue_once)
    campaign_claim = pooled(campaigns.campaign_claim)
    campaign_complete = pooled(campaigns.campaign_complete)
    campaign_complete_many = pooled(campaigns.campaign_complete_many)
    campaign_fail = pooled(campaigns.campaign_fail)
    campaign_fail_for_good = pooled(campaigns.campaign_fail_for_good)
    campaign_snooze = pooled(campaigns.campaign_snooze)
    campaign_extend = pooled(campaigns.campaign_extend)
    campaign_release = pooled(campaigns.campaign_release)
    campaign_skip_stale = pooled(campaigns.campaign_skip_stale)
    campaign_due_in = pooled(campaigns.campaign_due_in)
    campaign_progress = pooled(campaigns.campaign_progress)
    campaign_stats = pooled(campaigns.campaign_stats)
    campaign_prune = pooled(campaigns.campaign_prune)

    rate_acquire = pooled(rates.rate_acquire)
    rate_pause = pooled(rates.rate_pause)
    rate_status = pooled(rates.rate_status)

    @contextmanager
    def lock(
        self,
        key: str,
        owner: str | None = None,
        *,
        ttl: timedelta = CLIENT_LOCK_TTL,
        wait: timedelta = LOCK_WAIT,
        heartbeat: timedelta | None = None,
    ) -> Iterator[Lease]:
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
        leases = self._lease_pool()
        sent = time.monotonic()
        grant = self.lock_acquire(key, owner, ttl, wait)
        if not grant.acquired:
            raise LockNotAcquired(key, grant)
        lease = Lease(key, grant, ttl, sent)
        self._held[key, owner] = lease

        def extend(lease: Lease, ttl: timedelta) -> datetime | None:
            with leases.connection() as conn:
                return locks._lease_extend(conn, lease.key, lease.token, ttl)

        try:
            with heartbeat_thread(extend, lease, ttl, interval):
                yield lease
        finally:
            shared = self._heartbeat_conninfo is None and has_room(self._pool)
            outcome: bool | None = None  # unknown, when the release raises
            try:
                outcome = released(self._pool if shared else leases, lease)
            finally:
                lease.ended(outcome)
                del self._held[key, owner]
