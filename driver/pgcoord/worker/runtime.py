"""The worker runtime: one claim loop for every kind of work.

A kind of work (a conversation's buffered batch, a campaign message) is a `Work` adapter:
how to claim items, how long until the next is due, and how to extend, complete, fail,
snooze or give back one of them. The runtime owns everything else, once:

- slots: at most `concurrency` handlers run at once, and the runtime holds at most
  `concurrency + prefetch` claims, so memory stays bounded whatever the backlog; it claims
  up to `batch` items in one call when that many places are free, or as soon as no
  claimed item is waiting for a slot (a handler never idles for the sake of batching);
- admission: one loop starts claimed items as slots free up; with a shared rate budget
  it first spends one token per item for all that can start now, in one call, so the
  fleet never starts more handlers than the budget allows;
- per item: a task that waits for its admission, runs the handler under its timeout,
  and settles the item by how the handler ended; a heartbeat extends the claim every
  third of the lease, and cancels the handler when the claim is lost;
- completions are batched: successes queue up while a completion call is in flight, and
  the next call completes all of them (one round trip for many, when the work allows);
- wake-ups: LISTEN on the work's channel (on the pool's server, a direct connection of
  its own, or none, chosen with `listen`), and otherwise a timed sleep until the next
  item is due, at most `idle_poll`;
- stop: `stop()` or SIGTERM/SIGINT stops claiming, lets handlers finish for `grace`,
  then cancels them and gives their items back without spending a try;
- outages: a failing claim is retried with a doubling pause; a failing settle is logged
  and left to the lease (the item is delivered again).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import inspect
import logging
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Generic, LiteralString, TypeVar

import psycopg
from psycopg import sql as pgsql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .. import rates_async
from ..config import async_pool
from ..errors import ClaimLost, HandlerTimeout, RateLimited, Retry
from ..lease import default_owner

# one logger for every kind of worker: operators filter on it
log = logging.getLogger("pgcoord.worker")

Item = TypeVar("Item")
T = TypeVar("T")
AsyncConn = psycopg.AsyncConnection[Any]
AsyncPool = AsyncConnectionPool[AsyncConn]

# when items are due but all held by others (a concurrent claim's row locks), look again
# after this long, doubling up to idle_poll while nothing can be claimed
BUSY_PAUSE = 0.05
MAX_ERROR_PAUSE = 5.0
# how long run() waits for LISTEN before its first claim (it goes on without it)
LISTEN_TIMEOUT = 5.0
# how many queued successes one completion call takes at most
COMPLETE_BATCH = 100
# how long a success may wait for others to share its completion call, when the work
# completes in batches: until a claim's worth has finished, no handler runs, or this
COMPLETE_LINGER = 0.05
STOPPED = "worker stopped before the handler finished"
# the faults of the database or the network: logged as one line each, not a traceback
FAULTS = (psycopg.OperationalError, PoolTimeout, OSError, TimeoutError)


@dataclass(frozen=True)
class Failure:
    """What became of an item given back after a failed try."""

    final: bool  # no retries left: parked (buffers) or failed for good (campaigns)
    retry_in: timedelta | None = None  # when it is claimable again, when known


@dataclass(frozen=True)
class RateBudget:
    """A shared rate limit (pgcoord.rate_acquire): every worker given the same `key`
    starts at most `per_second` handlers a second fleet-wide, with bursts up to `burst`."""

    key: str
    per_second: float
    burst: int


class Work(ABC, Generic[Item]):
    """A kind of work: the calls the runtime makes on its items. Each method gets a
    pooled connection and makes one call of pgcoord's API (one round trip)."""

    noun: ClassVar[str]  # what an item is called in the log ("burst", "message")
    channel: ClassVar[LiteralString]  # the LISTEN channel notified when items are due
    max_idle_poll: ClassVar[timedelta]  # the longest sleep that still finds due items
    # log lines of a failed try: fields item, attempt, reason, seconds
    retry_line: ClassVar[str] = (
        "gave back {item} (attempt {attempt}, retry in {seconds:g} s): {reason}"
    )
    final_line: ClassVar[str] = "gave up {item} after {attempt} failed tries: {reason}"

    @abstractmethod
    def describe(self, item: Item) -> str:
        """The item in a log line."""

    def subject(self, item: Item) -> str:
        """The item in a sentence ("conversation 'x'", "message 42 of run 3")."""
        return self.describe(item)

    def summary(self, item: Item) -> str:
        """The item in the line logged when it completes."""
        return self.describe(item)

    @abstractmethod
    def token(self, item: Item) -> int:
        """The claim token of the item."""

    @abstractmethod
    def attempt(self, item: Item) -> int:
        """Which try this claim of the item is (1 for the first)."""

    @abstractmethod
    async def claim(self, conn: AsyncConn, worker: str, limit: int, lease: timedelta) -> list[Item]:
        """Claim up to `limit` due items for `lease`."""

    @abstractmethod
    async def due_in(self, conn: AsyncConn) -> timedelta | None:
        """How long until an item is due (zero: now), None when there is none."""

    @abstractmethod
    async def extend(self, conn: AsyncConn, item: Item, lease: timedelta) -> datetime | None:
        """Extend the claim; None when it is no longer current."""

    # whether `complete` makes one call for many items (then successes wait a moment for
    # others to share it), or one call each
    completes_in_batches: ClassVar[bool] = False

    @abstractmethod
    async def complete(self, conn: AsyncConn, done: Sequence[tuple[Item, Any]]) -> list[bool]:
        """Complete the items with their handlers' results; per item, whether its claim
        was current."""

    def outcome(self, item: Item, result: Any, seconds: float) -> Any:
        """What `complete` gets for an item whose handler returned `result` after
        `seconds`: by default the result itself."""
        return result

    @abstractmethod
    async def complete_one(self, conn: AsyncConn, item: Item) -> bool:
        """Complete one item on the caller's connection (for `complete_in`)."""

    @abstractmethod
    async def fail(
        self, conn: AsyncConn, item: Item, error: str, retry_after: timedelta | None
    ) -> Failure | None:
        """Give the item back after a failed try (counted); None when the claim is no
        longer current. `retry_after`: the handler's own delay, if it asked for one."""

    async def snooze(self, conn: AsyncConn, item: Item, delay: timedelta) -> bool | Failure | None:
        """Give the item back for `delay` without spending a try, when the work can (the
        provider's rate limit is not the item's fault); else a failed try."""
        return await self.fail(conn, item, f"rate limited for {delay.total_seconds():g} s", delay)

    @abstractmethod
    async def release(self, conn: AsyncConn, item: Item) -> bool:
        """Give the item back untouched (the worker is stopping): not a failed try."""

    # how often the runtime calls `housekeep` (None: never)
    housekeeping_every: timedelta | None = None

    async def housekeep(self, conn: AsyncConn, worker: str) -> None:
        """Periodic upkeep of the work's tables, if any."""


@dataclass(eq=False)
class Flight(Generic[Item]):
    """One claimed item while the worker holds it."""

    work: Work[Item]
    item: Item
    # resolved by the admission loop: True to start (a slot, and the rate budget), False
    # when the worker stopped first
    admitted: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    handler: asyncio.Task[Any] | None = None
    running: bool = False  # admitted: its handler holds a slot
    completed: bool = False  # complete_in succeeded inside the handler
    lost: bool = False  # the heartbeat found the claim taken by another
    stopped: bool = False  # cancelled by the worker's stop, past its grace
    beating: bool = True  # the heartbeat goes on: until the handler has ended
    claimed: float = field(default_factory=time.monotonic)
    started: float = 0.0  # when its handler started (time.monotonic)
    ended: float = 0.0  # when its handler ended

    def cancel(self) -> None:
        """Cancel the handler because the worker stops (the item is given back)."""
        self.stopped = True
        if not self.admitted.done():
            self.admitted.set_result(False)
        if self.handler is not None:
            self.handler.cancel()


# the flight of the running handler's task, for complete_in
current: ContextVar[Flight[Any] | None] = ContextVar("pgcoord_flight", default=None)


async def complete_in(conn: AsyncConn, item: Any) -> None:
    """Complete the item's claim in the caller's transaction on `conn`, so the caller's
    writes and the completion commit together. Raises ClaimLost (the caller's transaction
    should roll back) when the claim is no longer current.

    Inside a worker's handler, the worker then neither completes the claim again nor
    takes the end of its heartbeat for a lost claim. Outside a handler, pass a `Batch`."""
    flight = current.get()
    own = flight is not None and flight.item == item  # the running handler's own item
    if flight is not None and own:
        work: Work[Any] = flight.work
    else:
        from .buffers import BufferWork  # here: buffers imports this module

        work = BufferWork()
    if not await work.complete_one(conn, item):
        raise ClaimLost(item, work.subject(item))
    if flight is not None and own:
        flight.completed = True


class UncommittedCompletion(Exception):
    """The handler returned, but the completion it made with complete_in rolled back."""


def _one_line(exc: BaseException) -> str:
    """An exception as one line: its class and its first line of text."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


async def _resolved(value: Any) -> Any:
    """A pool's conninfo or kwargs: the value, or what its (async) callable returns."""
    if callable(value):
        value = value()
        if inspect.isawaitable(value):
            value = await value
    return value


def _positive(name: str, value: timedelta) -> None:
    if value <= timedelta(0):
        raise ValueError(f"{name} must be positive, got {value}")


class Runtime(Generic[Item]):
    """Claims items of `work` and runs `handler` on each; see the module documentation.

    `conninfo` or `pool` names the database (a pool is borrowed, not closed; it needs
    about 2 * concurrency + 2 connections). `listen`: True to LISTEN on a connection to
    the pool's server, a conninfo to LISTEN on that server instead (a direct connection
    when the pool goes through a transaction-mode pooler, where LISTEN hears nothing),
    False to rely on the timed sleep alone. `processed` and `failed` count the items
    completed and given back.
    """

    def __init__(
        self,
        work: Work[Item],
        handler: Callable[[Item], Awaitable[Any]],
        conninfo: str | None,
        *,
        pool: AsyncPool | None,
        name: str | None,
        concurrency: int,
        batch: int | None,
        prefetch: int,
        lease: timedelta,
        timeout: timedelta | None,
        idle_poll: timedelta | None,
        grace: timedelta,
        listen: bool | str,
        rate: RateBudget | None,
    ) -> None:
        if (pool is None) == (conninfo is None):
            raise TypeError(f"{type(self).__name__} takes conninfo or pool (one of them)")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        batch = concurrency if batch is None else batch
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        if prefetch < 0:
            raise ValueError(f"prefetch must not be negative, got {prefetch}")
        _positive("lease", lease)
        if timeout is not None:
            _positive("timeout", timeout)
        if grace < timedelta(0):
            raise ValueError(f"grace must not be negative, got {grace}")
        idle_poll = work.max_idle_poll if idle_poll is None else idle_poll
        if not timedelta(0) < idle_poll <= work.max_idle_poll:
            raise ValueError(f"idle_poll must be positive and at most {work.max_idle_poll}")
        if rate is not None:
            batch = min(batch, rate.burst)  # a claim's cost must fit the bucket
        self.work = work
        self.handler = handler
        self.name = name or default_owner()
        self.concurrency = concurrency
        self.batch = batch
        self.capacity = concurrency + prefetch
        self.lease = lease
        # the longest one database call may take: a server that stops answering (frozen,
        # partitioned) is noticed well within the lease, and a stop is not held up by it
        self.call_timeout = min(max(lease.total_seconds() / 2, 1.0), 10.0)
        self.timeout = timeout
        self.idle_poll = idle_poll.total_seconds()
        self.grace = grace.total_seconds()
        self.listen = listen
        self.rate = rate
        self._owns_pool = pool is None
        self._pool = pool or async_pool(
            conninfo or "",
            # the claim loop and completions, and per item a heartbeat and a settle
            max_size=2 * concurrency + 2,
            name="pgcoord-worker",
        )
        self._flights: dict[asyncio.Task[None], Flight[Item]] = {}
        self._sweep: asyncio.Task[None] | None = None
        self._abandoned: set[asyncio.Task[Any]] = set()  # calls past call_timeout
        self._queued: collections.deque[Flight[Item]] = collections.deque()  # to admit
        self._running = 0  # handlers holding a slot
        self._admit = asyncio.Event()  # something to admit, or a slot freed, or a stop
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._done: list[tuple[Flight[Item], Any, asyncio.Future[bool | None]]] = []
        self._done_ready = asyncio.Event()
        self.processed = 0  # items completed
        self.failed = 0  # items given back after an error, a timeout or a stop

    def stop(self) -> None:
        """Stop claiming; items in flight get `grace` to finish. Safe from a signal
        handler of the worker's event loop and to call more than once; from another
        thread, use `loop.call_soon_threadsafe(worker.stop)`."""
        self._stopping.set()
        self._wake.set()
        self._admit.set()
        self._done_ready.set()

    async def run(self, *, handle_signals: bool = False) -> None:
        """Work until `stop()`; then finish or give back the items in flight."""
        loop = asyncio.get_running_loop()
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stop)
        listening = asyncio.Event()
        helpers = [
            asyncio.create_task(self._complete_loop(), name="pgcoord-worker complete"),
            asyncio.create_task(self._admit_loop(), name="pgcoord-worker admit"),
        ]
        if self.listen is False:
            listening.set()
            log.info("worker %s: no LISTEN; polling every %g s at most", self.name, self.idle_poll)
        else:
            helpers.append(
                asyncio.create_task(self._listen(listening), name="pgcoord-worker listen")
            )
        if self.work.housekeeping_every is not None:
            helpers.append(asyncio.create_task(self._housekeep(), name="pgcoord-worker upkeep"))
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
            for task in [*helpers, *([self._sweep] if self._sweep else []), *self._abandoned]:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            self._fail_pending_completions()
            if self._owns_pool:
                await self._pool.close()
            if handle_signals:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)
        log.info(
            "worker %s stopped: %ss completed %d, given back %d",
            self.name,
            self.work.noun,
            self.processed,
            self.failed,
        )

    # -- the database -----------------------------------------------------------------

    async def _db(self, call: Callable[[AsyncConn], Awaitable[T]]) -> T:
        """`call` on a pooled connection, bounded by `call_timeout`: a database that stops
        answering raises TimeoutError then, at once. The stuck call is cancelled and left
        to end in the background (psycopg then tries to cancel its query on the server,
        which takes seconds when nothing answers), so the worker goes on meanwhile."""

        async def pooled() -> T:
            async with self._pool.connection(timeout=self.call_timeout) as conn:
                return await call(conn)

        task = asyncio.create_task(pooled(), name="pgcoord-call")
        try:
            done, _ = await asyncio.wait({task}, timeout=self.call_timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            self._abandoned.add(task)
            task.add_done_callback(self._abandoned.discard)
            raise TimeoutError
        return task.result()

    def _fault(self, exc: BaseException, message: str, *args: Any) -> None:
        """Log a failed call: one line for a fault of the database or the network (and
        sweep the pool's dead connections at once, not one call at a time), the
        traceback for anything else."""
        if isinstance(exc, FAULTS):
            cause = _one_line(exc)
            if isinstance(exc, TimeoutError) and not str(exc):
                cause = f"the database did not answer within {self.call_timeout:g} s"
            log.warning(message + ": %s", *args, cause)
            if self._sweep is None or self._sweep.done():
                self._sweep = asyncio.create_task(self._pool.check(), name="pgcoord-sweep")
        else:
            log.warning(message, *args, exc_info=exc)

    # -- claiming ---------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        error_pause = 0.1
        busy_pause = BUSY_PAUSE
        while not self._stopping.is_set():
            self._wake.clear()
            want = self._want()
            pause: float | None = None  # None: until a slot frees (or a stop)
            if want > 0:
                try:
                    claimed, pause = await self._claim(want)
                    error_pause = 0.1
                except (psycopg.Error, *FAULTS) as exc:
                    self._fault(exc, "claiming failed; trying again in %.1f s", error_pause)
                    pause, error_pause = error_pause, min(error_pause * 2, MAX_ERROR_PAUSE)
                else:
                    if claimed or pause != 0:
                        busy_pause = BUSY_PAUSE
                    else:
                        # due now, yet nothing to claim: held by concurrent claims
                        pause, busy_pause = busy_pause, min(busy_pause * 2, self.idle_poll)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    def _want(self) -> int:
        """How many items to claim now: a full batch when that many places are free, or
        whatever is free once no claimed item waits for a slot; else none."""
        free = self.capacity - len(self._flights)
        waiting = sum(1 for f in self._flights.values() if not f.running)
        if free >= self.batch:
            return self.batch
        if free > 0 and waiting == 0:
            return min(free, self.batch)
        return 0

    async def _claim(self, want: int) -> tuple[int, float | None]:
        """Claim up to `want` items and start them; return how many, and how long to
        sleep (None: until a place frees; 0: an item is due now)."""
        items = await self._db(lambda conn: self.work.claim(conn, self.name, want, self.lease))
        for item in items:
            flight = Flight(self.work, item)
            task = asyncio.create_task(self._process(flight), name="pgcoord-item")
            self._flights[task] = flight
            self._queued.append(flight)
            task.add_done_callback(self._finished)
        if items:
            self._admit.set()
        if len(items) == want:
            return len(items), None if self._want() == 0 else 0
        due_in = await self._db(self.work.due_in)
        if due_in is None:
            return len(items), self.idle_poll
        return len(items), min(due_in.total_seconds(), self.idle_poll)

    async def _admit_loop(self) -> None:
        """Start queued items as slots free up: with a rate budget, first spend one token
        per item for all that can start now, in one `rate_acquire` call, so the fleet
        never starts more handlers than the budget allows; without one, at once. At a stop,
        the items not started are refused (their tasks give them back)."""
        pause = 0.1
        while True:
            await self._admit.wait()
            self._admit.clear()
            while self._queued and self._queued[0].admitted.done():
                self._queued.popleft()  # cancelled by a stop meanwhile
            if self._stopping.is_set():
                while self._queued:
                    flight = self._queued.popleft()
                    if not flight.admitted.done():
                        flight.admitted.set_result(False)
                continue
            count = min(self.concurrency - self._running, len(self._queued))
            if count <= 0:
                continue
            if self.rate is not None:
                try:
                    wait = await self._spend(min(count, self.rate.burst))
                    pause = 0.1
                except Exception as exc:
                    self._fault(exc, "rate_acquire of %r failed; retrying", self.rate.key)
                    wait, pause = timedelta(seconds=pause), min(pause * 2, MAX_ERROR_PAUSE)
                if wait > timedelta(0):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), wait.total_seconds())
                    self._admit.set()
                    continue
                count = min(count, self.rate.burst)
            for _ in range(count):
                flight = self._queued.popleft()
                self._running += 1
                flight.admitted.set_result(True)
            self._admit.set()  # look again: more may be startable

    async def _spend(self, cost: int) -> timedelta:
        assert self.rate is not None
        rate = self.rate
        return await self._db(
            lambda conn: rates_async.rate_acquire(conn, rate.key, rate.per_second, rate.burst, cost)
        )

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._flights.pop(task, None)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("%s task failed", self.work.noun, exc_info=task.exception())

    # -- one item ---------------------------------------------------------------------

    async def _process(self, flight: Flight[Item]) -> None:
        item = flight.item
        # the heartbeat's task starts when its first beat is due: an item settled before
        # then (most are) costs a timer, not a task
        beats: list[asyncio.Task[None]] = []

        def first_beat() -> None:
            beats.append(asyncio.create_task(self._heartbeat(flight), name="pgcoord-heartbeat"))

        timer = asyncio.get_running_loop().call_later(self.lease.total_seconds() / 3, first_beat)
        try:
            if not await flight.admitted:
                self.failed += 1  # the worker stopped before this item started
                await self._release(flight)
                return
            try:
                flight.running = True
                flight.started = time.monotonic()
                current.set(flight)  # this task's context, copied into the handler's
                handler = asyncio.create_task(self._run_handler(item), name="pgcoord-handler")
                flight.handler = handler
                try:
                    await asyncio.wait([handler])
                except asyncio.CancelledError:
                    # torn down from outside run() (the event loop is closing): no grace
                    handler.cancel()
                    await asyncio.gather(handler, return_exceptions=True)
                    await self._release(flight)
                    raise
            finally:
                flight.ended = time.monotonic()
                self._running -= 1
                self._admit.set()
                self._done_ready.set()  # a lingering completion may go now
        finally:
            # the flag ends the heartbeat even when its cancel is swallowed (a pool's wait
            # for a connection does that on Python 3.11: asyncio.wait_for returns the
            # connection that arrives together with the cancel)
            flight.beating = False
            timer.cancel()
            for beat in beats:
                beat.cancel()
            await asyncio.gather(*beats, return_exceptions=True)
        await self._settle(flight, handler)

    async def _run_handler(self, item: Item) -> Any:
        if self.timeout is None:
            return await self.handler(item)
        seconds = self.timeout.total_seconds()
        try:
            async with asyncio.timeout(seconds) as scope:
                return await self.handler(item)
        except TimeoutError:
            if scope.expired():
                raise HandlerTimeout(f"handler timed out after {seconds:g} s") from None
            raise

    async def _heartbeat(self, flight: Flight[Item]) -> None:
        """Extend the claim now, then every third of the lease."""
        interval = self.lease.total_seconds() / 3
        while flight.beating:
            try:
                until = await self._db(lambda conn: self.work.extend(conn, flight.item, self.lease))
            except Exception as exc:
                # try again sooner: two missed beats and the lease may run out
                self._fault(
                    exc, "heartbeat of %s failed, retrying", self.work.describe(flight.item)
                )
                await asyncio.sleep(interval / 3)
                continue
            if until is None:
                if not flight.completed:  # not by complete_in: another claim took it
                    flight.lost = True
                    if flight.handler is not None:
                        flight.handler.cancel()
                return
            await asyncio.sleep(interval)

    async def _settle(self, flight: Flight[Item], handler: asyncio.Task[Any]) -> None:
        """Complete the item or give it back, by how its handler ended; log one line."""
        item = flight.item
        attempt = self.work.attempt(item)
        seconds = time.monotonic() - flight.claimed
        cancelled = handler.cancelled()
        error = None if cancelled else handler.exception()
        if flight.completed and not await self._committed(flight):
            # complete_in ran, but its transaction rolled back: the claim is still ours
            flight.completed = False
            if not cancelled and error is None:
                error = UncommittedCompletion(
                    "the handler returned, but the transaction of its complete_in did not commit"
                )
        if not cancelled and error is None:
            result = self.work.outcome(item, handler.result(), flight.ended - flight.started)
            if flight.completed or await self._complete(flight, result):
                self.processed += 1
                if log.isEnabledFor(logging.INFO):  # the line's fields cost more than this test
                    log.info(
                        "completed %s, attempt %d, %.3f s",
                        self.work.summary(item),
                        attempt,
                        seconds,
                    )
            return
        desc = self.work.describe(item)
        if flight.completed:
            # complete_in committed; what the handler did after that changes nothing
            self.processed += 1
            log.warning(
                "completed %s in the handler's transaction, but the handler then ended with: %s",
                desc,
                "cancellation" if cancelled else f"{type(error).__name__}: {error}",
            )
        elif flight.lost:
            log.warning(
                "lost the claim of %s (attempt %d) after %.3f s: its handler was cancelled",
                desc,
                attempt,
                seconds,
            )
        elif isinstance(error, ClaimLost):
            log.warning("%s; the %s is left to the current claim", error, self.work.noun)
        elif flight.stopped:
            self.failed += 1
            log.warning("gave back %s (attempt %d): %s", desc, attempt, STOPPED)
            await self._release(flight)
        elif isinstance(error, RateLimited):
            self.failed += 1
            await self._snooze(flight, error)
        else:
            self.failed += 1
            await self._give_back(flight, error)

    async def _committed(self, flight: Flight[Item]) -> bool:
        """Whether the handler's complete_in committed: then the claim is gone, and an
        extend finds nothing. When it rolled back (the handler's transaction failed) the
        claim is still current: the extend keeps it for the give-back. Unknown (the call
        failed): taken as committed, and the lease decides."""
        until = await self._call(
            "checking the completion of",
            flight,
            lambda conn: self.work.extend(conn, flight.item, self.lease),
        )
        return until is None

    async def _give_back(self, flight: Flight[Item], error: BaseException | None) -> None:
        item = flight.item
        attempt = self.work.attempt(item)
        retry_after = error.after if isinstance(error, Retry) else None
        if error is None:
            reason = "handler was cancelled"
        elif isinstance(error, Retry | HandlerTimeout):
            reason = str(error)
        else:
            reason = f"{type(error).__name__}: {error}"
        outcome = await self._call(
            "giving back", flight, lambda conn: self.work.fail(conn, item, reason, retry_after)
        )
        if not isinstance(outcome, Failure):
            return
        # the handler's traceback on its first and its last try
        traceback = (
            error
            if not isinstance(error, Retry | HandlerTimeout) and (attempt == 1 or outcome.final)
            else None
        )
        fields = {"item": self.work.describe(item), "attempt": attempt, "reason": reason}
        if outcome.final:
            log.error(self.work.final_line.format(**fields), exc_info=traceback)
        else:
            retry_in = outcome.retry_in or timedelta(0)
            line = self.work.retry_line.format(seconds=retry_in.total_seconds(), **fields)
            log.warning(line, exc_info=traceback)

    async def _snooze(self, flight: Flight[Item], error: RateLimited) -> None:
        """The provider said 429: pause the shared budget for everyone, and put the item
        back for Retry-After without spending a try (where the work allows)."""
        if self.rate is not None:
            with contextlib.suppress(Exception):
                key = self.rate.key
                await self._db(lambda conn: rates_async.rate_pause(conn, key, error.after))
        outcome = await self._call(
            "snoozing", flight, lambda conn: self.work.snooze(conn, flight.item, error.after)
        )
        log.warning(
            "snoozed %s for %g s: %s%s",
            self.work.describe(flight.item),
            error.after.total_seconds(),
            error,
            "; the rate key is paused" if self.rate is not None else "",
        )
        if isinstance(outcome, Failure) and outcome.final:
            log.error("%s had no retries left", self.work.describe(flight.item))

    async def _release(self, flight: Flight[Item]) -> None:
        await self._call("giving back", flight, lambda conn: self.work.release(conn, flight.item))

    async def _call(
        self, what: str, flight: Flight[Item], call: Callable[[AsyncConn], Awaitable[T]]
    ) -> T | None:
        """`call` on a pooled connection; None, logged, when it fails: the claim's lease
        then runs out and the item is delivered again."""
        try:
            return await self._db(call)
        except Exception as exc:
            self._fault(exc, "%s %s failed", what, self.work.describe(flight.item))
            return None

    # -- batched completions ----------------------------------------------------------

    async def _complete(self, flight: Flight[Item], result: Any) -> bool:
        """Queue the item's completion for the next completion call; True once done."""
        done: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._done.append((flight, result, done))
        self._done_ready.set()
        completed = await asyncio.shield(done)
        if completed is False:
            log.warning(
                "claim of %s (attempt %d) was lost before it completed: it is delivered again",
                self.work.describe(flight.item),
                self.work.attempt(flight.item),
            )
        return bool(completed)

    async def _complete_loop(self) -> None:
        """Complete whatever succeeded since the last call, in one call, until cancelled."""
        while True:
            await self._done_ready.wait()
            if self.work.completes_in_batches:
                await self._linger()
            self._done_ready.clear()
            while self._done:
                batch, self._done = self._done[:COMPLETE_BATCH], self._done[COMPLETE_BATCH:]
                outcomes: Sequence[bool | None]
                try:
                    outcomes = await self._db(
                        functools.partial(
                            self.work.complete, done=[(f.item, result) for f, result, _ in batch]
                        )
                    )
                except Exception as exc:
                    items = ", ".join(self.work.describe(flight.item) for flight, _, _ in batch)
                    self._fault(exc, "completing %s failed", items)
                    outcomes = [None] * len(batch)
                for (_, _, done), outcome in zip(batch, outcomes, strict=True):
                    if not done.done():
                        done.set_result(outcome)

    async def _linger(self) -> None:
        """Let successes gather for one call: until a claim's worth is queued, no handler
        runs nor waits for a slot (nothing more is coming), the worker stops, or
        COMPLETE_LINGER has passed."""
        deadline = asyncio.get_running_loop().time() + COMPLETE_LINGER
        while (
            self._done
            and len(self._done) < self.batch
            and (self._running > 0 or self._queued)
            and not self._stopping.is_set()
        ):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._done_ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done_ready.wait(), remaining)

    def _fail_pending_completions(self) -> None:
        for _, _, done in self._done:
            if not done.done():
                done.set_result(None)
        self._done.clear()

    # -- stopping, waking, upkeep -----------------------------------------------------

    async def _drain(self, grace: float) -> None:
        """Wait up to `grace` for the items in flight, then cancel the handlers of the
        rest and wait while they are given back."""
        if not self._flights:
            return
        if grace > 0:
            log.info(
                "stopping: waiting up to %g s for %d %ss in flight",
                grace,
                len(self._flights),
                self.work.noun,
            )
            await asyncio.wait(set(self._flights), timeout=grace)
        for flight in self._flights.values():
            flight.cancel()
        if self._flights:
            await asyncio.wait(set(self._flights))

    async def _listen(self, listening: asyncio.Event) -> None:
        """Wake the claim loop on every notification of the work's channel; reconnect with
        a pause when the connection drops (the timed polling goes on meanwhile). Sets
        `listening` once LISTEN is in force, or the first try failed."""
        channel = self.work.channel
        pause = 0.5
        while True:
            try:
                if isinstance(self.listen, str):
                    conninfo, kwargs = self.listen, {}
                else:
                    conninfo = await _resolved(self._pool.conninfo)
                    kwargs = dict(await _resolved(self._pool.kwargs) or {})
                kwargs.update(autocommit=True)
                async with await psycopg.AsyncConnection.connect(conninfo, **kwargs) as conn:
                    await conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))
                    if listening.is_set():
                        self._wake.set()  # notifications may have been missed meanwhile
                    listening.set()
                    pause = 0.5
                    async for _ in conn.notifies():
                        self._wake.set()
            except Exception as exc:
                self._fault(exc, "listening on %s failed; retrying", channel)
            listening.set()
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_ERROR_PAUSE)

    async def _housekeep(self) -> None:
        every = self.work.housekeeping_every
        assert every is not None
        while True:
            try:
                await self._db(lambda conn: self.work.housekeep(conn, self.name))
            except Exception as exc:
                self._fault(exc, "housekeeping failed; trying again later")
            await asyncio.sleep(every.total_seconds())
