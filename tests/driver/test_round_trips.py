"""Every client call is one statement in one round trip, as libpq's own trace of the pool's
only connection shows (also past psycopg's prepare threshold, which would add a PREPARE
round trip to the 6th call of a statement on a connection that prepares)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from psycopg import pq

from pgcoord import AsyncClient, Client

REPEATS = 7
NO_BEAT = timedelta(hours=1)  # within the test, with a ttl of a day (NO_BEAT_TTL)
NO_BEAT_TTL = timedelta(days=1)


@contextmanager
def traced(pgconn: pq.abc.PGconn) -> Iterator[list[tuple[str, str]]]:
    """The (direction, message type) of every protocol message sent in the block."""
    messages: list[tuple[str, str]] = []
    with tempfile.TemporaryFile() as trace:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            yield messages
        finally:
            pgconn.untrace()  # flushes the trace
            trace.seek(0)
            for line in trace.read().decode().splitlines():
                direction, _length, kind, *_ = line.split("\t")
                messages.append((direction, kind))


def assert_one_round_trip(messages: list[tuple[str, str]], call: str) -> None:
    sent = [kind for direction, kind in messages if direction == "F"]
    received = [kind for direction, kind in messages if direction == "B"]
    assert sent.count("Sync") + sent.count("Query") == 1, (call, sent)
    assert sent.count("Execute") + sent.count("Query") == 1, (call, sent)
    assert received.count("ReadyForQuery") == 1, (call, received)


def calls(client: Client | AsyncClient, token: int) -> dict[str, Callable[[], Any]]:
    """Each call of the client (async ones return the coroutine to await)."""
    return {
        "lock_acquire": lambda: client.lock_acquire("k", "me"),
        "lock_extend": lambda: client.lock_extend("k", "me"),
        "lock_is_current": lambda: client.lock_is_current("k", token),
        "lock_status": lambda: client.lock_status(),
        "lock_release": lambda: client.lock_release("k", "me"),
    }


def test_each_client_call_is_one_round_trip(db_url: str) -> None:
    with Client(db_url, min_size=1, max_size=1) as client:
        with client.pool.connection() as conn:
            pgconn = conn.pgconn
        token = client.lock_acquire("k", "me").token
        for name, call in calls(client, token).items():
            for _ in range(REPEATS):
                with traced(pgconn) as messages:
                    call()
                assert_one_round_trip(messages, name)

        for _ in range(REPEATS):
            lock = client.lock("k", ttl=NO_BEAT_TTL, heartbeat=NO_BEAT)
            with traced(pgconn) as messages:
                lease = lock.__enter__()
            assert_one_round_trip(messages, "lock: enter")
            with traced(pgconn) as messages:
                lock.__exit__(None, None, None)
            assert_one_round_trip(messages, "lock: exit")
            assert lease.released is True


def test_each_async_client_call_is_one_round_trip(db_url: str) -> None:
    async def main() -> None:
        async with AsyncClient(db_url, min_size=1, max_size=1) as client:
            async with client.pool.connection() as conn:
                pgconn = conn.pgconn
            token = (await client.lock_acquire("k", "me")).token
            for name, call in calls(client, token).items():
                for _ in range(REPEATS):
                    with traced(pgconn) as messages:
                        await call()
                    assert_one_round_trip(messages, name)

            for _ in range(REPEATS):
                lock = client.lock("k", ttl=NO_BEAT_TTL, heartbeat=NO_BEAT)
                with traced(pgconn) as messages:
                    lease = await lock.__aenter__()
                assert_one_round_trip(messages, "lock: enter")
                with traced(pgconn) as messages:
                    await lock.__aexit__(None, None, None)
                assert_one_round_trip(messages, "lock: exit")
                assert lease.released is True

    asyncio.run(main())
