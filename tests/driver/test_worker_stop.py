"""BufferWorker waking up (LISTEN, or the timed sleep until the next flush) and stopping
(grace, give-back, cancellation)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from workerkit import Inbox, run, running, wait_until, worker

from pgcoord import inbox_async
from pgcoord.types import Batch

SECOND = timedelta(seconds=1)


@dataclass
class Spy:
    """Counts the worker's claims and tells when it found nothing buffered (idle)."""

    claims: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spy]:
    found = Spy()
    claim, due_in = inbox_async.buffer_claim, inbox_async.buffer_due_in

    async def counted_claim(conn: psycopg.AsyncConnection[Any], *args: Any) -> list[Batch]:
        found.claims += 1
        return await claim(conn, *args)

    async def watched_due_in(conn: psycopg.AsyncConnection[Any]) -> timedelta | None:
        result = await due_in(conn)
        if result is None:
            found.idle.set()  # the worker now sleeps for idle_poll
        return result

    monkeypatch.setattr(inbox_async, "buffer_claim", counted_claim)
    monkeypatch.setattr(inbox_async, "buffer_due_in", watched_due_in)
    yield found


async def asleep(spy: Spy) -> None:
    """Wait until the worker found nothing buffered: from then on it sleeps idle_poll."""
    try:
        await asyncio.wait_for(spy.idle.wait(), 5)
    except TimeoutError:
        pytest.fail("the worker never saw an idle database: buffer_due_in() is not NULL")


def test_a_notification_wakes_an_idle_worker_at_once(db_url: str, spy: Spy) -> None:
    async def test(inbox: Inbox) -> None:
        starts: list[datetime] = []

        async def handler(burst: Batch) -> None:
            starts.append(await inbox.now())

        w = worker(handler, db_url, idle_poll=SECOND)
        async with running(w):
            # asleep for a second from here, unless woken
            await asleep(spy)
            sent = await inbox.ingest("n", "now")  # due at once: message_ingest notifies
            await wait_until(lambda: _any(starts), "the handler to start")
        assert starts[0] - sent.received_at < timedelta(seconds=0.5)

    run(test, db_url)


def test_a_later_flush_is_found_by_the_timed_sleep_without_polling_hard(
    db_url: str, spy: Spy
) -> None:
    async def test(inbox: Inbox) -> None:
        starts: list[datetime] = []

        async def handler(burst: Batch) -> None:
            starts.append(await inbox.now())

        idle_poll = timedelta(seconds=0.5)
        debounce = timedelta(seconds=1.2)  # due in more than a second: no notification
        w = worker(handler, db_url, idle_poll=idle_poll)
        async with running(w):
            await asleep(spy)
            claims_before = spy.claims
            sent = await inbox.ingest("d", "later", debounce=debounce)
            await wait_until(lambda: _any(starts), "the handler to start")
            claims = spy.claims - claims_before
        flush_at = sent.received_at + debounce
        assert flush_at <= starts[0] <= flush_at + idle_poll + timedelta(seconds=0.5)
        # a sleep until the flush, not a tight loop: about one claim per idle_poll
        assert 1 <= claims <= debounce / idle_poll + 3

    run(test, db_url)


async def _any(items: list[Any]) -> bool:
    return bool(items)


def test_stop_lets_the_burst_in_flight_finish_and_claims_nothing_more(db_url: str) -> None:
    async def test(inbox: Inbox) -> None:
        await inbox.ingest("s", "first")
        started = asyncio.Event()
        outcome: list[str] = []

        async def handler(burst: Batch) -> None:
            started.set()
            await asyncio.sleep(0.3)
            outcome.append(f"finished {burst.bodies}")

        # concurrency 1: while the handler runs the worker claims nothing anyway
        w = worker(handler, db_url, concurrency=1, grace=timedelta(seconds=10))
        task = asyncio.create_task(w.run())
        await asyncio.wait_for(started.wait(), 15)
        w.stop()
        await inbox.ingest("s2", "after stop")
        await asyncio.wait_for(task, 15)
        assert outcome == ["finished ['first']"]
        assert await inbox.states() == {"first": ["done"], "after stop": ["waiting"]}
        row = await inbox.row("s2")
        assert (row.claimed_by, row.attempt) == (None, 0)
        assert (w.processed, w.failed) == (1, 0)

    run(test, db_url)


async def check_given_back(inbox: Inbox, key: str) -> None:
    """The burst of `key` is back untouched, claimable at once, and the stop was not
    counted as a failed try."""
    row = await inbox.row(key)
    assert (row.claimed_by, row.attempt, row.last_error) == (None, 0, None)
    assert row.flush_at is not None and row.flush_at <= await inbox.now()
    [again] = await inbox_async.buffer_claim(inbox.conn, "next", 10, SECOND)
    assert (again.conversation_key, again.attempt) == (key, 1)


def sleeper(started: asyncio.Event, outcome: list[str]) -> Callable[[Batch], Awaitable[None]]:
    """A handler that sleeps a minute, telling when it starts and noting its cancel."""

    async def handler(burst: Batch) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    return handler


def test_a_handler_past_the_grace_is_cancelled_and_its_burst_given_back(db_url: str) -> None:
    async def test(inbox: Inbox) -> None:
        await inbox.ingest("g", "slow")
        started = asyncio.Event()
        outcome: list[str] = []
        handler = sleeper(started, outcome)
        grace = 0.3
        w = worker(handler, db_url, grace=timedelta(seconds=grace))
        task = asyncio.create_task(w.run())
        await asyncio.wait_for(started.wait(), 15)
        stopped_at = time.monotonic()
        w.stop()
        await asyncio.wait_for(task, 15)
        assert grace <= time.monotonic() - stopped_at < grace + 5
        assert outcome == ["cancelled"]
        assert (w.processed, w.failed) == (0, 1)
        await check_given_back(inbox, "g")

    run(test, db_url)


def test_a_second_stop_ends_the_grace_at_once(db_url: str) -> None:
    """Ctrl-C again during the grace: the handler still running is cancelled and its
    burst given back without waiting out the 30 s."""

    async def test(inbox: Inbox) -> None:
        await inbox.ingest("h", "slow")
        started = asyncio.Event()
        outcome: list[str] = []
        w = worker(sleeper(started, outcome), db_url, grace=timedelta(seconds=30))
        task = asyncio.create_task(w.run())
        await asyncio.wait_for(started.wait(), 15)
        w.stop()
        w.stop()  # whether its grace has begun or not: none is left
        await asyncio.wait_for(task, 10)  # well within the grace of 30 s
        assert outcome == ["cancelled"]
        assert (w.processed, w.failed) == (0, 1)
        await check_given_back(inbox, "h")

    run(test, db_url)


def test_cancelling_run_gives_the_bursts_in_flight_back_at_once(db_url: str) -> None:
    async def test(inbox: Inbox) -> None:
        await inbox.ingest("x", "slow")
        started = asyncio.Event()

        async def handler(burst: Batch) -> None:
            started.set()
            await asyncio.sleep(30)

        w = worker(handler, db_url, grace=timedelta(seconds=30))
        task = asyncio.create_task(w.run())
        await asyncio.wait_for(started.wait(), 15)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
        await check_given_back(inbox, "x")

    run(test, db_url)
