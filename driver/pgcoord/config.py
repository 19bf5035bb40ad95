"""The driver's settings, each defined once: the options of pooled connections, the connect
timeout, how a server is named in messages, the pool factories, and the defaults of the
SQL functions' arguments (each named for the function it belongs to; db/src/functions is
where they are decided)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, ConnectionPool

Pool = ConnectionPool[psycopg.Connection[Any]]
AsyncPool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]

# Options of pooled connections: each call commits by itself, and no statement is
# prepared on the server (one round trip always; safe behind transaction-mode poolers).
CONNECTION_OPTIONS: dict[str, Any] = {"autocommit": True, "prepare_threshold": None}

# seconds between autovacuum's visits to a database holding a busy campaign queue, as
# docs/vacuum.md recommends (inserts reuse the space of sent groups only once a vacuum has
# recorded it): `pgcoord status` says when the server's is longer, and the campaign bench
# measures the queue's size with it
AUTOVACUUM_NAPTIME = 2

# seconds a single connection attempt of the CLI and of migrations may take, unless the
# conninfo sets its own connect_timeout
CONNECT_TIMEOUT = 10

# lock_acquire and lock_extend: p_ttl; lock_acquire: p_wait
LOCK_TTL = timedelta(minutes=2)
LOCK_WAIT = timedelta(0)
# the ttl of Client.lock() / AsyncClient.lock(), renewed by their heartbeat
CLIENT_LOCK_TTL = timedelta(seconds=30)
# the share of that ttl a lease gives up: it counts itself lost this much before the
# server's expiry (from the moment its grant or renewal was sent), for the difference of
# the clocks' rates and the step from the block's last check to its next write
LEASE_SAFETY_MARGIN = 0.1
# connections of a client's lease pool: its heartbeats (and a block's release while the
# callers hold every connection of the client's pool), never the callers
LEASE_POOL_SIZE = 2
# message_ingest: p_debounce, p_max_wait
INGEST_DEBOUNCE = timedelta(seconds=10)
INGEST_MAX_WAIT = timedelta(seconds=60)
# buffer_claim: p_limit; buffer_claim and buffer_extend: p_lease; buffer_fail: p_retry_in
BUFFER_CLAIM_LIMIT = 10
BUFFER_LEASE = timedelta(seconds=60)
BUFFER_RETRY_IN = timedelta(seconds=60)
# message_prune and campaign_prune: p_limit
PRUNE_LIMIT = 10_000
# campaign_create: p_max_retries, p_retry_backoff, p_stale_after
CAMPAIGN_MAX_RETRIES = 3
CAMPAIGN_RETRY_BACKOFF = (timedelta(minutes=5), timedelta(minutes=15), timedelta(minutes=30))
CAMPAIGN_STALE_AFTER = timedelta(hours=1)
# campaign_claim: p_limit; campaign_claim and campaign_extend: p_lease
CAMPAIGN_CLAIM_LIMIT = 15
CAMPAIGN_LEASE = timedelta(minutes=5)
# rate_acquire: p_cost
RATE_COST = 1

# The longest delays the functions take (each function's COMMENT states its maxima; a
# test holds these to them). A worker caps a handler's Retry(after) or RateLimited(after)
# at them: a provider's Retry-After of days still puts the item back and pauses the fleet.
# buffer_fail: p_retry_in
BUFFER_RETRY_IN_MAX = timedelta(days=30)
# campaign_fail: p_retry_after; campaign_snooze: p_delay
CAMPAIGN_DELAY_MAX = timedelta(days=30)
# rate_pause: p_for
RATE_PAUSE_MAX = timedelta(days=1)


def connect_timeout(conninfo: str) -> int | None:
    """CONNECT_TIMEOUT, or None where `conninfo` sets its own connect_timeout (None keeps
    it in force). Raises psycopg.ProgrammingError for a conninfo that does not parse."""
    return None if "connect_timeout" in conninfo_to_dict(conninfo) else CONNECT_TIMEOUT


def describe(conninfo: str) -> str:
    """host:port/database of a conninfo or URL, for messages: never its password."""
    params = conninfo_to_dict(conninfo)
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or 5432)
    return f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}"


def where(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> str:
    """The database a connection reached, for messages: "database 'app' on host:port"."""
    info = conn.info
    host = info.host if not info.host.startswith("/") else "local socket"
    return f"database {info.dbname!r} on {host}:{info.port}"


def pool(conninfo: str, *, min_size: int = 1, max_size: int = 8, name: str = "pgcoord") -> Pool:
    """A pool of connections with CONNECTION_OPTIONS, opened (an empty conninfo uses the
    libpq environment)."""
    return ConnectionPool(conninfo, open=True, **_pool_settings(min_size, max_size, name))


def async_pool(
    conninfo: str, *, min_size: int = 1, max_size: int = 8, name: str = "pgcoord"
) -> AsyncPool:
    """An async pool of connections with CONNECTION_OPTIONS, not opened yet: an async pool
    opens in an event loop (`await pool.open()`, or `async with pool`)."""
    return AsyncConnectionPool(conninfo, open=False, **_pool_settings(min_size, max_size, name))


def lease_pool(conninfo: str | None, like: Pool) -> Pool:
    """A client's lease pool, opened, with no connection until the first heartbeat: to
    `conninfo`, or where the pool `like` connects (its conninfo and connection options,
    over CONNECTION_OPTIONS)."""
    return ConnectionPool(
        like.conninfo if conninfo is None else conninfo,
        open=True,
        **_lease_pool_settings(like.kwargs),
    )


def async_lease_pool(conninfo: str | None, like: AsyncPool) -> AsyncPool:
    """`lease_pool` for an AsyncClient, not opened yet."""
    return AsyncConnectionPool(
        like.conninfo if conninfo is None else conninfo,
        open=False,
        **_lease_pool_settings(like.kwargs),
    )


def _lease_pool_settings(kwargs: Any) -> dict[str, Any]:
    if kwargs is None or isinstance(kwargs, dict):
        kwargs = {**(kwargs or {}), **CONNECTION_OPTIONS}
    # min_size 0: a client that never holds a lease opens no connection for it
    return {
        "kwargs": kwargs,
        "min_size": 0,
        "max_size": LEASE_POOL_SIZE,
        "name": "pgcoord-lease",
        "num_workers": 1,
    }


def _pool_settings(min_size: int, max_size: int, name: str) -> dict[str, Any]:
    return {
        "kwargs": dict(CONNECTION_OPTIONS),
        "min_size": min_size,
        "max_size": max_size,
        "name": name,
    }
