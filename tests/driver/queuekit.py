"""Helpers of the campaign worker tests: the test's own side of the queue (runs, enqueue,
progress, each message's state, the server clock) and a CampaignWorker with short test
timings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import class_row

from pgcoord import campaigns_async
from pgcoord.types import CampaignProgress
from pgcoord.worker import CampaignWorker

AsyncConn = psycopg.AsyncConnection[Any]

LEASE = timedelta(seconds=3)
IDLE_POLL = timedelta(seconds=0.1)
NO_BACKOFF = (timedelta(0),)


@dataclass(frozen=True)
class State:
    """A row of pgcoord.campaign_message_status (what the tests look at)."""

    message_id: int
    status: str
    attempt: int
    last_error: str | None
    metrics: dict[str, Any] | None


class Queue:
    """The test's side of the campaign queue over its own autocommit connection."""

    def __init__(self, conn: AsyncConn, url: str) -> None:
        self.conn = conn
        self.url = url

    async def run(
        self,
        name: str = "test",
        max_retries: int = 3,
        backoff: Sequence[timedelta] = NO_BACKOFF,
    ) -> int:
        return await campaigns_async.campaign_create(self.conn, name, max_retries, backoff)

    async def enqueue(self, run_id: int, count: int, prefix: str = "r") -> int:
        items = [{"recipient": f"{prefix}{i}", "payload": {"i": i}} for i in range(count)]
        return await campaigns_async.campaign_enqueue(self.conn, run_id, items)

    async def progress(self, run_id: int) -> CampaignProgress:
        [row] = await campaigns_async.campaign_progress(self.conn, run_id)
        return row

    async def states(self, run_id: int) -> dict[int, State]:
        async with self.conn.cursor(row_factory=class_row(State)) as cur:
            await cur.execute(
                "SELECT message_id, status, attempt, last_error, metrics"
                " FROM pgcoord.campaign_message_status WHERE run_id = %s ORDER BY message_id",
                [run_id],
            )
            return {s.message_id: s for s in await cur.fetchall()}

    async def now(self) -> datetime:
        row = await (await self.conn.execute("SELECT clock_timestamp()")).fetchone()
        assert row is not None
        now: datetime = row[0]
        return now

    async def done(self, run_id: int, sent: int, failed: int = 0) -> bool:
        p = await self.progress(run_id)
        return (p.sent, p.failed, p.pending, p.processing) == (sent, failed, 0, 0)


def run(test: Callable[[Queue], Coroutine[Any, Any, None]], db_url: str) -> None:
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await test(Queue(conn, db_url))

    asyncio.run(main())


def worker(handler: Any, db_url: str, **options: Any) -> CampaignWorker:
    """A CampaignWorker with the test timings unless `options` say otherwise."""
    options.setdefault("name", "w1")
    options.setdefault("lease", LEASE)
    options.setdefault("idle_poll", IDLE_POLL)
    options.setdefault("grace", timedelta(seconds=10))
    return CampaignWorker(handler, db_url, **options)
