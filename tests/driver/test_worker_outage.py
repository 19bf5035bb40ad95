"""The workers through a database outage: every connection of the worker is cut and new
ones are refused for a while, or nothing gets through (a partition), then the database
is back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from queuekit import LEASE, Queue
from queuekit import run as run_queue
from queuekit import worker as campaign_worker
from workerkit import Inbox, run, running, wait_until, worker

from pgcoord.types import Batch, CampaignMessage

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Proxy:
    """A TCP front of the test's server: `cut()` drops every connection through it and
    refuses new ones (accepted and closed at once, counted in `refused`) until
    `restore()`."""

    def __init__(self, url: str) -> None:
        params = conninfo_to_dict(url)
        self.host = str(params.get("host") or "localhost")
        self.port = int(params.get("port") or 5432)
        self.down = False
        self.refused = 0
        self.flowing = asyncio.Event()  # cleared: connections stay open, nothing passes
        self.flowing.set()
        self._links: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    async def _upstream(self) -> Streams:
        if self.host.startswith("/"):  # a socket folder
            return await asyncio.open_unix_connection(f"{self.host}/.s.PGSQL.{self.port}")
        return await asyncio.open_connection(self.host, self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            self.refused += 1
            writer.close()
            return
        up_reader, up_writer = await self._upstream()
        self._links |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.close()
        self._links.discard(writer)

    def cut(self) -> None:
        self.down = True
        for writer in list(self._links):
            writer.close()
        self._links.clear()

    def restore(self) -> None:
        self.down = False

    def freeze(self) -> None:
        """A frozen server or a partition: connections stay open, no byte gets through."""
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    @asynccontextmanager
    async def serving(self, url: str) -> AsyncIterator[str]:
        """Serve on a free local port; yield `url` pointing at the proxy."""
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            yield make_conninfo(url, host="127.0.0.1", port=port)
        finally:
            server.close()
            self.cut()
            for task in list(self._pipes):
                task.cancel()
            await asyncio.gather(*self._pipes, return_exceptions=True)
            await server.wait_closed()


def test_the_worker_survives_a_database_outage(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(inbox: Inbox) -> None:
        proxy = Proxy(db_url)
        back = asyncio.Event()
        calls: list[Batch] = []

        async def handler(burst: Batch) -> None:
            calls.append(burst)
            if burst.bodies == ["during"]:
                await asyncio.wait_for(back.wait(), 30)  # in flight all through the outage

        async with proxy.serving(db_url) as url:
            # a lease the outage cannot outlast: no second delivery of the burst in flight
            w = worker(handler, url, lease=timedelta(seconds=6))
            async with running(w):
                await inbox.ingest("o", "during")
                await wait_until(lambda: _delivered(calls, 1), "the first burst to start")
                proxy.cut()
                await inbox.ingest("n", "while down")

                async def retried() -> bool:
                    return proxy.refused >= 2  # the worker tried to reconnect meanwhile

                await wait_until(retried, "the worker to try to reconnect")
                proxy.restore()
                back.set()
                await wait_until(lambda: _settled_done(inbox), "both bursts completed", 30)
        assert sorted((b.bodies, b.attempt) for b in calls) == [
            (["during"], 1),
            (["while down"], 1),
        ]
        assert await inbox.states() == {"during": ["done"], "while down": ["done"]}
        assert (w.processed, w.failed) == (2, 0)
        # the outage did reach the worker: its LISTEN connection broke
        records = [r for r in caplog.records if r.name == "pgcoord.worker"]
        failures = {r.getMessage() for r in records}
        listening = "listening on pgcoord_buffers failed; retrying: "
        assert any(message.startswith(listening) for message in failures), failures
        # each fault is one line: its cause, not a traceback
        assert [r.getMessage() for r in records if r.exc_info] == []

    with caplog.at_level(logging.WARNING, logger="pgcoord.worker"):
        run(test, db_url)


async def _delivered(calls: list[Batch], n: int) -> bool:
    return len(calls) >= n


async def _settled_done(inbox: Inbox) -> bool:
    return await inbox.status() == []


def test_a_frozen_database_is_noticed_within_the_lease_and_a_stop_is_not_held_up(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(inbox: Inbox) -> None:
        proxy = Proxy(db_url)
        calls: list[Batch] = []

        async def handler(batch: Batch) -> None:
            calls.append(batch)

        lease = timedelta(seconds=3)
        async with proxy.serving(db_url) as url:
            w = worker(handler, url, lease=lease, grace=timedelta(seconds=1))
            task = asyncio.create_task(w.run())
            await inbox.ingest("f", "before")
            await wait_until(lambda: _delivered(calls, 1), "the first batch")
            loop = asyncio.get_running_loop()
            frozen_at = loop.time()
            proxy.freeze()

            def noticed() -> bool:
                return any("did not answer" in r.getMessage() for r in caplog.records)

            async def said_so() -> bool:
                return noticed()

            await wait_until(said_so, "the worker to say the database does not answer", 10)
            assert loop.time() - frozen_at < lease.total_seconds()
            stopping_at = loop.time()
            w.stop()
            await asyncio.wait_for(task, 15)
            # the stop waited at most for one call in flight, the grace and the pool's close
            assert loop.time() - stopping_at < w.call_timeout + 1 + 5
            proxy.thaw()
        records = [r for r in caplog.records if r.name == "pgcoord.worker"]
        assert [r.getMessage() for r in records if r.exc_info] == []

    with caplog.at_level(logging.WARNING, logger="pgcoord.worker"):
        run(test, db_url)


def test_a_claim_no_heartbeat_can_extend_is_let_go_before_its_lease_runs_out(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A partition while a handler runs: no beat reaches the database, and once the
    lease may have run out (another worker may hold the message then) the handler is
    cancelled, before the server's lease ends. Once the database answers again, the
    message comes back as attempt 2, never while attempt 1 still runs."""

    async def test(queue: Queue) -> None:
        proxy = Proxy(db_url)
        loop = asyncio.get_running_loop()
        started: list[tuple[int, float]] = []  # (attempt, when)
        cancelled: list[float] = []

        async def send(message: CampaignMessage) -> dict[str, Any]:
            started.append((message.attempt, loop.time()))
            if message.attempt == 1:
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    cancelled.append(loop.time())
                    raise
            return {}

        async def began() -> bool:
            return bool(started)

        async def was_cancelled() -> bool:
            return bool(cancelled)

        run_id = await queue.run()
        async with proxy.serving(db_url) as url:
            w = campaign_worker(send, url, run_id=run_id, concurrency=1, batch=1, listen=False)
            task = asyncio.create_task(w.run())
            await queue.enqueue(run_id, 1)
            await wait_until(began, "the handler to start")
            proxy.freeze()
            await wait_until(was_cancelled, "the handler to be cancelled", 10)
            # within the lease from the claim, which was sent before the handler started
            assert cancelled[0] - started[0][1] < LEASE.total_seconds()
            proxy.thaw()
            await wait_until(lambda: queue.done(run_id, sent=1), "the message to be sent", 30)
            w.stop()
            await asyncio.wait_for(task, 30)
        assert [attempt for attempt, _ in started] == [1, 2]
        assert started[1][1] > cancelled[0]
        said = [r.getMessage() for r in caplog.records if r.name == "pgcoord.worker"]
        ran_out = (
            f" of run {run_id} may have run out: no heartbeat reached the database for 2.7 s "
            "(its lease less 10%); its handlers are cancelled"
        )
        assert [line for line in said if ran_out in line], said

    with caplog.at_level(logging.WARNING, logger="pgcoord.worker"):
        run_queue(test, db_url)
