"""Client: the lease-lock and inbox calls over a pool of autocommit connections, one
connection and one round trip per call, and `lock()`, a lease held for a `with` block and
kept alive by a heartbeat thread. The async twin with the same method names is
`aio.AsyncClient`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg_pool import ConnectionPool, PoolClosed

from . import inbox, locks
from .errors import LockNotAcquired
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

Pool = ConnectionPool[psycopg.Connection[Any]]


class Client:
    """Lease locks and the inbox calls over a connection pool.

    With `conninfo` the client opens its own pool (an empty conninfo uses the libpq
    environment) and closes it in `close()`. Its connections are autocommit and never
    prepare statements on the server, so every call is one round trip and works through
    transaction-mode poolers. With `pool` it borrows the caller's pool and leaves it open;
    give that pool `kwargs=locks.CONNECTION_OPTIONS` (autocommit, no server-side prepare), or
    calls also cost the pool's COMMIT and, now and then, a PREPARE.
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
            raise TypeError("Client takes conninfo or pool, not both")
        self._owns_pool = pool is None
        if pool is None:
            pool = ConnectionPool(
                conninfo or "",
                kwargs=dict(CONNECTION_OPTIONS),
                min_size=min_size,
                max_size=max_size,
                open=True,
                name="pgcoord",
            )
        self._pool = pool

    @property
    def pool(self) -> Pool:
        """The pool the calls take their connections from."""
        return self._pool

    def open(self) -> None:
        """Open the client's own pool (it opens when created; calling again is harmless)."""
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

    def lock_acquire(
        self, key: str, owner: str, ttl: timedelta = DEFAULT_TTL, wait: timedelta = NO_WAIT
    ) -> Lock:
        """See `locks.lock_acquire`."""
        with self._pool.connection() as conn:
            return locks.lock_acquire(conn, key, owner, ttl, wait)

    def lock_release(self, key: str, owner: str) -> bool:
        """See `locks.lock_release`."""
        with self._pool.connection() as conn:
            return locks.lock_release(conn, key, owner)

    def lock_extend(self, key: str, owner: str, ttl: timedelta = DEFAULT_TTL) -> datetime | None:
        """See `locks.lock_extend`."""
        with self._pool.connection() as conn:
            return locks.lock_extend(conn, key, owner, ttl)

    def lock_is_current(self, key: str, token: int) -> bool:
        """See `locks.lock_is_current`."""
        with self._pool.connection() as conn:
            return locks.lock_is_current(conn, key, token)

    def lock_status(self) -> list[LockStatus]:
        """See `locks.lock_status`."""
        with self._pool.connection() as conn:
            return locks.lock_status(conn)

    def message_ingest(
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
        with self._pool.connection() as conn:
            return inbox.message_ingest(
                conn,
                provider,
                provider_message_id,
                conversation_key,
                body,
                payload,
                debounce,
                max_wait,
            )

    def buffer_claim(
        self, worker: str, limit: int = DEFAULT_CLAIM_LIMIT, lease: timedelta = DEFAULT_LEASE
    ) -> list[Burst]:
        """See `inbox.buffer_claim`."""
        with self._pool.connection() as conn:
            return inbox.buffer_claim(conn, worker, limit, lease)

    def buffer_complete(self, conversation_key: str, claim_token: int) -> bool:
        """See `inbox.buffer_complete`."""
        with self._pool.connection() as conn:
            return inbox.buffer_complete(conn, conversation_key, claim_token)

    def buffer_fail(
        self,
        conversation_key: str,
        claim_token: int,
        error: str,
        retry_in: timedelta = DEFAULT_RETRY_IN,
    ) -> bool:
        """See `inbox.buffer_fail`."""
        with self._pool.connection() as conn:
            return inbox.buffer_fail(conn, conversation_key, claim_token, error, retry_in)

    def buffer_extend(
        self, conversation_key: str, claim_token: int, lease: timedelta = DEFAULT_LEASE
    ) -> datetime | None:
        """See `inbox.buffer_extend`."""
        with self._pool.connection() as conn:
            return inbox.buffer_extend(conn, conversation_key, claim_token, lease)

    def message_prune(self, older_than: timedelta, limit: int = DEFAULT_PRUNE_LIMIT) -> int:
        """See `inbox.message_prune`."""
        with self._pool.connection() as conn:
            return inbox.message_prune(conn, older_than, limit)

    def buffer_release(self, conversation_key: str, claim_token: int) -> bool:
        """See `inbox.buffer_release`."""
        with self._pool.connection() as conn:
            return inbox.buffer_release(conn, conversation_key, claim_token)

    def buffer_revive(self, conversation_key: str) -> int:
        """See `inbox.buffer_revive`."""
        with self._pool.connection() as conn:
            return inbox.buffer_revive(conn, conversation_key)

    def buffer_due_in(self) -> timedelta | None:
        """See `inbox.buffer_due_in`."""
        with self._pool.connection() as conn:
            return inbox.buffer_due_in(conn)

    def buffer_status(self) -> list[BufferStatus]:
        """See `inbox.buffer_status`."""
        with self._pool.connection() as conn:
            return inbox.buffer_status(conn)

    @contextmanager
    def lock(
        self,
        key: str,
        owner: str | None = None,
        *,
        ttl: timedelta = LEASE_TTL,
        wait: timedelta = NO_WAIT,
        heartbeat: timedelta | None = None,
    ) -> Iterator[Lease]:
        """Hold the lock of `key` for the block: acquire it (waiting up to `wait`, on the
        server), extend it every `heartbeat` (default `ttl / 3`) from a thread on a pool
        connection, and release it on exit. Raises LockNotAcquired, carrying the holder,
        when the lock is not granted. `lease.lost` tells whether the lease was lost."""
        interval = heartbeat_interval(ttl, heartbeat)
        grant = self.lock_acquire(key, default_owner() if owner is None else owner, ttl, wait)
        if not grant.acquired:
            raise LockNotAcquired(key, grant)
        lease = Lease(key, grant)
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat,
            args=(lease, ttl, interval, stop),
            name=f"pgcoord-heartbeat {key}",
            daemon=True,
        )
        try:
            beat.start()
            yield lease
        finally:
            stop.set()
            if beat.ident is not None:
                beat.join()
            lease.ended(self.lock_release(key, lease.owner))

    def _heartbeat(
        self, lease: Lease, ttl: timedelta, interval: float, stop: threading.Event
    ) -> None:
        while not stop.wait(interval):
            try:
                expires_at = self.lock_extend(lease.key, lease.owner, ttl)
            except PoolClosed:
                log.warning("heartbeat of lock %r stopped: the client is closed", lease.key)
                return
            except Exception:
                log.warning("heartbeat of lock %r failed, retrying", lease.key, exc_info=True)
                continue
            if not lease.extended(expires_at):
                return
