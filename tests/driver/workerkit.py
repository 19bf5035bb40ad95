"""Helpers of the worker tests: the test's own side of the inbox (ingest, status, the
server clock), a worker with short test timings, and polling instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from pgcoord import inbox_async
from pgcoord.types import Batch, BufferStatus, Ingested
from pgcoord.worker import BufferWorker, Handler

AsyncConn = psycopg.AsyncConnection[Any]

# short timings: a heartbeat every 0.3 s, an idle worker looks every 0.1 s
LEASE = timedelta(seconds=0.9)
IDLE_POLL = timedelta(seconds=0.1)
HOUR = timedelta(hours=1)


class Inbox:
    """The test's side of the inbox over its own autocommit connection."""

    def __init__(self, conn: AsyncConn, url: str) -> None:
        self.conn = conn
        self.url = url
        self._sent = 0

    async def ingest(
        self, key: str, body: str, debounce: timedelta = timedelta(0), max_wait: timedelta = HOUR
    ) -> Ingested:
        """A new message of conversation `key` (a fresh provider message id each time)."""
        self._sent += 1
        return await inbox_async.message_ingest(
            self.conn, "test", f"m{self._sent}", key, body, None, debounce, max_wait
        )

    async def status(self) -> list[BufferStatus]:
        return await inbox_async.buffer_status(self.conn)

    async def row(self, key: str, dead: bool = False) -> BufferStatus:
        """The buffer_status row of `key` (its open row, or its parked one)."""
        rows = [r for r in await self.status() if r.conversation_key == key and r.dead == dead]
        assert len(rows) == 1, rows
        return rows[0]

    async def now(self) -> datetime:
        """The server clock."""
        row = await (await self.conn.execute("SELECT clock_timestamp()")).fetchone()
        assert row is not None
        return row[0]

    async def states(self) -> dict[str, list[str]]:
        """Each message body's state (the bodies of a test are unique)."""
        cur = await self.conn.execute("SELECT body, state FROM pgcoord.messages ORDER BY id")
        found: dict[str, list[str]] = {}
        for body, state in await cur.fetchall():
            found.setdefault(body, []).append(state)
        return found


def run(test: Callable[[Inbox], Coroutine[Any, Any, None]], db_url: str) -> None:
    """Run the async test body with an Inbox on the test's database."""

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await test(Inbox(conn, db_url))

    asyncio.run(main())


def worker(handler: Handler, db_url: str, **options: Any) -> BufferWorker:
    """A BufferWorker with the test timings unless `options` say otherwise."""
    options.setdefault("name", "w1")
    options.setdefault("lease", LEASE)
    options.setdefault("idle_poll", IDLE_POLL)
    options.setdefault("retry_in", HOUR)
    options.setdefault("grace", timedelta(seconds=10))
    return BufferWorker(handler, db_url, **options)


@asynccontextmanager
async def running(*workers: BufferWorker) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Run the workers for the block; stop them and wait for them (and their errors)
    after it."""
    tasks = [asyncio.create_task(w.run(), name=f"run {w.name}") for w in workers]
    try:
        yield tasks
    finally:
        for w in workers:
            w.stop()
        done, pending = await asyncio.wait(tasks, timeout=30)
        for task in pending:
            task.cancel()
        assert not pending, "a worker did not stop within 30 s"
        for task in done:
            task.result()


async def wait_until(
    condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 15
) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def settled(inbox: Inbox, *, dead: int = 0) -> bool:
    """Nothing buffered but `dead` parked batches."""
    rows = await inbox.status()
    return len(rows) == dead and all(r.dead for r in rows)


def bodies(calls: list[Batch], key: str | None = None) -> list[list[str]]:
    return [b.bodies for b in calls if key is None or b.conversation_key == key]
