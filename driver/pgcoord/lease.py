"""A held lease, shared by the sync and async clients' `lock()` context managers, and the
one part of them that differs: the heartbeat, a thread for Client (`heartbeat_thread`)
and an asyncio task for AsyncClient (`heartbeat_task`).

A lease never claims more than it may have. It keeps a deadline of its own on the local
monotonic clock: the moment the grant (or the last renewal) was sent, plus the ttl, less
a safety margin (`config.LEASE_SAFETY_MARGIN`). The server computed its expiry from a
later moment, so the lease turns `lost` before the server can give the key to another
owner, even when no heartbeat gets through (a stalled network, an exhausted pooler).
Once the safe time has passed without a renewal answered in time, the lease stays lost:
another owner may have held the key meanwhile, so a late renewal restores nothing.

The heartbeat reports each renewal (`lock_extend_token`) to the lease; the block reads `lost`,
`remaining`, `expires_at`, or calls `check()`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from uuid import uuid4

from psycopg_pool import PoolClosed

from . import arguments
from .config import LEASE_SAFETY_MARGIN, AsyncPool, Pool
from .errors import FAULTS, LeaseLost, fault_line
from .types import Lock

log = logging.getLogger(__name__)

# how long a block's exit waits for a heartbeat thread still inside its lock_extend
# (a stalled server or network); the thread is then left to end on its own
HEARTBEAT_JOIN_TIMEOUT = 5.0


class Lease:
    """The lease of `key` held by `owner` inside a `lock()` block.

    `token` is the fencing token of the grant (see `lock_is_current`). `expires_at` is the
    server's expiry, moved forward by each heartbeat. `lost` turns true when the lease
    may have run out (see the module documentation) or a heartbeat found it gone;
    `remaining` is how long it is safe to go on. `released` says, after the block,
    whether the exit's `lock_release` freed the key (None when that call failed); from
    then on the lease is held no more: `remaining` is zero and `check()` raises, whether
    or not it was `lost`. The heartbeat and the release touch the lease's own grant only
    (its token): never a grant made since under the same owner.

    `sent` is the `time.monotonic()` at which the grant was asked for.
    """

    __slots__ = (
        "_expires_at",
        "_lost",
        "_safe_for",
        "_safe_until",
        "key",
        "owner",
        "released",
        "token",
        "took_over",
    )

    def __init__(self, key: str, grant: Lock, ttl: timedelta, sent: float) -> None:
        if grant.owner is None or grant.token is None or grant.expires_at is None:
            raise ValueError(f"a lease is made of a granted lock, not {grant}")
        self.key = key
        self.owner: str = grant.owner
        self.token: int = grant.token
        self.took_over = grant.took_over
        self.released: bool | None = None
        self._expires_at: datetime = grant.expires_at
        self._lost = False
        self._safe_for = safe_seconds(ttl)
        self._safe_until = sent + self._safe_for

    @property
    def expires_at(self) -> datetime:
        """The server's expiry of the lease, as of the last grant or heartbeat."""
        return self._expires_at

    @property
    def lost(self) -> bool:
        """True once the lease may have run out (its safe time passed without a renewal
        answered in time), or a heartbeat or the release found it gone. It stays true."""
        return self._lost or time.monotonic() >= self._safe_until

    @property
    def remaining(self) -> timedelta:
        """How long the lease is safely held, unless a heartbeat renews it (zero once
        lost, and once its block has ended)."""
        if self._lost or self.released is not None:
            return timedelta(0)
        return timedelta(seconds=max(0.0, self._safe_until - time.monotonic()))

    def grant(self) -> Lock:
        """The grant as `lock_acquire` answered it, with the expiry of the last renewal."""
        return Lock(True, self.owner, self.token, self._expires_at, self.took_over)

    def check(self) -> None:
        """Raise LeaseLost when the lease is lost (see `lost`), or its block has ended."""
        if self.lost:
            raise LeaseLost(self.key, self.owner, self.token)
        if self.released is not None:
            raise LeaseLost(self.key, self.owner, self.token, "was released by its block")

    def extended(self, expires_at: datetime | None, sent: float) -> bool:
        """Record a `lock_extend` sent at `sent` (monotonic) and its result (None: lost);
        True while the heartbeat goes on. A renewal answered after the safe time moves
        `expires_at` (the server's expiry) but not the safe time: the lease is lost."""
        if expires_at is not None:
            self._expires_at = expires_at  # the server's word, in time or not
        if expires_at is None or self.lost:
            self._lost = True
            return False
        self._safe_until = sent + self._safe_for
        return True

    def ended(self, released: bool | None) -> None:
        """Record the exit's `lock_release` result: False means the key's live grant was
        not this lease's; None that the release failed, so whether it freed the key is
        not known. Either way the lease is held no more."""
        self.released = released
        if not released or self.lost:
            self._lost = True
        else:
            self._safe_until = math.inf  # `lost` stays what it was at the exit

    def __repr__(self) -> str:
        if self.lost:
            state = "lost"
        elif self.released is not None:
            state = "released"
        else:
            state = f"until {self._expires_at.isoformat()}"
        return f"<Lease {self.key!r} by {self.owner!r} token {self.token} {state}>"


def safe_seconds(ttl: timedelta) -> float:
    """How long after its request a lease (or a worker's claim) of `ttl` is safely held
    without a renewal: the ttl less the safety margin (the server counts from later)."""
    return ttl.total_seconds() * (1 - LEASE_SAFETY_MARGIN)


def default_owner() -> str:
    """A unique, readable owner: host, process id and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:8]}"


def heartbeat_interval(ttl: timedelta, heartbeat: timedelta | None) -> float:
    """Seconds between two `lock_extend` calls: `heartbeat`, by default a third of `ttl`,
    at most the part of `ttl` a lease is safely held (`safe_seconds`; `ttl` itself is the
    server's to check, when the lock is acquired)."""
    arguments.check("lock: ttl", ttl, timedelta)
    arguments.check("lock: heartbeat", heartbeat, timedelta | None)
    if heartbeat is None:
        return ttl.total_seconds() / 3
    if heartbeat <= timedelta(0):
        raise ValueError(f"heartbeat must be a positive interval, got {heartbeat}")
    safe = safe_seconds(ttl)
    if ttl > timedelta(0) and heartbeat.total_seconds() >= safe:
        # the lease would be lost before its first renewal, and stay lost
        raise ValueError(
            f"heartbeat must be shorter than {safe:g} s, the part of ttl {ttl} that a lease "
            f"is safely held without a renewal, got {heartbeat}"
        )
    return heartbeat.total_seconds()


@contextmanager
def heartbeat_thread(
    extend: Callable[[Lease, timedelta], datetime | None],
    lease: Lease,
    ttl: timedelta,
    interval: float,
) -> Iterator[None]:
    """While the block runs, a thread calls `extend(lease, ttl)` (a renewal of the
    lease's own grant) every `interval` seconds and reports it to `lease`, until the
    lease is lost."""
    stop = threading.Event()

    def beat() -> None:
        pause: float | None = interval
        while pause is not None and not stop.wait(pause):
            sent = time.monotonic()
            outcome: datetime | Exception | None
            try:
                outcome = extend(lease, ttl)
            except Exception as exc:
                outcome = exc
            if stop.is_set():
                return  # the block is over: its release tells the rest
            pause = _next_beat(lease, outcome, sent, interval)

    thread = threading.Thread(target=beat, name=f"pgcoord-heartbeat {lease.key}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(HEARTBEAT_JOIN_TIMEOUT)
        if thread.is_alive():
            log.warning("heartbeat of lock %r is still waiting for the server", lease.key)


@asynccontextmanager
async def heartbeat_task(
    extend: Callable[[Lease, timedelta], Awaitable[datetime | None]],
    lease: Lease,
    ttl: timedelta,
    interval: float,
) -> AsyncIterator[None]:
    """`heartbeat_thread` as an asyncio task, cancelled on exit."""

    async def beat() -> None:
        pause: float | None = interval
        while pause is not None:
            await asyncio.sleep(pause)
            sent = time.monotonic()
            outcome: datetime | Exception | None
            try:
                outcome = await extend(lease, ttl)
            except Exception as exc:
                outcome = exc
            pause = _next_beat(lease, outcome, sent, interval)

    task = asyncio.create_task(beat(), name=f"pgcoord-heartbeat {lease.key}")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])


def _next_beat(
    lease: Lease, outcome: datetime | Exception | None, sent: float, interval: float
) -> float | None:
    """Report one `lock_extend` sent at `sent` (its result, or what it raised) to the
    lease; the pause before the next beat, or None when the heartbeat stops: a failed
    call is logged and tried again after a third of `interval` (while the lease may still
    be saved), a closed client or a lost lease stops it."""
    if isinstance(outcome, PoolClosed):
        log.warning("heartbeat of lock %r stopped: the client is closed", lease.key)
        return None
    if isinstance(outcome, Exception):
        if lease.lost:
            log.warning("heartbeat of lock %r failed past the lease's safe time", lease.key)
            return None
        if isinstance(outcome, FAULTS):  # the database or the network: one line
            log.warning("heartbeat of lock %r failed, retrying: %s", lease.key, fault_line(outcome))
        else:
            log.warning("heartbeat of lock %r failed, retrying", lease.key, exc_info=outcome)
        return interval / 3
    return interval if lease.extended(outcome, sent) else None


def has_room(pool: Pool | AsyncPool) -> bool:
    """Whether a psycopg pool gives a connection without queueing behind waiting callers
    (an idle one, or room to open one)."""
    stats = pool.get_stats()
    return bool(
        stats.get("requests_waiting", 0) == 0
        and (stats["pool_available"] > 0 or stats["pool_size"] < stats["pool_max"])
    )
