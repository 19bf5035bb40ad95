"""The buffer worker: claims due conversations and calls a handler once per burst.

    async def reply(burst: Burst) -> None:
        text = await my_bot.answer(burst.bodies)        # the messages, in arrival order
        await whatsapp.send(burst.conversation_key, text)

    await BufferWorker(reply, "postgresql://...", concurrency=8).run()

Each burst runs in a task of its own, at most `concurrency` at once: the worker claims
only as many conversations as it has free slots, so it never holds more claims than it
runs handlers, and its memory stays bounded whatever the backlog. While the handler runs,
a heartbeat extends the claim's lease every third of the lease; when the claim is lost
(its lease ran out and another worker took the conversation) the handler is cancelled
and the burst is left to its new holder. A handler that returns completes the claim; one
that raises or runs past `timeout` gives the batch back (`buffer_fail`), to be retried
after `retry_in` (or `Retry.after`), and parked as dead by the database after the 5th
failed try (new messages of the conversation still flow).

Side effects in the same database can commit exactly once with the completion:

    async def reply(burst: Burst) -> None:
        text = await my_bot.answer(burst.bodies)
        async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
            await conn.execute("INSERT INTO replies ...", ...)
            await complete_in(conn, burst)   # raises ClaimLost: the insert rolls back

The worker then leaves the claim alone: it does not complete it again.

An idle worker sleeps until the next buffer is due, at most `idle_poll`, and wakes at
once when message_ingest opens a window due within a second (LISTEN pgcoord_buffers, set
up before the first claim). Through a transaction-mode pooler, where LISTEN does not
work, the timed sleep alone still finds every flush within `idle_poll`.

`stop()` (or SIGTERM / SIGINT with `run(handle_signals=True)`) stops claiming, lets the
bursts in flight finish for up to `grace`, then cancels their handlers and gives them
back (`buffer_release`: claimable again at once, not counted as a failed try).
Cancelling `run()` gives the bursts in flight back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from . import inbox_async as inbox_aio
from . import sql
from .config import BUFFER_LEASE as DEFAULT_LEASE
from .config import BUFFER_RETRY_IN as DEFAULT_RETRY_IN
from .config import CONNECTION_OPTIONS
from .errors import ClaimLost as ClaimLost
from .errors import HandlerTimeout
from .errors import Retry as Retry
from .lease import default_owner
from .types import Batch as Burst

log = logging.getLogger(__name__)

Handler = Callable[[Burst], Awaitable[None]]
T = TypeVar("T")
AsyncPool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]

# message_ingest notifies only for windows due within a second: a worker must look at
# least that often to find the others in time.
MAX_IDLE_POLL = timedelta(seconds=1)
# when buffers are due but all held by others (a concurrent claim's row locks), look
# again after this long, doubling up to idle_poll while nothing can be claimed
BUSY_PAUSE = 0.05
MAX_ERROR_PAUSE = 5.0
# how long run() waits for LISTEN before its first claim (it goes on without it)
LISTEN_TIMEOUT = 5.0
# the database parks a batch as dead after this many failed tries (for the log only)
DEAD_AFTER = 5
STOPPED = "worker stopped before the handler finished"


@dataclass(eq=False)
class _InFlight:
    """One claimed burst while the worker holds it."""

    burst: Burst
    handler: asyncio.Task[None] | None = None
    completed: bool = False  # complete_in succeeded inside the handler
    lost: bool = False  # the heartbeat found the claim taken by another
    stopped: bool = False  # cancelled by the worker's stop, past its grace
    started: float = field(default_factory=time.monotonic)

    def cancel(self) -> None:
        """Cancel the handler because the worker stops (the burst is given back)."""
        self.stopped = True
        if self.handler is not None:
            self.handler.cancel()


# the burst of the running handler's task, for complete_in
_current: ContextVar[_InFlight | None] = ContextVar("pgcoord_burst", default=None)


async def complete_in(conn: psycopg.AsyncConnection[Any], burst: Burst) -> None:
    """Complete the burst's claim in the caller's transaction on `conn`, so the caller's
    writes and the completion commit together. Raises ClaimLost (the caller's
    transaction should roll back) when the claim is no longer current.

    Inside the worker's handler, the worker then neither completes the claim again nor
    takes the end of its heartbeat for a lost claim."""
    if not await inbox_aio.buffer_complete(conn, burst.conversation_key, burst.claim_token):
        raise ClaimLost(burst)
    flight = _current.get()
    if flight is not None and flight.burst.claim_token == burst.claim_token:
        flight.completed = True


async def _resolved(value: Any) -> Any:
    """A pool's conninfo or kwargs: the value, or what its (async) callable returns."""
    if callable(value):
        value = value()
        if inspect.isawaitable(value):
            value = await value
    return value


class BufferWorker:
    """Claims due bursts and runs `handler` on each; see the module documentation.

    `conninfo` or `pool` names the database (a pool is borrowed, not closed; it needs
    about 2 * concurrency + 1 connections); the worker also opens one connection of its
    own to LISTEN. `name` is the worker's name in the claims (buffer_status.claimed_by);
    by default host:pid:random. `lease` is the claims' lease, kept alive by the heartbeat;
    `timeout` (default none) bounds each handler call; `retry_in` is the delay before a
    failed burst is claimable again; `grace` is how long `stop()` lets bursts finish.
    `processed` and `failed` count the bursts completed and given back.
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
        if timeout is not None and timeout <= timedelta(0):
            raise ValueError(f"timeout must be positive, got {timeout}")
        if retry_in < timedelta(0):
            raise ValueError(f"retry_in must not be negative, got {retry_in}")
        if grace < timedelta(0):
            raise ValueError(f"grace must not be negative, got {grace}")
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
        self._flights: dict[asyncio.Task[None], _InFlight] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.processed = 0  # bursts completed
        self.failed = 0  # bursts given back after an error, a timeout or a stop

    def stop(self) -> None:
        """Stop claiming; bursts in flight get `grace` to finish. Safe from a signal
        handler of the worker's event loop and to call more than once; from another
        thread, use `loop.call_soon_threadsafe(worker.stop)`."""
        self._stopping.set()
        self._wake.set()

    async def run(self, *, handle_signals: bool = False) -> None:
        """Work until `stop()`; then finish or give back the bursts in flight."""
        loop = asyncio.get_running_loop()
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stop)
        listening = asyncio.Event()
        listener = asyncio.create_task(self._listen(listening), name="pgcoord-worker listen")
        try:
            if self._owns_pool:
                await self._pool.open()
            # LISTEN before the first claim: whatever that claim misses notifies later
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listening.wait(), LISTEN_TIMEOUT)
            log.info(
                "worker %s started: concurrency %d, lease %g s",
                self.name,
                self.concurrency,
                self.lease.total_seconds(),
            )
            await self._claim_loop()
            await self._drain(self.grace)
        except asyncio.CancelledError:
            self._stopping.set()
            await self._drain(0)
            raise
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            if self._owns_pool:
                await self._pool.close()
            if handle_signals:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)
        log.info(
            "worker %s stopped: bursts completed %d, given back %d",
            self.name,
            self.processed,
            self.failed,
        )

    async def _claim_loop(self) -> None:
        error_pause = 0.1
        busy_pause = BUSY_PAUSE
        while not self._stopping.is_set():
            self._wake.clear()
            free = self.concurrency - len(self._flights)
            pause: float | None = None  # None: until a slot frees (or a stop)
            if free > 0:
                try:
                    claimed, pause = await self._claim(free)
                    error_pause = 0.1
                except (psycopg.Error, OSError):
                    log.warning(
                        "claiming failed; trying again in %.1f s", error_pause, exc_info=True
                    )
                    pause, error_pause = error_pause, min(error_pause * 2, MAX_ERROR_PAUSE)
                else:
                    if claimed or pause != 0:
                        busy_pause = BUSY_PAUSE
                    else:
                        # due now, yet nothing to claim: held by concurrent claims
                        pause, busy_pause = busy_pause, min(busy_pause * 2, self.idle_poll)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    async def _claim(self, free: int) -> tuple[int, float | None]:
        """Claim up to `free` bursts and start them; return how many, and how long to
        sleep (None: until a slot frees; 0: a buffer is due now)."""
        async with self._pool.connection() as conn:
            bursts = await inbox_aio.buffer_claim(conn, self.name, free, self.lease)
            for burst in bursts:
                flight = _InFlight(burst)
                task = asyncio.create_task(
                    self._process(flight), name=f"pgcoord-burst {burst.conversation_key}"
                )
                self._flights[task] = flight
                task.add_done_callback(self._finished)
            if len(bursts) == free:
                return len(bursts), None  # every slot is busy: wait until one frees
            due_in = await inbox_aio.buffer_due_in(conn)
        if due_in is None:
            return len(bursts), self.idle_poll
        return len(bursts), min(due_in.total_seconds(), self.idle_poll)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._flights.pop(task, None)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("burst task failed", exc_info=task.exception())

    async def _process(self, flight: _InFlight) -> None:
        burst = flight.burst
        if flight.stopped:  # the worker stopped before this task ever ran
            self.failed += 1
            await self._release(burst)
            return
        _current.set(flight)  # this task's context, copied into the handler's
        handler = asyncio.create_task(self._run_handler(burst), name="pgcoord-handler")
        flight.handler = handler
        beat = asyncio.create_task(self._heartbeat(flight), name="pgcoord-heartbeat")
        try:
            await asyncio.wait([handler])
        except asyncio.CancelledError:
            # torn down from outside run() (the event loop is closing): no grace
            handler.cancel()
            await asyncio.gather(handler, return_exceptions=True)
            await self._release(burst)
            raise
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
        await self._settle(flight, handler)

    async def _settle(self, flight: _InFlight, handler: asyncio.Task[None]) -> None:
        """Complete the burst or give it back, by how its handler ended; log one line."""
        burst = flight.burst
        key = burst.conversation_key
        seconds = time.monotonic() - flight.started
        cancelled = handler.cancelled()
        error = None if cancelled else handler.exception()
        if not cancelled and error is None:
            if flight.completed or await self._complete(burst):
                self.processed += 1
                count = len(burst.message_ids)
                log.info(
                    "completed %r: %d message%s, attempt %d, %.3f s",
                    key,
                    count,
                    "" if count == 1 else "s",
                    burst.attempt,
                    seconds,
                )
        elif flight.completed:
            # complete_in committed; what the handler did after that changes nothing
            self.processed += 1
            log.warning(
                "completed %r in the handler's transaction, but the handler then ended with: %s",
                key,
                "cancellation" if cancelled else f"{type(error).__name__}: {error}",
            )
        elif flight.lost:
            log.warning(
                "lost the claim of %r (attempt %d) after %.3f s: its handler was cancelled",
                key,
                burst.attempt,
                seconds,
            )
        elif isinstance(error, ClaimLost):
            log.warning("%s; the burst is left to the current claim", error)
        elif flight.stopped:
            self.failed += 1
            log.warning("gave back %r (attempt %d): %s", key, burst.attempt, STOPPED)
            await self._release(burst)
        else:
            self.failed += 1
            retry_in = error.after if isinstance(error, Retry) else self.retry_in
            if error is None:
                reason = "handler was cancelled"
            elif isinstance(error, Retry | HandlerTimeout):
                reason = str(error)
            else:
                reason = f"{type(error).__name__}: {error}"
            # the handler's traceback on its first and its last try
            traceback = (
                error
                if not isinstance(error, Retry | HandlerTimeout)
                and (burst.attempt == 1 or burst.attempt >= DEAD_AFTER)
                else None
            )
            if burst.attempt >= DEAD_AFTER:
                log.error(
                    "parked %r as dead after %d failed tries: %s",
                    key,
                    burst.attempt,
                    reason,
                    exc_info=traceback,
                )
            else:
                log.warning(
                    "gave back %r (attempt %d, retry in %g s): %s",
                    key,
                    burst.attempt,
                    retry_in.total_seconds(),
                    reason,
                    exc_info=traceback,
                )
            await self._give_back(burst, reason, retry_in)

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

    async def _heartbeat(self, flight: _InFlight) -> None:
        burst = flight.burst
        interval = self.lease.total_seconds() / 3
        pause = interval
        while True:
            await asyncio.sleep(pause)
            try:
                async with self._pool.connection() as conn:
                    until = await inbox_aio.buffer_extend(
                        conn, burst.conversation_key, burst.claim_token, self.lease
                    )
            except Exception:
                # try again sooner: two missed beats and the lease may run out
                pause = interval / 3
                log.warning(
                    "heartbeat of %r failed, retrying", burst.conversation_key, exc_info=True
                )
                continue
            pause = interval
            if until is None:
                if not flight.completed:  # not by complete_in: another claim took it
                    flight.lost = True
                    if flight.handler is not None:
                        flight.handler.cancel()
                return

    async def _complete(self, burst: Burst) -> bool:
        done = await self._call(
            "completing",
            burst,
            lambda conn: inbox_aio.buffer_complete(conn, burst.conversation_key, burst.claim_token),
        )
        if done is False:
            log.warning(
                "claim of %r (attempt %d) was lost before it completed: it is delivered again",
                burst.conversation_key,
                burst.attempt,
            )
        return bool(done)

    async def _release(self, burst: Burst) -> None:
        """Give the burst back untouched (the worker is stopping): not a failed try."""
        await self._call(
            "giving back",
            burst,
            lambda conn: inbox_aio.buffer_release(conn, burst.conversation_key, burst.claim_token),
        )

    async def _give_back(self, burst: Burst, error: str, retry_in: timedelta) -> None:
        await self._call(
            "giving back",
            burst,
            lambda conn: inbox_aio.buffer_fail(
                conn, burst.conversation_key, burst.claim_token, error, retry_in
            ),
        )

    async def _call(
        self,
        what: str,
        burst: Burst,
        call: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
    ) -> T | None:
        """`call` on a pooled connection; None, logged, when it fails: the claim's lease
        then runs out and the burst is delivered again."""
        try:
            async with self._pool.connection() as conn:
                return await call(conn)
        except Exception:
            log.warning("%s %r failed", what, burst.conversation_key, exc_info=True)
            return None

    async def _drain(self, grace: float) -> None:
        """Wait up to `grace` for the bursts in flight, then cancel the handlers of the
        rest and wait while they are given back."""
        if not self._flights:
            return
        if grace > 0:
            log.info(
                "stopping: waiting up to %g s for %d bursts in flight", grace, len(self._flights)
            )
            await asyncio.wait(set(self._flights), timeout=grace)
        for flight in self._flights.values():
            flight.cancel()
        if self._flights:
            await asyncio.wait(set(self._flights))

    async def _listen(self, listening: asyncio.Event) -> None:
        """Wake the claim loop on every notification of pgcoord_buffers; reconnect with a
        pause when the connection drops (the timed polling goes on meanwhile). Sets
        `listening` once LISTEN is in force, or the first try failed."""
        pause = 0.5
        while True:
            try:
                conninfo = await _resolved(self._pool.conninfo)
                kwargs = dict(await _resolved(self._pool.kwargs) or {})
                kwargs.update(autocommit=True)
                async with await psycopg.AsyncConnection.connect(conninfo, **kwargs) as conn:
                    await conn.execute(sql.LISTEN_BUFFERS)
                    if listening.is_set():
                        self._wake.set()  # notifications may have been missed meanwhile
                    listening.set()
                    pause = 0.5
                    async for _ in conn.notifies():
                        self._wake.set()
            except Exception:
                log.warning("listening on %s failed; retrying", sql.BUFFER_CHANNEL, exc_info=True)
            listening.set()
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_ERROR_PAUSE)
