"""A held lease, shared by the sync and async clients' `lock()` context managers, and the
one part of them that differs: the heartbeat, a thread for Client (`heartbeat_thread`)
and an asyncio task for AsyncClient (`heartbeat_task`).

The heartbeat reports each `lock_extend` to the lease; the block reads `expires_at`,
`lost` or calls `check()`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from uuid import uuid4

from psycopg_pool import PoolClosed

from .errors import LeaseLost
from .types import Lock

log = logging.getLogger(__name__)


class Lease:
    """The lease of `key` held by `owner` inside a `lock()` block.

    `token` is the fencing token of the grant (see `lock_is_current`). `expires_at` moves
    forward with each heartbeat. `lost` turns true when a heartbeat finds the lease gone;
    `released` says, after the block, whether the exit's `lock_release` freed the key.
    """

    __slots__ = ("_expires_at", "_lost", "key", "owner", "released", "token", "took_over")

    def __init__(self, key: str, grant: Lock) -> None:
        self.key = key
        self.owner = grant.owner
        self.token = grant.token
        self.took_over = grant.took_over
        self.released: bool | None = None
        self._expires_at = grant.expires_at
        self._lost = False

    @property
    def expires_at(self) -> datetime:
        """The server's expiry of the lease, as of the last grant or heartbeat."""
        return self._expires_at

    @property
    def lost(self) -> bool:
        """True once a heartbeat, or the release, found that the lease was no longer ours."""
        return self._lost

    def check(self) -> None:
        """Raise LeaseLost when the lease is known to be lost (as of the last heartbeat)."""
        if self._lost:
            raise LeaseLost(self.key, self.owner, self.token)

    def extended(self, expires_at: datetime | None) -> bool:
        """Record a `lock_extend` result (None: lost); True while the heartbeat goes on."""
        if expires_at is None:
            self._lost = True
            return False
        self._expires_at = expires_at
        return True

    def ended(self, released: bool) -> None:
        """Record the exit's `lock_release` result: False means someone else had the key."""
        self.released = released
        if not released:
            self._lost = True

    def __repr__(self) -> str:
        state = "lost" if self._lost else f"until {self._expires_at.isoformat()}"
        return f"<Lease {self.key!r} by {self.owner!r} token {self.token} {state}>"


def default_owner() -> str:
    """A unique, readable owner: host, process id and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:8]}"


def heartbeat_interval(ttl: timedelta, heartbeat: timedelta | None) -> float:
    """Seconds between two `lock_extend` calls: `heartbeat`, by default a third of `ttl`
    (`ttl` itself is the server's to check, when the lock is acquired)."""
    if heartbeat is None:
        return ttl.total_seconds() / 3
    if heartbeat <= timedelta(0):
        raise ValueError(f"heartbeat must be a positive interval, got {heartbeat}")
    return heartbeat.total_seconds()


@contextmanager
def heartbeat_thread(
    extend: Callable[[str, str, timedelta], datetime | None],
    lease: Lease,
    ttl: timedelta,
    interval: float,
) -> Iterator[None]:
    """While the block runs, a thread calls `extend(key, owner, ttl)` (Client.lock_extend)
    every `interval` seconds and reports it to `lease`, until the lease is lost."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            outcome: datetime | Exception | None
            try:
                outcome = extend(lease.key, lease.owner, ttl)
            except Exception as exc:
                outcome = exc
            if not _goes_on(lease, outcome):
                return

    thread = threading.Thread(target=beat, name=f"pgcoord-heartbeat {lease.key}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@asynccontextmanager
async def heartbeat_task(
    extend: Callable[[str, str, timedelta], Awaitable[datetime | None]],
    lease: Lease,
    ttl: timedelta,
    interval: float,
) -> AsyncIterator[None]:
    """`heartbeat_thread` as an asyncio task (AsyncClient.lock_extend), cancelled on exit."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(interval)
            outcome: datetime | Exception | None
            try:
                outcome = await extend(lease.key, lease.owner, ttl)
            except Exception as exc:
                outcome = exc
            if not _goes_on(lease, outcome):
                return

    task = asyncio.create_task(beat(), name=f"pgcoord-heartbeat {lease.key}")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])


def _goes_on(lease: Lease, outcome: datetime | Exception | None) -> bool:
    """Report one `lock_extend` (its result, or what it raised) to the lease; True while the
    heartbeat goes on: a failed call is logged and tried again at the next beat, a closed
    client or a lost lease stops it."""
    if isinstance(outcome, PoolClosed):
        log.warning("heartbeat of lock %r stopped: the client is closed", lease.key)
        return False
    if isinstance(outcome, Exception):
        log.warning("heartbeat of lock %r failed, retrying", lease.key, exc_info=outcome)
        return True
    return lease.extended(outcome)
