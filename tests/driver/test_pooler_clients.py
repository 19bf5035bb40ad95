"""The driver through PgBouncer in transaction mode (see poolerkit): the clients, the
worker and the module calls on a user's own connection, with more client connections
than the pool's server connections, never fail and never leave a prepared statement on
a server session."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from poolerkit import POOL_SIZE, Pooler
from queuekit import Queue
from queuekit import run as run_queue
from queuekit import worker as campaign_worker
from workerkit import HOUR, Inbox, run, running, settled, wait_until, worker

from pgcoord import AsyncClient, Client, inbox, locks
from pgcoord.types import Batch, CampaignMessage, Ingested, Lock
from pgcoord.worker.runtime import PROBE_WAIT

LANES = 16  # concurrent callers, four times the pool's server connections
ROUNDS = 12
Call = Callable[..., Awaitable[Any]]


@pytest.fixture
def threads() -> Iterator[Call]:
    """Run a blocking call in a thread of its own (one per lane), awaitable."""
    with ThreadPoolExecutor(LANES) as executor:

        def call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Awaitable[Any]:
            loop = asyncio.get_running_loop()
            return loop.run_in_executor(executor, functools.partial(method, *args, **kwargs))

        yield call


async def direct(method: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    return await method(*args, **kwargs)


async def lanes(body: Callable[[int], Awaitable[None]]) -> None:
    await asyncio.gather(*(body(i) for i in range(LANES)))


async def exercise(call: Call, client: Client | AsyncClient) -> None:
    """Every lane, round after round: ingests a message that one other lane delivers
    too, contends for the round's lock (never released: one grant per key), and claims
    and completes what is due. Then one claimer drains the rest."""
    stored: list[Ingested] = []
    grants: list[Lock] = []
    completed: list[Batch] = []

    async def finish(bursts: list[Batch]) -> None:
        for burst in bursts:
            assert await call(client.buffer_complete, burst.conversation_key, burst.claim_token)
            completed.append(burst)

    async def lane(i: int) -> None:
        j = i % (LANES // 2)
        for n in range(ROUNDS):
            stored.append(
                await call(
                    client.message_ingest, "wa", f"m{n}-{j}", f"c{j}", f"{n}", debounce=timedelta(0)
                )
            )
            lock = await call(client.lock_acquire, f"round-{n}", f"lane-{i}", timedelta(minutes=5))
            if lock.acquired:
                grants.append(lock)
            await finish(await call(client.buffer_claim, f"lane-{i}", 2))

    await lanes(lane)
    while bursts := await call(client.buffer_claim, "drain", 100):
        await finish(bursts)

    assert len(grants) == ROUNDS, "one grant per round's key"
    firsts = [m.message_id for m in stored if not m.duplicate]
    assert len(firsts) == ROUNDS * LANES // 2, "each message stored once"
    assert len(stored) == 2 * len(firsts)
    delivered = Counter(m for burst in completed for m in burst.message_ids)
    assert sorted(delivered) == sorted(firsts) and set(delivered.values()) == {1}
    assert await call(client.buffer_status) == []


def test_the_sync_client_through_the_pooler(
    pooler: Pooler, pooled_db_url: str, threads: Call
) -> None:
    with Client(pooled_db_url, max_size=LANES) as client:
        asyncio.run(exercise(threads, client))
    assert no_prepared_statements(pooler, pooled_db_url)


def test_the_async_client_through_the_pooler(pooler: Pooler, pooled_db_url: str) -> None:
    async def main() -> None:
        async with AsyncClient(pooled_db_url, max_size=LANES) as client:
            await exercise(direct, client)

    asyncio.run(main())
    assert no_prepared_statements(pooler, pooled_db_url)


def no_prepared_statements(pooler: Pooler, url: str) -> bool:
    found = pooler.prepared_statements(url)
    assert len(found) == POOL_SIZE
    return all(names == [] for names in found.values())


def test_the_worker_through_the_pooler_answers_every_burst_without_listen(
    pooler: Pooler, db_url: str, pooled_db_url: str
) -> None:
    """A BufferWorker whose pool (2 * 8 + 1 connections) and LISTEN go through the
    pooler: LISTEN hears nothing there, so its timed sleep finds every flush."""

    async def test(messages: Inbox) -> None:
        for n in range(3):
            for key in range(20):
                await messages.ingest(f"c{key}", f"c{key} #{n}", max_wait=HOUR)
        calls: list[Batch] = []

        async def handler(burst: Batch) -> None:
            calls.append(burst)

        w = worker(handler, pooled_db_url, concurrency=8)
        async with running(w):
            await wait_until(lambda: settled(messages), "every burst answered")
        assert sorted((b.conversation_key, b.bodies) for b in calls) == sorted(
            (f"c{key}", [f"c{key} #{n}" for n in range(3)]) for key in range(20)
        )
        assert w.processed == 20

    run(test, db_url)
    assert no_prepared_statements(pooler, pooled_db_url)


@pytest.mark.parametrize(
    "options", [{}, {"prepare_threshold": 0}], ids=["default-threshold", "threshold-0"]
)
def test_module_calls_on_a_default_psycopg_connection_through_the_pooler_need_prepare_false(
    pooler: Pooler, pooled_db_url: str, threads: Call, options: dict[str, Any]
) -> None:
    """The driver's calls on a user's `psycopg.connect(url, autocommit=True)`, with
    psycopg's default prepare_threshold (or 0: prepare everything), through the pooler:
    every call executes with prepare=False, so none fails on a statement prepared on
    another server session (08P01 / 26000 / 42P05), and none is left prepared."""
    calls = 50
    with ExitStack() as stack:
        conns = [
            stack.enter_context(psycopg.connect(pooled_db_url, autocommit=True, **options))
            for _ in range(LANES)
        ]

        async def lane(i: int) -> None:
            for n in range(calls):
                lock = await threads(locks.lock_acquire, conns[i], f"k{i}", f"o{i}")
                assert lock.acquired and lock.owner == f"o{i}"
                ingested = await threads(
                    inbox.message_ingest, conns[i], "wa", f"m{i}-{n}", f"c{i}", f"{n}"
                )
                assert not ingested.duplicate

        asyncio.run(lanes(lane))
    assert no_prepared_statements(pooler, pooled_db_url)


def test_a_campaign_worker_whose_listen_goes_through_the_pooler_polls_and_leaves_no_marks(
    pooler: Pooler, db_url: str, pooled_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its LISTEN connection hears nothing there (the probe it notifies from its pool
    never comes): it says so once, polls, and leaves neither LISTEN nor an idle or busy
    mark (session advisory locks) on the pooled server sessions. One that LISTENs on a
    direct connection says nothing of the kind."""

    def advisory_locks() -> int:
        with psycopg.connect(db_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()
        assert row is not None
        return int(row[0])

    async def test(queue: Queue) -> None:
        run_id = await queue.run()
        sent: list[int] = []

        async def send(message: CampaignMessage) -> dict[str, Any]:
            sent.append(message.message_id)
            return {}

        async def all_sent() -> bool:
            return len(sent) == 5

        for name, listen in (("pooled", None), ("direct", db_url)):
            options = {} if listen is None else {"listen": listen}
            with caplog.at_level(logging.INFO, logger="pgcoord"):
                async with running(campaign_worker(send, pooled_db_url, name=name, **options)):
                    await asyncio.sleep(PROBE_WAIT + 0.5)  # the probe's wait, then idle looks
                    await queue.enqueue(run_id, 5)
                    await wait_until(all_sent, "every message sent")
                    sent.clear()
            said = [r.getMessage() for r in caplog.records if "hears nothing" in r.getMessage()]
            assert len(said) == (1 if name == "pooled" else 0), said
            caplog.clear()
            assert advisory_locks() == 0, f"{name}: a mark left behind"

    run_queue(test, db_url)
