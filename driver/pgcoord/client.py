# DO NOT CHANGE! Generated from client_async.py by scripts/async-to-sync;
# change the original instead.
"""Client: every call of `locks` and `inbox` over a pool of autocommit
connections, one connection and one round trip per call, and `lock()`, a lease held for
a block and kept alive by a heartbeat (`lease.heartbeat_thread`).

Each method is its call with the connection taken from the pool (`pooled`): same name,
arguments, defaults, result and docstring, so a new call costs one line here.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import psycopg

from . import campaigns, config, inbox, locks, rates
from .config import CLIENT_LOCK_TTL, LOCK_WAIT, Pool
from .errors import LockNotAcquired
from .lease import Lease, default_owner, heartbeat_interval, heartbeat_thread

P = ParamSpec("P")
R = TypeVar("R")


def pooled(
    call: Callable[Concatenate[psycopg.Connection[Any], P], R],
) -> Callable[Concatenate[Client, P], R]:
    """The method of Client that runs `call` on a connection of the client's pool: the
    call's signature without its connection, its annotations and its docstring."""

    @functools.wraps(call)
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.pool.connection() as conn:
            return call(conn, *args, **kwargs)

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


class Client:
    """Lease locks and the inbox calls over a connection pool.

    With `conninfo` the client opens its own pool (`config.pool`; an empty conninfo
    uses the libpq environment) and closes it in `close()`. Its connections are
    autocommit, so every call commits by itself in one round trip; no call is ever
    prepared on the server, so they work through transaction-mode poolers. With `pool` it
    borrows the caller's pool and leaves it open; give that pool
    `kwargs=config.CONNECTION_OPTIONS`, or calls also cost the pool's COMMIT.

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
    ) -> None:
        if pool is not None and conninfo is not None:
            raise TypeError(f"{type(self).__name__} takes conninfo or pool, not both")
        self._owns_pool = pool is None
        if pool is None:
            pool = config.pool(conninfo or "", min_size=min_size, max_size=max_size)
        self._pool = pool

    @property
    def pool(self) -> Pool:
        """The pool the calls take their connections from."""
        return self._pool

    def open(self) -> None:
        """Open the client's own pool (calling again is harmless)."""
        if self._owns_pool:
            self._pool.open()

    def close(self) -> None:
        """Close the client's own pool; a borrowed pool stays open."""
        if self._owns_pool:
            self._pool.close()

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
    buffer_extend = pooled(inbox.buffer_extend)
    buffer_release = pooled(inbox.buffer_release)
    buffer_revive = pooled(inbox.buffer_revive)
    buffer_due_in = pooled(inbox.buffer_due_in)
    buffer_status = pooled(inbox.buffer_status)

    campaign_create = pooled(campaigns.campaign_create)
    campaign_set_status = pooled(campaigns.campaign_set_status)
    campaign_enqueue = pooled(campaigns.campaign_enqueue)
    campaign_claim = pooled(campaigns.campaign_claim)
    campaign_complete = pooled(campaigns.campaign_complete)
    campaign_complete_many = pooled(campaigns.campaign_complete_many)
    campaign_fail = pooled(campaigns.campaign_fail)
    campaign_snooze = pooled(campaigns.campaign_snooze)
    campaign_extend = pooled(campaigns.campaign_extend)
    campaign_release = pooled(campaigns.campaign_release)
    campaign_skip_stale = pooled(campaigns.campaign_skip_stale)
    campaign_due_in = pooled(campaigns.campaign_due_in)
    campaign_progress = pooled(campaigns.campaign_progress)

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
        server), extend it every `heartbeat` (default `ttl / 3`) on a pool connection, and
        release it on exit. Raises LockNotAcquired, carrying the holder, when the lock is
        not granted. `lease.lost` tells whether the lease was lost."""
        interval = heartbeat_interval(ttl, heartbeat)
        grant = self.lock_acquire(key, default_owner() if owner is None else owner, ttl, wait)
        if not grant.acquired:
            raise LockNotAcquired(key, grant)
        lease = Lease(key, grant)
        try:
            with heartbeat_thread(self.lock_extend, lease, ttl, interval):
                yield lease
        finally:
            lease.ended(self.lock_release(key, lease.owner))
