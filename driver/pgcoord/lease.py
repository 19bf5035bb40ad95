"""A held lease, shared by the sync and async clients' `lock()` context managers.

The heartbeat (a thread or a task, owned by the client) reports each `lock_extend` to
the lease; the block reads `expires_at`, `lost` or calls `check()`.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta
from uuid import uuid4

from .errors import PgcoordError
from .types import Lock

LEASE_TTL = timedelta(seconds=30)  # the default ttl of `lock()`


class LeaseLost(PgcoordError):
    """The lease ended before the block did: it expired, or another owner took the key."""

    def __init__(self, key: str, owner: str, token: int) -> None:
        super().__init__(f"lease of {key!r} by {owner!r} (token {token}) was lost")
        self.key = key
        self.owner = owner
        self.token = token


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
