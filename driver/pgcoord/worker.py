"""The buffer worker: claims due conversations and calls a handler once per burst.

    async def reply(burst: Burst) -> None:
        text = await my_bot.answer(burst.bodies)        # the messages, in arrival order
        await whatsapp.send(burst.conversation_key, text)

    await BufferWorker(reply, "postgresql://...", concurrency=8).run()

Each burst runs in a task of its own, at most `concurrency` at once: the worker claims
only as many conversations as it has free slots, so its memory stays bounded whatever
the backlog. While the handler runs, a heartbeat extends the claim's lease every third of
the lease; when the claim is lost (its lease ran out and another worker took the
conversation) the handler is cancelled. A handler that returns completes the claim; one
that raises or runs past `timeout` gives the batch back (`buffer_fail`), to be retried
after `retry_in` (or `Retry.after`), and parked as dead by the database after the 5th
failed try.

Side effects in the same database can commit exactly once with the completion:

    async def reply(burst: Burst) -> None:
        text = await my_bot.answer(burst.bodies)
        async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
            await conn.execute("INSERT INTO replies ...", ...)
            await complete_in(conn, burst)   # raises ClaimLost: the insert rolls back

An idle worker sleeps until the next buffer is due, at most `idle_poll`, and wakes at
once when message_ingest opens a window due within a second (LISTEN pgcoord_buffers).

`stop()` (or SIGTERM / SIGINT with `run(handle_signals=True)`) stops claiming, lets the
bursts in flight finish for up to `grace`, then cancels the rest and gives them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from . import inbox_aio, sql
from .errors import PgcoordError
from .inbox import DEFAULT_LEASE, DEFAULT_RETRY_IN
from .lease import default_owner
from .locks import CONNECTION_OPTIONS
from .types import Burst

log = logging.getLogger(__name__)

Handler = Callable[[Burst], Awaitable[None]]
AsyncPool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]

# message_ingest notifies only for windows due within a second: a worker must look at
# least that often to find the others in time.
MAX_IDLE_POLL = timedelta(seconds=1)
# when buffers are due but all held by others, look again after this long
BUSY_PAUSE = 0.05
MAX_ERROR_PAUSE = 5.0


class ClaimLost(PgcoordError):
    """The claim of a burst is no longer current: its lease ran out and another claim
    took the conversation, or it was already completed or given back."""

    def __init__(self, burst: Burst) -> None:
        super().__init__(
            f"claim {burst.claim_token} of conversation {burst.conversation_key!r} "
            "is no longer current"
        )
        self.burst = burst


class Retry(Exception):
    """Raised by a handler to give the batch back with its own delay, for instance the
    provider's Retry-After on HTTP 429. It counts as a failed try, like any error."""

    def __init__(self, after: timedelta, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.after = after


class HandlerTimeout(Exception):
    """The handler ran past the worker's `timeout`."""


# tokens completed by complete_in inside the running handler's task
_completed: ContextVar[set[int] | None] = ContextVar("pgcoord_completed", default=None)


async def complete_in(conn: psycopg.AsyncConnection[Any], burst: Burst) -> None:
    """Complete the burst's claim in the caller's transaction on `conn`, so the caller's
    writes and the completion commit together. Raises ClaimLost (the caller's
    transaction should roll back) when the claim is no longer current."""
    if not await inbox_aio.buffer_complete(conn, burst.conversation_key, burst.claim_token):
        raise ClaimLost(burst)
    completed = _completed.get()
    if completed is not None:
        completed.add(burst.claim_token)


class BufferWorker:
    """Claims due bursts and runs `handler` on each; see the module documentation.

    `conninfo` or `pool` names the database (a pool is borrowed, not closed); the worker
    also opens one connection of its own to LISTEN. `name` is the worker's name in the
    claims (buffer_status.claimed_by); by default host:pid:random.
    """

    def __init__(
        self,
        handler: Handler,
        conninfo: str | None = None,
        *,
        pool: AsyncPool | None = None,
        name: str | None = None,
        concurrency: int = 4,
        lease: timedelta = DEFAULT_LEASE,
        timeout: timedelta | None = None,
        retry_in: timedelta = DEFAULT_RETRY_IN,
        idle_poll: timedelta = MAX_IDLE_POLL,
        grace: timedelta = timedelta(seconds=30),
    ) -> None:
        if (pool is None) == (conninfo is None):
            raise TypeError("BufferWorker takes conninfo or pool (one of them)")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if lease <= timedelta(0):
            raise ValueError(f"lease must be positive, got {lease}")
        if not timedelta(0) < idle_poll <= MAX_IDLE_POLL:
            raise ValueError(f"idle_poll must be positive and at most {MAX_IDLE_POLL}")
        self.handler = handler
        self.name = name or default_owner()
        self.concurrency = concurrency
        self.lease = lease
        self.timeout = timeout
        self.retry_in = retry_in
        self.idle_poll = idle_poll.total_seconds()
        self.grace = grace.total_seconds()
        self._conninfo = conninfo
        self._owns_pool = pool is None
        self._pool = pool or AsyncConnectionPool(
            conninfo or "",
            kwargs=dict(CONNECTION_OPTIONS),
            # the claim loop, and per burst a heartbeat and its completion
            min_size=1,
            max_size=2 * concurrency + 1,
            open=False,
            name="pgcoord-worker",
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.processed = 0  # bursts whose handler returned
        self.failed = 0  # bursts given back after an error or timeout

    def stop(self) -> None:
        """Stop claiming; bursts in flight get `grace` to finish. Safe from a signal
        handler and to call more than once."""
        self._stopping.set()
        self._wake.set()

    async def run(self, *, handle_signals: bool = False) -> None:
        """Work until `stop()`; then finish or give back the bursts in flight."""
        loop = asyncio.get_running_loop()
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stop)
        listener = asyncio.create_task(self._listen(), name="pgcoord-worker listen")
        try:
            if self._owns_pool:
                await self._pool.open()
            await self._claim_loop()
            await self._drain()
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            if self._owns_pool:
                await self._pool.close()
            if handle_signals:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)

    async def _claim_loop(self) -> None:
        error_pause = 0.1
        while not self._stopping.is_set():
            self._wake.clear()
            free = self.concurrency - len(self._tasks)
            pause: float | None = None  # None: until a slot frees
            if free > 0:
                try:
                    pause = await self._claim(free)
                    error_pause = 0.1
                except (psycopg.Error, OSError):
                    log.warning(
                        "claiming failed; trying again in %.1f s", error_pause, exc_info=True
                    )
                    pause, error_pause = error_pause, min(error_pause * 2, MAX_ERROR_PAUSE)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    async def _claim(self, free: int) -> float | None:
        """Claim up to `free` bursts and start them; return how long to sleep (0: look
        again at once)."""
        async with self._pool.connection() as conn:
            bursts = await inbox_aio.buffer_claim(conn, self.name, free, self.lease)
            for burst in bursts:
                task = asyncio.create_task(
                    self._process(burst), name=f"pgcoord-burst {burst.conversation_key}"
                )
                self._tasks.add(task)
                task.add_done_callback(self._finished)
            if len(bursts) == free:
                return None  # every slot is busy: wait until one frees
            due_in = await inbox_aio.buffer_due_in(conn)
        if due_in is None:
            return self.idle_poll
        # due now but nothing more to claim: the rest is held by other claimers
        return min(max(due_in.total_seconds(), BUSY_PAUSE), self.idle_poll)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()

    async def _process(self, burst: Burst) -> None:
        completed: set[int] = set()
        _completed.set(completed)
        handler = asyncio.create_task(self._run_handler(burst), name="pgcoord-handler")
        beat = asyncio.create_task(self._heartbeat(burst, handler), name="pgcoord-heartbeat")
        try:
            await asyncio.wait([handler])
        except asyncio.CancelledError:
            # the worker is shutting down past its grace period
            handler.cancel()
            await asyncio.gather(handler, return_exceptions=True)
            await self._give_back(burst, "worker stopped before the handler finished", timedelta(0))
            raise
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
        if handler.cancelled():  # the heartbeat found the claim lost
            log.warning("claim of %r was lost; its handler was cancelled", burst.conversation_key)
            return
        error = handler.exception()
        if error is None:
            self.processed += 1
            if burst.claim_token not in completed:
                await self._complete(burst)
        elif isinstance(error, ClaimLost):
            log.warning("%s", error)
        elif isinstance(error, Retry):
            self.failed += 1
            await self._give_back(burst, str(error), error.after)
        else:
            self.failed += 1
            reason = (
                str(error)
                if isinstance(error, HandlerTimeout)
                else f"{type(error).__name__}: {error}"
            )
            log.warning(
                "handler failed for %r (attempt %d): %s",
                burst.conversation_key,
                burst.attempt,
                reason,
                exc_info=error,
            )
            await self._give_back(burst, reason, self.retry_in)

    async def _run_handler(self, burst: Burst) -> None:
        if self.timeout is None:
            await self.handler(burst)
            return
        seconds = self.timeout.total_seconds()
        try:
            async with asyncio.timeout(seconds) as scope:
                await self.handler(burst)
        except TimeoutError:
            if scope.expired():
                raise HandlerTimeout(f"handler timed out after {seconds:g} s") from None
            raise

    async def _heartbeat(self, burst: Burst, handler: asyncio.Task[None]) -> None:
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with self._pool.connection() as conn:
                    until = await inbox_aio.buffer_extend(
                        conn, burst.conversation_key, burst.claim_token, self.lease
                    )
            except (psycopg.Error, OSError):
                log.warning(
                    "heartbeat of %r failed, retrying", burst.conversation_key, exc_info=True
                )
                continue
            if until is None:
                handler.cancel()
                return

    async def _complete(self, burst: Burst) -> None:
        try:
            async with self._pool.connection() as conn:
                done = await inbox_aio.buffer_complete(
                    conn, burst.conversation_key, burst.claim_token
                )
        except (psycopg.Error, OSError):
            # the lease runs out and the burst is delivered again
            log.warning("completing %r failed", burst.conversation_key, exc_info=True)
            return
        if not done:
            log.warning("claim of %r was lost before it completed", burst.conversation_key)

    async def _give_back(self, burst: Burst, error: str, retry_in: timedelta) -> None:
        try:
            async with self._pool.connection() as conn:
                await inbox_aio.buffer_fail(
                    conn, burst.conversation_key, burst.claim_token, error, retry_in
                )
        except (psycopg.Error, OSError):
            log.warning("giving back %r failed", burst.conversation_key, exc_info=True)

    async def _drain(self) -> None:
        if not self._tasks:
            return
        log.info("stopping: waiting up to %g s for %d bursts", self.grace, len(self._tasks))
        _, pending = await asyncio.wait(set(self._tasks), timeout=self.grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _listen_conninfo(self) -> str:
        if self._conninfo is not None:
            return self._conninfo
        conninfo = self._pool.conninfo
        if not isinstance(conninfo, str):
            raise TypeError("BufferWorker needs a pool made from a conninfo string")
        return conninfo

    async def _listen(self) -> None:
        """Wake the claim loop on every notification of pgcoord_buffers; reconnect with a
        pause when the connection drops (the timed polling goes on meanwhile)."""
        pause = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._listen_conninfo(), autocommit=True
                ) as conn:
                    await conn.execute(sql.LISTEN_BUFFERS)
                    pause = 0.5
                    async for _ in conn.notifies():
                        self._wake.set()
            except (psycopg.Error, OSError):
                log.warning("listening on %s failed; retrying", sql.BUFFER_CHANNEL, exc_info=True)
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_ERROR_PAUSE)
