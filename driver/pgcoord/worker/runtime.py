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
- per item: once admitted, one task runs the handler under its timeout and settles the
  item by how the handler ended (a success just joins the next completion call);
- per claim: one heartbeat extends the claim every third of the lease (once for all the
  items that share its token, when the work's items do), and cancels the handlers of
  its items when the claim is lost; a claim settled before its first beat costs a timer;
  when no beat has reached the database for most of the lease (a partition, a frozen
  server: the claim may be another worker's by the time the lease has run out), its
  handlers are cancelled too, as `Client.lock` ends its lease (config.LEASE_SAFETY_MARGIN);
- completions are batched: successes queue up while a completion call is in flight, and
  the next call completes all of them (one round trip for many, when the work allows);
  when the work can, that call also claims the next items (`complete_then_claim`), so a
  busy worker makes one round trip per batch;
- wake-ups: LISTEN on the work's channel (on the pool's server, a direct connection of
  its own, or none, chosen with `listen`), and otherwise a timed sleep until the next
  item is due, at most `idle_poll`; when the work marks idle and busy workers
  (campaigns), the look before a sleep is made on the LISTEN connection after the idle
  mark, and a claim that comes back full marks the worker busy;
- stop: `stop()` or SIGTERM/SIGINT stops claiming, lets handlers finish for `grace`,
  then cancels them and gives their items back without spending a try; a second stop
  (Ctrl-C again) ends the grace at once;
- outages: a failing claim is retried with a doubling pause; a failing settle is logged
  and left to the lease (the item is delivered again). A bad argument is no outage: when
  the server refuses the worker's own settings (a rate budget out of range; a lease,
  retry delay or housekeeping period over its maximum), the worker stops, gives its
  items back and `run()` raises the server's `InvalidArgument`.
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
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Generic, LiteralString, TypeVar

import psycopg
from psycopg import sql as pgsql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .. import arguments, rates_async
from ..config import LEASE_SAFETY_MARGIN, RATE_PAUSE_MAX, async_pool, where
from ..errors import (
    FAULTS,
    ClaimLost,
    FailForGood,
    HandlerTimeout,
    InvalidArgument,
    RateLimited,
    Retry,
    fault_line,
)
from ..lease import default_owner, safe_seconds
from ..types import Batch, CampaignMessage

# one logger for every kind of worker: operators filter on it
log = logging.getLogger("pgcoord.worker")

Item = TypeVar("Item")
T = TypeVar("T")
AsyncConn = psycopg.AsyncConnection[Any]
AsyncPool = AsyncConnectionPool[AsyncConn]
# a call to make on the LISTEN connection, and the future of its result
ListenerCall = tuple[Callable[[AsyncConn], Awaitable[Any]], "asyncio.Future[Any]"]

# when items are due but all held by others (a concurrent claim's row locks), look again
# after this long, doubling up to idle_poll while nothing can be claimed
BUSY_PAUSE = 0.05
# when an idle worker's look was not settled (an item still being committed may be
# missing from it, and its producer may not notify), look again after this long, doubling
# up to idle_poll while it stays so
UNSETTLED_PAUSE = 0.01
# a busy worker whose busy mark another worker holds tries to take it again at most this
# often (that one may go idle or away)
BUSY_MARK_RETRY = 1.0
MAX_ERROR_PAUSE = 5.0
# calls waiting their turn on the LISTEN connection (an idle and a busy mark at most, in
# the ordinary way of things): beyond it, one fails at once, and the claim loop goes on
# through the pool, so a LISTEN connection that hangs holds no growing queue
LISTENER_CALLS_MAX = 2
# how long run() waits for LISTEN before its first claim (it goes on without it)
LISTEN_TIMEOUT = 5.0
# seconds the LISTEN connection waits for its probe's notification: a session hears it
# in milliseconds; through a transaction pooler it never comes
PROBE_WAIT = 3.0
# how many queued successes one completion call takes at most
COMPLETE_BATCH = 100
# how long a success may wait for others to share its completion call, when the work
# completes in batches: until a claim's worth has finished, no handler runs, or this
COMPLETE_LINGER = 0.05
STOPPED = "worker stopped before the handler finished"


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

    noun: ClassVar[str]  # what an item is called in the log ("batch", "message")
    nouns: ClassVar[str]  # and more than one
    channel: ClassVar[LiteralString]  # the LISTEN channel notified when items are due
    max_idle_poll: ClassVar[timedelta]  # the longest sleep that still finds due items
    max_delay: ClassVar[timedelta]  # the longest delay `fail` and `snooze` take
    # log lines of a failed try: fields item, attempt, reason, seconds (a text)
    retry_line: ClassVar[str] = (
        "gave back {item} (attempt {attempt}, retry in {seconds} s): {reason}"
    )
    final_line: ClassVar[str] = "gave up {item} at attempt {attempt}: {reason}"

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

    # whether the items a claim returns with one token share one lease (extending one
    # extends them all: one heartbeat per claim), or each item has its own
    shares_leases: ClassVar[bool] = False

    @abstractmethod
    async def due_in(self, conn: AsyncConn) -> timedelta | None:
        """How long until an item is due (zero: now), None when there is none."""

    # whether the worker marks itself on its LISTEN connection as idle (`idle`) and as
    # busy when its claims come back full (`busy`): producers skip notifying busy workers
    marks: ClassVar[bool] = False

    async def idle(self, conn: AsyncConn) -> tuple[timedelta | None, bool]:
        """On the LISTEN connection: mark the session idle, then `due_in`, and whether
        that look is settled (False: an item still being committed may be missing from
        it, and its producer may not notify: look again soon)."""
        raise NotImplementedError

    async def busy(self, conn: AsyncConn) -> bool:
        """On the LISTEN connection: end the mark of `idle` and say the worker is busy;
        whether this session holds that mark (one worker at a time may)."""
        raise NotImplementedError

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

    async def complete_then_claim(
        self,
        conn: AsyncConn,
        done: Sequence[tuple[Item, Any]],
        worker: str,
        limit: int,
        lease: timedelta,
    ) -> tuple[list[bool], list[Item]]:
        """`complete`, then `claim`, in one call (one round trip and one transaction). A
        work that has it overrides this: a busy worker's claims then cost no round trip of
        their own."""
        raise NotImplementedError

    @abstractmethod
    async def complete_one(self, conn: AsyncConn, item: Item) -> bool:
        """Complete one item on the caller's connection (for `complete_in`)."""

    @abstractmethod
    async def fail(
        self, conn: AsyncConn, item: Item, error: str, retry_after: timedelta | None
    ) -> Failure | None:
        """Give the item back after a failed try (counted); None when the claim is no
        longer current. `retry_after`: the handler's own delay, if it asked for one."""

    @abstractmethod
    async def fail_for_good(self, conn: AsyncConn, item: Item, error: str) -> Failure | None:
        """A failed try that no retry can mend (the handler raised FailForGood): the
        item ended at once (failed, parked); None when the claim is no longer current."""

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


@dataclass(eq=False, slots=True)
class Flight(Generic[Item]):
    """One claimed item while the worker holds it: queued for a slot, running its handler
    in a task of its own, then settled (completed or given back)."""

    work: Work[Item]
    item: Item
    lease: ClaimLease[Item]  # the claim's lease, which it may share with others of the claim
    task: asyncio.Task[None] | None = None  # from its admission on (a slot is its)
    in_handler: bool = False  # its handler is running now
    holding: bool = True  # its claim still needs the heartbeat: until its handler ended
    completed: bool = False  # complete_in succeeded inside the handler
    lost: bool = False  # the heartbeat found the claim taken by another
    stopped: bool = False  # cancelled by the worker's stop, past its grace
    timed_out: bool = False  # cancelled at its deadline (the worker's timeout)
    claimed: float = 0.0  # when it was claimed (time.monotonic)
    started: float = 0.0  # when its handler started
    ended: float = 0.0  # when its handler ended

    def cancel(self) -> None:
        """Cancel the handler because the worker stops (the item is given back)."""
        self.stopped = True
        if self.in_handler and self.task is not None:
            self.task.cancel()


@dataclass(eq=False, slots=True)
class ClaimLease(Generic[Item]):
    """The lease of one claim, kept alive by one heartbeat for all of its items: the
    items a claim returned with one token share it (`Work.shares_leases`), else each item
    has its own. The heartbeat starts a third of the lease after the claim (a claim
    settled before then costs a timer, not a task) and ends once no item needs it."""

    flights: list[Flight[Item]] = field(default_factory=list)
    holding: int = 0  # flights whose claims still need the heartbeat
    timer: asyncio.TimerHandle | None = None
    beat: asyncio.Task[None] | None = None
    # when the claim may have run out, by the loop's clock: the lease (less its safety
    # margin) from the send of the claim or of its last extend that the database answered
    expiry: asyncio.TimerHandle | None = None

    @property
    def beating(self) -> bool:
        """Whether an item still needs the heartbeat."""
        return self.holding > 0

    def holder(self) -> Flight[Item] | None:
        """An item the heartbeat extends the claim with: one whose handler runs (or has
        yet to start), not completed by complete_in."""
        waiting = None
        for flight in self.flights:
            if flight.holding and not flight.completed:
                if flight.in_handler:
                    return flight
                waiting = waiting or flight
        return waiting

    def release(self, flight: Flight[Item]) -> None:
        """The flight's claim needs the heartbeat no longer: its handler ended (or never
        starts). The flag ends the heartbeat even when its cancel is swallowed (a pool's
        wait for a connection does that on Python 3.11: asyncio.wait_for returns the
        connection that arrives together with the cancel)."""
        if not flight.holding:
            return
        flight.holding = False
        self.holding -= 1
        if self.holding == 0:
            if self.timer is not None:
                self.timer.cancel()
            if self.beat is not None:
                self.beat.cancel()
            if self.expiry is not None:
                self.expiry.cancel()


# the flight of the running handler's task, for complete_in
current: ContextVar[Flight[Any] | None] = ContextVar("pgcoord_flight", default=None)


async def complete_in(conn: AsyncConn, item: Any) -> None:
    """Complete the item's claim in the caller's transaction on `conn`, so the caller's
    writes and the completion commit together. Raises ClaimLost (the caller's transaction
    should roll back) when the claim is no longer current.

    Inside a worker's handler, the worker then neither completes the claim again nor
    takes the end of its heartbeat for a lost claim. Outside a handler, `item` is a
    `Batch` or a `CampaignMessage` as its claim returned it."""
    flight = current.get()
    own = flight is not None and flight.item == item  # the running handler's own item
    work: Work[Any]
    if flight is not None and own:
        work = flight.work
    else:
        # here: these modules import this one
        from .buffers import BufferWork
        from .campaigns import CampaignWork

        if isinstance(item, CampaignMessage):
            work = CampaignWork(item.run_id, None)
        elif isinstance(item, Batch):
            work = BufferWork()
        else:
            raise TypeError(
                f"complete_in: item must be a Batch or a CampaignMessage, got {type(item).__name__}"
            )
    if not await work.complete_one(conn, item):
        raise ClaimLost(item, work.subject(item))
    if flight is not None and own:
        flight.completed = True


class UncommittedCompletion(Exception):
    """The handler returned, but the completion it made with complete_in rolled back."""


def _storable(text: str) -> str:
    """A handler's error as PostgreSQL text can keep it: a NUL character, and a lone
    surrogate (bytes decoded with surrogateescape), escaped."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _seconds(value: timedelta) -> str:
    """A duration in a log line: seconds to the millisecond, without trailing zeros
    ('0.999', '300', '2592000')."""
    return f"{value.total_seconds():.3f}".rstrip("0").rstrip(".")


async def _resolved(value: Any) -> Any:
    """A pool's conninfo or kwargs: the value, or what its (async) callable returns."""
    if callable(value):
        value = value()
        if inspect.isawaitable(value):
            value = await value
    return value


def _quietly(call: asyncio.Future[Any]) -> None:
    """Done callback of a call whose outcome nobody awaits: its error is dropped."""
    if not call.cancelled():
        call.exception()


async def _wait(event: asyncio.Event, timeout: float | None) -> None:
    """Until `event` is set or `timeout` seconds have passed (None: no limit), without a
    task of its own (asyncio.wait_for makes one on Python 3.11)."""
    if timeout is None:
        await event.wait()
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()


async def _wait_either(first: asyncio.Event, second: asyncio.Event, timeout: float) -> None:
    """Until either event is set or `timeout` seconds have passed."""
    waits = [asyncio.create_task(first.wait()), asyncio.create_task(second.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def takes(handler: Callable[..., Any], count: int) -> bool:
    """Whether `handler` can be called with `count` positional arguments; True when its
    signature cannot be read (the first call will tell)."""
    try:
        inspect.signature(handler).bind(*[None] * count)
    except TypeError:
        return False
    except ValueError:
        pass
    return True


def _positive(name: str, value: timedelta) -> None:
    arguments.check(name, value, timedelta)
    if value <= timedelta(0):
        raise ValueError(f"{name} must be positive, got {value}")


class Runtime(Generic[Item]):
    """Claims items of `work` and runs `handler` on each; see the module documentation.

    `conninfo` or `pool` names the database (a pool is borrowed, not closed; it needs
    about 2 * concurrency + 2 connections). `listen`: True to LISTEN on a connection to
    the pool's server, a conninfo to LISTEN on that server instead (a direct connection
    when the pool goes through a transaction-mode pooler, where LISTEN hears nothing),
    False to rely on the timed sleep alone. `processed` counts the items completed,
    `failed` the times an item was given back (a failed try, a snooze, or at the stop):
    one item tried three times counts three.
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
        arguments.check("grace", grace, timedelta)
        if grace < timedelta(0):
            raise ValueError(f"grace must not be negative, got {grace}")
        idle_poll = work.max_idle_poll if idle_poll is None else idle_poll
        arguments.check("idle_poll", idle_poll, timedelta)
        if not timedelta(0) < idle_poll <= work.max_idle_poll:
            raise ValueError(f"idle_poll must be positive and at most {work.max_idle_poll}")
        if rate is not None:
            # a claim's cost must fit the bucket; and the claims held ahead of the
            # handlers are no more than a claim's worth, so a rate-bound worker does not
            # sit on messages its fleet could start sooner elsewhere
            batch = min(batch, max(rate.burst, 1))  # a burst below 1: the server says so
            prefetch = min(prefetch, batch)
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
        self._flights: set[Flight[Item]] = set()  # the items held: claimed, not settled
        self._idle = asyncio.Event()  # no item held
        self._idle.set()
        self._tasks: set[asyncio.Task[None]] = set()  # the items' tasks and heartbeats
        self._closed = False  # run() has ended: nothing more is started
        # late claims being given back (`_late_claim`): waited for at the end of run()
        self._giving_back: set[asyncio.Task[None]] = set()
        self._beat_every = lease.total_seconds() / 3
        self._safe_for = safe_seconds(lease)
        self._claiming = False  # a claim call is in flight (of either loop)
        # completions claim the next items with their call, when the work can
        self._claims_with_completions = (
            type(work).complete_then_claim is not Work.complete_then_claim
        )
        # the work has a snooze of its own (no try spent), not the failed try of Work's
        self._snoozes = type(work).snooze is not Work.snooze
        # the handlers' deadlines in the order they started (one timeout for all: the
        # order of the deadlines too), watched by one timer for the earliest
        self._deadlines: collections.deque[tuple[float, Flight[Item]]] = collections.deque()
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._sweep: asyncio.Task[None] | None = None
        self._abandoned: set[asyncio.Task[Any]] = set()  # calls past call_timeout
        self._queued: collections.deque[Flight[Item]] = collections.deque()  # to admit
        self._running = 0  # handlers holding a slot
        self._admit = asyncio.Event()  # something to admit, or a slot freed, or a stop
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()  # a second stop: the grace ends now
        self._refused: InvalidArgument | None = None  # the worker's settings, by the server
        # the most tokens to ask for next: after a refusal, what the bucket holds by then;
        # and whether the last ask was such a one, made at once
        self._ask = rate.burst if rate is not None else 0
        self._again = False
        self._done: list[tuple[Flight[Item], Any]] = []  # successes to complete
        self._done_ready = asyncio.Event()
        # calls the claim loop makes on the LISTEN connection (the work's idle mark)
        self._listener_calls: asyncio.Queue[ListenerCall] = asyncio.Queue()
        self._listening = False  # LISTEN is in force on a live connection
        # the mark that connection's session holds or was asked for: None, "idle" or
        # "busy", and whether a busy mark was had (another worker may hold it)
        self._marked: str | None = None
        self._busy_held = False
        self._busy_asked_at = 0.0
        self._unsettled_pause = UNSETTLED_PAUSE
        self.processed = 0  # items completed
        self.failed = 0  # items given back: failed tries, snoozes, and at the stop

    def stop(self) -> None:
        """Stop claiming; items in flight get `grace` to finish. A second call ends the
        grace at once (their handlers are cancelled and the items given back). Safe from
        a signal handler of the worker's event loop; from another thread, use
        `loop.call_soon_threadsafe(worker.stop)`."""
        if self._stopping.is_set():
            self._hurry.set()
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
            if self._refused is not None:
                raise self._refused
        except asyncio.CancelledError:
            self._stopping.set()
            await self._drain(0)
            raise
        finally:
            self._closed = True
            if self._giving_back:  # late claims still being given back: not cut short
                await asyncio.wait(self._giving_back, timeout=self.call_timeout)
            if self._deadline_timer is not None:
                self._deadline_timer.cancel()
            leftover = [
                *self._tasks,
                *([self._sweep] if self._sweep else []),
                *self._abandoned,
                *self._giving_back,
            ]
            for task in [*helpers, *leftover]:
                task.cancel()
            await asyncio.gather(*helpers, *self._tasks, return_exceptions=True)
            self._forget_pending_completions()
            if self._owns_pool:
                await self._pool.close()
            if handle_signals:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)
        log.info(
            "worker %s stopped: %s completed %d, give-backs %d (failed tries, snoozes, "
            "at the stop)",
            self.name,
            self.work.nouns,
            self.processed,
            self.failed,
        )

    # -- the database -----------------------------------------------------------------

    async def _db(
        self, call: Callable[[AsyncConn], Awaitable[T]], late: Callable[[T], None] | None = None
    ) -> T:
        """`call` on a pooled connection, bounded by `call_timeout`: a database that stops
        answering raises TimeoutError then, at once. The stuck call is cancelled and left
        to end in the background (psycopg then tries to cancel its query on the server,
        which takes seconds when nothing answers), so the worker goes on meanwhile.

        With `late`, the stuck call is not cancelled but left to answer for up to the
        lease (a pooler that held it while PAUSEd runs it at RESUME): `late` then gets
        its answer, a claim that would otherwise wait out its lease unseen (and be given
        back by `late`)."""

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
            self._abandoned.add(task)
            task.add_done_callback(self._abandoned.discard)
            if late is None:
                task.cancel()
            else:
                bound = asyncio.get_running_loop().call_later(
                    self.lease.total_seconds(), task.cancel
                )
                task.add_done_callback(lambda _: bound.cancel())
                task.add_done_callback(functools.partial(_answered_late, late))
            raise TimeoutError
        return task.result()

    def _fault(self, exc: BaseException, message: str, *args: Any) -> None:
        """Log a failed call: one line for a fault of the database or the network (and
        sweep the pool's dead connections at once, not one call at a time), the
        traceback for anything else."""
        if isinstance(exc, FAULTS):
            cause = fault_line(exc)
            if isinstance(exc, TimeoutError) and not str(exc):
                cause = (
                    f"the database did not answer, or could not be reached, within "
                    f"{self.call_timeout:g} s"
                )
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
            # successes about to be completed claim the next items with their call
            pending = self._claims_with_completions and bool(self._done)
            want = 0 if pending else self._want()
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
            if pause != 0 and not self._wake.is_set():
                await _wait(self._wake, pause)

    def _want(self, freed: int = 0) -> int:
        """How many items to claim now (once `freed` items are let go): a full batch when
        that many places are free, or whatever is free once no claimed item waits for a
        slot; else none, and none while another claim is in flight."""
        if self._claiming:
            return 0
        free = self.capacity - len(self._flights) + freed
        if free >= self.batch:
            return self.batch
        if free > 0 and not self._queued:
            return min(free, self.batch)
        return 0

    async def _claim(self, want: int) -> tuple[int, float | None]:
        """Claim up to `want` items and queue them for a slot; return how many, and how
        long to sleep (None: until a place frees; 0: an item is due now)."""
        self._claiming = True
        asked = asyncio.get_running_loop().time()
        try:
            items = await self._db(lambda conn: self.work.claim(conn, self.name, want, self.lease))
        finally:
            self._claiming = False
        self._hold(items, asked)
        if len(items) == want:
            self._busy()
            return len(items), None if self._want() == 0 else 0
        return len(items), await self._look()

    async def _look(self) -> float:
        """How long to sleep once a claim found less than it wanted: until the next item
        is due, at most idle_poll. When the work marks idle workers, this look is made on
        the LISTEN connection after the mark (producers notify from then on); a look that
        is not settled is made again soon."""
        if self.work.marks and self._listening:
            try:
                due_in, settled = await self._on_listener(self._mark)
            except (TimeoutError, psycopg.OperationalError):
                pass  # the connection was lost meanwhile: the pooled look below
            else:
                pause = self._pause(due_in)
                if settled:
                    self._unsettled_pause = UNSETTLED_PAUSE
                    return pause
                pause = min(pause, self._unsettled_pause)
                self._unsettled_pause = min(self._unsettled_pause * 2, self.idle_poll)
                return pause
        return self._pause(await self._db(self.work.due_in))

    def _pause(self, due_in: timedelta | None) -> float:
        if due_in is None:
            return self.idle_poll
        return min(due_in.total_seconds(), self.idle_poll)

    async def _mark(self, conn: AsyncConn) -> tuple[timedelta | None, bool]:
        look = await self.work.idle(conn)
        self._marked, self._busy_held = "idle", False
        return look

    def _busy(self) -> None:
        """A claim found all it wanted: say the worker is busy (without waiting), unless
        it has, and holds that mark or asked for it less than BUSY_MARK_RETRY ago."""
        if not (self.work.marks and self._listening):
            return
        now = time.monotonic()
        if self._marked == "busy" and (
            self._busy_held or now - self._busy_asked_at < BUSY_MARK_RETRY
        ):
            return
        self._marked, self._busy_asked_at = "busy", now
        self._on_listener(self._mark_busy).add_done_callback(_quietly)

    async def _mark_busy(self, conn: AsyncConn) -> None:
        self._busy_held = await self.work.busy(conn)

    def _hold(self, items: list[Item], asked: float) -> None:
        """Hold claimed items, queued for a slot; one lease (heartbeat) per claim token
        when the work's items share them. `asked`: when the claim was sent (the loop's
        clock)."""
        if items:
            now = time.monotonic()
            loop = asyncio.get_running_loop()
            shares = self.work.shares_leases
            leases: dict[int, ClaimLease[Item]] = {}
            for item in items:
                key = self.work.token(item) if shares else len(leases)
                lease = leases.get(key)
                if lease is None:
                    lease = leases[key] = ClaimLease()
                    lease.timer = loop.call_later(self._beat_every, self._first_beat, lease)
                    lease.expiry = loop.call_at(asked + self._safe_for, self._ran_out, lease)
                flight = Flight(self.work, item, lease, claimed=now)
                lease.flights.append(flight)
                lease.holding += 1
                self._flights.add(flight)
                self._queued.append(flight)
            self._idle.clear()
            self._admit.set()

    async def _admit_loop(self) -> None:
        """Start queued items as slots free up, each in a task of its own: with a rate
        budget, first spend one token per item for all that can start now, in one
        `rate_acquire` call, so the fleet never starts more handlers than the budget
        allows; without one, at once. At a stop, the items not started are given back."""
        pause = 0.1
        while True:
            await self._admit.wait()
            self._admit.clear()
            while self._queued and self._queued[0].lost:
                self._forget(self._queued.popleft())  # lost before it started
            if self._stopping.is_set():
                while self._queued:
                    self._spawn(self._give_back_unstarted(self._queued.popleft()))
                continue
            count = min(self.concurrency - self._running, len(self._queued))
            if count <= 0:
                continue
            if self.rate is not None:
                ask = max(min(count, self.rate.burst, self._ask), 1)
                try:
                    wait = await self._spend(ask)
                    pause = 0.1
                except InvalidArgument as exc:
                    self._refuse(exc, f"rate_acquire of {self.rate.key!r}")  # the budget
                    continue
                except Exception as exc:
                    self._fault(exc, "rate_acquire of %r failed; retrying", self.rate.key)
                    await _wait(self._stopping, pause)
                    pause = min(pause * 2, MAX_ERROR_PAUSE)
                    self._admit.set()
                    continue
                if wait > timedelta(0):  # refused: nothing spent
                    await _wait(self._stopping, self._refusal(ask, wait).total_seconds())
                    self._admit.set()
                    continue
                self._ask, self._again = self.rate.burst, False
                count = min(ask, len(self._queued))
            for _ in range(count):
                flight = self._queued.popleft()
                if flight.lost:  # lost while the budget was spent: its token goes unused
                    self._forget(flight)
                    continue
                self._running += 1
                flight.task = self._spawn(self._process(flight))
                if self.timeout is not None:
                    self._watch(flight)
            self._admit.set()  # look again: more may be startable

    def _refusal(self, ask: int, wait: timedelta) -> timedelta:
        """After rate_acquire refused `ask` tokens for `wait`, how long to wait before the
        next ask, and how many that asks for. The refusal says how long until `ask`
        tokens are there, so the bucket holds ask - wait x rate now: the next asks for
        what it holds, at once if a token is there, else when one is. So a worker that
        starts several at a time is never starved by others that take each token as it
        comes. When an ask made so at once is refused too (the key is paused, or others
        were quicker), the worker waits the whole `wait` instead of asking again and
        again."""
        assert self.rate is not None
        if self._again:
            self._ask, self._again = ask, False
            return wait
        there = ask - wait.total_seconds() * self.rate.per_second
        if there >= 1 - 1e-9:
            self._ask, self._again = int(there + 1e-9), True
            return timedelta(0)
        self._ask = 1
        return max(wait - timedelta(seconds=(ask - 1) / self.rate.per_second), timedelta(0))

    async def _spend(self, cost: int) -> timedelta:
        assert self.rate is not None
        rate = self.rate
        return await self._db(
            lambda conn: rates_async.rate_acquire(conn, rate.key, rate.per_second, rate.burst, cost)
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _forget(self, flight: Flight[Item]) -> None:
        """The worker holds the item no longer: a place is free."""
        flight.lease.release(flight)
        self._flights.discard(flight)
        self._wake.set()
        if not self._flights:
            self._idle.set()

    # -- one item ---------------------------------------------------------------------

    async def _process(self, flight: Flight[Item]) -> None:
        """Run the item's handler under its timeout, then settle the item by how the
        handler ended. A success is queued for the next completion call: the task ends
        there, and the completion loop forgets the item once its call is done."""
        queued = False
        try:
            result: Any = None
            error: BaseException | None = None
            cancelled = False
            flight.in_handler = True
            flight.started = time.monotonic()
            current.set(flight)  # this task's context: complete_in finds its flight
            try:
                if flight.timed_out:  # its deadline passed before it started
                    raise asyncio.CancelledError
                result = await self.handler(flight.item)
            except asyncio.CancelledError:
                if not (flight.lost or flight.stopped or flight.timed_out):
                    # torn down from outside run() (the event loop is closing): no grace
                    self._end_handler(flight)
                    await self._release(flight)
                    raise
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    task.uncancel()  # the worker's own cancel, handled here
                if flight.lost or flight.stopped:
                    cancelled = True
                else:
                    assert self.timeout is not None
                    seconds = self.timeout.total_seconds()
                    error = HandlerTimeout(f"handler timed out after {seconds:g} s")
            except Exception as exc:
                error = exc
            self._end_handler(flight)
            queued = await self._settle(flight, result, error, cancelled)
        except Exception as exc:
            log.error("%s task failed", self.work.noun, exc_info=exc)
        finally:
            if not queued:
                self._forget(flight)

    def _end_handler(self, flight: Flight[Item]) -> None:
        if not flight.in_handler:
            return
        flight.in_handler = False
        flight.ended = time.monotonic()
        flight.lease.release(flight)
        self._running -= 1
        self._admit.set()
        if self._running == 0 and not self._queued:
            self._done_ready.set()  # nothing more is coming: a lingering completion goes

    def _watch(self, flight: Flight[Item]) -> None:
        """Cancel the flight's handler once it has run for the worker's timeout."""
        assert self.timeout is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout.total_seconds()
        deadlines = self._deadlines
        while deadlines and deadlines[0][1].ended:
            deadlines.popleft()  # ended handlers at the front: the common case, at once
        deadlines.append((deadline, flight))
        if self._deadline_timer is None:
            self._deadline_timer = loop.call_at(deadline, self._expire)
        elif len(deadlines) > 4 * self.capacity:
            # ended handlers behind a long one: memory stays bounded whatever the backlog
            self._deadlines = collections.deque((d, f) for d, f in self._deadlines if not f.ended)

    def _expire(self) -> None:
        """Cancel the handlers past their deadline; watch the next deadline."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadlines = self._deadlines
        while deadlines:
            deadline, flight = deadlines[0]
            if flight.ended:
                deadlines.popleft()
                continue
            if deadline > now:
                break
            deadlines.popleft()
            flight.timed_out = True
            if flight.in_handler and flight.task is not None:
                flight.task.cancel()
        self._deadline_timer = loop.call_at(deadlines[0][0], self._expire) if deadlines else None

    def _first_beat(self, lease: ClaimLease[Item]) -> None:
        if lease.beating:
            lease.beat = self._spawn(self._heartbeat(lease))

    async def _heartbeat(self, lease: ClaimLease[Item]) -> None:
        """Extend the claim now, then every third of the lease, until no item needs it.
        When the claim is lost, the items' handlers are cancelled."""
        while lease.beating:
            flight = lease.holder()
            if flight is None:
                return
            loop = asyncio.get_running_loop()
            asked = loop.time()
            try:
                until = await self._db(
                    functools.partial(self.work.extend, item=flight.item, lease=self.lease)
                )
            except Exception as exc:
                # try again sooner: two missed beats and the lease may run out
                self._fault(
                    exc, "heartbeat of %s failed, retrying", self.work.describe(flight.item)
                )
                await asyncio.sleep(self._beat_every / 3)
                continue
            if until is None:
                if flight.completed:
                    continue  # by complete_in: the others of the claim are still held
                self._lose(lease)
                return
            if lease.expiry is not None and lease.beating:
                lease.expiry.cancel()
                lease.expiry = loop.call_at(asked + self._safe_for, self._ran_out, lease)
            await asyncio.sleep(self._beat_every)

    def _ran_out(self, lease: ClaimLease[Item]) -> None:
        """No beat has reached the database for the lease, less its safety margin: the
        claim may be another worker's by now. Its handlers are cancelled, as for a lost
        claim (the items are not given back: the lease decides)."""
        flight = lease.holder()
        if not lease.beating or flight is None or flight.lost:
            return
        log.warning(
            "the claim of %s may have run out: no heartbeat reached the database for %s s "
            "(its lease less %d%%); its handlers are cancelled",
            self.work.describe(flight.item),
            _seconds(timedelta(seconds=self._safe_for)),
            round(LEASE_SAFETY_MARGIN * 100),
        )
        self._lose(lease)

    def _lose(self, lease: ClaimLease[Item]) -> None:
        """The claim is lost: cancel the handlers of its items, and let those not started
        go."""
        for other in lease.flights:
            if other.holding and not other.completed:
                other.lost = True
                if other.in_handler and other.task is not None:
                    other.task.cancel()
                elif other.task is None:
                    log.warning(
                        "lost the claim of %s before its handler started",
                        self.work.describe(other.item),
                    )
        self._admit.set()  # the queued ones of the claim are let go

    async def _settle(
        self, flight: Flight[Item], result: Any, error: BaseException | None, cancelled: bool
    ) -> bool:
        """Complete the item or give it back, by how its handler ended; log one line.
        True when its completion is queued for the completion loop."""
        item = flight.item
        if flight.completed and not await self._committed(flight):
            # complete_in ran, but its transaction rolled back: the claim is still ours
            flight.completed = False
            if not cancelled and error is None:
                error = UncommittedCompletion(
                    "the handler returned, but the transaction of its complete_in did not commit"
                )
        if not cancelled and error is None:
            if not flight.completed:
                outcome = self.work.outcome(item, result, flight.ended - flight.started)
                self._done.append((flight, outcome))
                if len(self._done) == 1 or len(self._done) >= self.batch:
                    self._done_ready.set()
                return True
            self._completed(flight)
            return False
        attempt = self.work.attempt(item)
        seconds = time.monotonic() - flight.claimed
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
            if await self._release(flight) is not False:
                self.failed += 1
                log.warning("gave back %s (attempt %d): %s", desc, attempt, STOPPED)
            else:
                self._not_current("give back", desc)
        else:
            # awaited before the count is read: other items settle meanwhile
            given = await (
                self._snooze(flight, error)
                if isinstance(error, RateLimited)
                else self._give_back(flight, error)
            )
            self.failed += given
        return False

    def _not_current(self, what: str, desc: str) -> None:
        """A give-back the server refused: another claim has the item by now, and this
        worker neither gave it back nor counts it."""
        log.warning("could not %s %s: its claim is no longer current", what, desc)

    def _completed(self, flight: Flight[Item]) -> None:
        self.processed += 1
        if log.isEnabledFor(logging.INFO):  # the line's fields cost more than this test
            log.info(
                "completed %s, attempt %d, %.3f s",
                self.work.summary(flight.item),
                self.work.attempt(flight.item),
                time.monotonic() - flight.claimed,
            )

    async def _give_back_unstarted(self, flight: Flight[Item]) -> None:
        """The worker stopped before the item's handler started: give it back."""
        try:
            if await self._release(flight) is not False:
                self.failed += 1
            else:
                self._not_current("give back", self.work.describe(flight.item))
        finally:
            self._forget(flight)

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

    async def _give_back(self, flight: Flight[Item], error: BaseException | None) -> bool:
        """Fail the item's try, or fail it for good (FailForGood); False when the server
        refused it, the claim no longer current (a failed call is left to the lease)."""
        item = flight.item
        attempt = self.work.attempt(item)
        retry_after = (
            self._capped(error.after, self.work.max_delay, "retry", item)
            if isinstance(error, Retry)
            else None
        )
        if error is None:
            reason = "handler was cancelled"
        elif isinstance(error, Retry | HandlerTimeout | FailForGood):
            reason = _storable(str(error) or type(error).__name__)
        else:
            reason = _storable(f"{type(error).__name__}: {error}")
        final = isinstance(error, FailForGood)

        async def call(conn: AsyncConn) -> Failure | bool:
            # False: the claim is no longer current (None is left to mean a failed call)
            if final:
                outcome = await self.work.fail_for_good(conn, item, reason)
            else:
                outcome = await self.work.fail(conn, item, reason, retry_after)
            return False if outcome is None else outcome

        outcome = await self._call("failing for good" if final else "giving back", flight, call)
        if outcome is None:
            return True  # the lease decides
        if not isinstance(outcome, Failure):
            self._not_current("fail for good" if final else "give back", self.work.describe(item))
            return False
        # the handler's traceback on its first and its last try (none for the errors
        # raised to say what to do with the item)
        traceback = (
            error
            if not isinstance(error, Retry | HandlerTimeout | FailForGood)
            and (attempt == 1 or outcome.final)
            else None
        )
        fields = {"item": self.work.describe(item), "attempt": attempt, "reason": reason}
        if outcome.final:
            log.error(self.work.final_line.format(**fields), exc_info=traceback)
        else:
            retry_in = outcome.retry_in or timedelta(0)
            line = self.work.retry_line.format(seconds=_seconds(retry_in), **fields)
            log.warning(line, exc_info=traceback)
        return True

    def _capped(self, after: timedelta, maximum: timedelta, what: str, item: Item) -> timedelta:
        """A handler's delay, at most the function's `maximum` (the longest the server
        takes); said in the log when it was longer."""
        if after <= maximum:
            return after
        log.info(
            "the %s of %s asked for %s s, capped at the longest the database takes, %s s",
            what,
            self.work.describe(item),
            _seconds(after),
            _seconds(maximum),
        )
        return maximum

    async def _snooze(self, flight: Flight[Item], error: RateLimited) -> bool:
        """The provider said 429: pause the shared budget for everyone, and put the item
        back for Retry-After without spending a try (where the work allows). False when
        the server refused it, the claim no longer current (a failed call is left to the
        lease)."""
        paused = ""
        if self.rate is not None:
            pause = self._capped(error.after, RATE_PAUSE_MAX, "pause of the rate key", flight.item)
            if await self._pause_fleet(self.rate.key, pause):
                paused = f"; the rate key is paused for {_seconds(pause)} s"
        delay = self._capped(error.after, self.work.max_delay, "snooze", flight.item)
        desc = self.work.describe(flight.item)
        if paused and not self._snoozes:
            # the work has no snooze (a buffer's batch): the paused key holds every
            # worker's next start, so the item goes back untouched, its try not spent (a
            # provider's 429s never push it towards dead)
            released = await self._release(flight)
            if released:
                log.warning("gave back %s without spending a try: %s%s", desc, error, paused)
            elif released is False:
                self._not_current("give back", desc)
            return released is not False
        try:
            outcome = await self._db(lambda conn: self.work.snooze(conn, flight.item, delay))
        except Exception as exc:
            self._fault(exc, "snoozing %s failed", desc)  # the lease decides
            return True
        if outcome is None or outcome is False:
            self._not_current("snooze", desc)
            return False
        log.warning("snoozed %s for %s s: %s%s", desc, _seconds(delay), error, paused)
        if isinstance(outcome, Failure) and outcome.final:
            log.error("%s had no retries left", desc)
        return True

    async def _pause_fleet(self, key: str, pause: timedelta) -> bool:
        """rate_pause(key, pause), and whether it was made. A call that meets a fault of
        the database or the network goes again on a sound connection, for what is left
        of the pause, until the pause is over or the worker stops: a pause lost to a
        dropped connection would leave the rest of the fleet sending into the
        provider's 429s."""
        end = time.monotonic() + pause.total_seconds()

        def left() -> timedelta:  # as the call is made; at least a millisecond
            return timedelta(seconds=max(end - time.monotonic(), 0.001))

        wait = 0.1
        while True:
            try:
                await self._db(lambda conn: rates_async.rate_pause(conn, key, left()))
                return True
            except Exception as exc:
                self._fault(exc, "pausing the rate key %r failed", key)
                if not isinstance(exc, FAULTS) or time.monotonic() + wait >= end:
                    return False
            await _wait(self._stopping, wait)
            if self._stopping.is_set():
                return False
            wait = min(wait * 2, MAX_ERROR_PAUSE)

    async def _release(self, flight: Flight[Item]) -> bool | None:
        """Give the item back untouched; whether its claim was current (None: the call
        failed, and said so)."""
        return await self._call(
            "giving back", flight, lambda conn: self.work.release(conn, flight.item)
        )

    async def _call(
        self, what: str, flight: Flight[Item], call: Callable[[AsyncConn], Awaitable[T]]
    ) -> T | None:
        """`call` on a pooled connection; None, logged, when it fails: the claim's lease
        then runs out and the item is delivered again. A call the server refuses for a
        bad argument (one of the worker's settings) stops the worker too."""
        try:
            return await self._db(call)
        except InvalidArgument as exc:
            self._refuse(exc, f"{what} {self.work.describe(flight.item)}")
            return None
        except Exception as exc:
            self._fault(exc, "%s %s failed", what, self.work.describe(flight.item))
            return None

    def _refuse(self, exc: InvalidArgument, what: str) -> None:
        """The server refused `what` for one of the worker's own settings (a rate budget,
        a retry delay, a housekeeping period out of range): no retry mends it, so the
        worker stops, gives its items back, and `run()` raises `exc`."""
        log.error("%s was refused; the worker stops: %s", what, exc)
        if self._refused is None:
            self._refused = exc
        if not self._stopping.is_set():
            self.stop()

    # -- batched completions ----------------------------------------------------------

    async def _complete_loop(self) -> None:
        """Complete whatever succeeded since the last call, in one call, until cancelled;
        then forget the items (their places are free)."""
        while True:
            await self._done_ready.wait()
            if self.work.completes_in_batches:
                await self._linger()
            self._done_ready.clear()
            while self._done:
                batch, self._done = self._done[:COMPLETE_BATCH], self._done[COMPLETE_BATCH:]
                outcomes, claimed, asked = await self._complete(batch)
                for (flight, _), completed in zip(batch, outcomes, strict=True):
                    if completed:
                        self._completed(flight)
                    elif completed is False:
                        log.warning(
                            "claim of %s (attempt %d) was lost before it completed: "
                            "it is delivered again",
                            self.work.describe(flight.item),
                            self.work.attempt(flight.item),
                        )
                    self._forget(flight)
                self._hold(claimed, asked)

    async def _complete(
        self, batch: list[tuple[Flight[Item], Any]]
    ) -> tuple[Sequence[bool | None], list[Item], float]:
        """Complete the batch in one call, and claim the next items with it when the work
        can and places will be free; per item whether its claim was current (None: the
        call failed, the lease decides), the items claimed, and when the call that claimed
        them was sent (the loop's clock). A call that found its connection dead goes once
        more, once the pool is swept: a completion by claim token is safe to repeat (what
        the first did complete answers False the second time, taken as unknown, not as
        lost)."""
        done = [(flight.item, outcome) for flight, outcome in batch]
        try:
            return await self._completing(done, len(batch))
        except Exception as exc:
            items = ", ".join(self.work.describe(flight.item) for flight, _ in batch)
            failed: tuple[list[None], list[Item], float] = ([None] * len(batch), [], 0.0)
            dead = isinstance(exc, psycopg.OperationalError) and not isinstance(
                exc, PoolTimeout | psycopg.errors.QueryCanceled
            )
            if not dead:
                self._fault(exc, "completing %s failed", items)
                return failed
            self._fault(exc, "completing %s failed; trying once more", items)
        if self._sweep is not None:
            await asyncio.wait({self._sweep}, timeout=self.call_timeout)
        try:
            outcomes, claimed, asked = await self._completing(done, len(batch))
        except Exception as exc:
            self._fault(exc, "completing %s failed again", items)
            return failed
        return [None if completed is False else completed for completed in outcomes], claimed, asked

    async def _completing(
        self, done: list[tuple[Item, Any]], freed: int
    ) -> tuple[Sequence[bool | None], list[Item], float]:
        want = 0
        if self._claims_with_completions and not self._stopping.is_set():
            want = self._want(freed=freed)
        asked = asyncio.get_running_loop().time()
        if want:
            self._claiming = True
            try:
                outcomes, claimed = await self._db(
                    functools.partial(
                        self.work.complete_then_claim,
                        done=done,
                        worker=self.name,
                        limit=want,
                        lease=self.lease,
                    ),
                    late=self._late_claim,
                )
                if len(claimed) == want:
                    self._busy()
                return outcomes, claimed, asked
            except psycopg.Error as exc:
                if isinstance(exc, FAULTS):
                    raise
                # the claim's error undid the completion too: complete alone
                self._fault(exc, "claiming with the completions failed")
            finally:
                self._claiming = False
            asked = asyncio.get_running_loop().time()
        outcomes = await self._db(functools.partial(self.work.complete, done=done))
        return outcomes, [], asked

    def _late_claim(self, answer: tuple[Sequence[bool | None], list[Item]]) -> None:
        """A completion and claim given up on answered after all (a PAUSEd pooler ran it
        at RESUME): give what it claimed back at once, untouched and with no try spent,
        for any worker to claim again, rather than leave it to wait out its lease unseen.
        Never held here: its lease may be about to run out, and the places it would take
        are counted for other claims meanwhile."""
        outcomes, claimed = answer
        log.warning(
            "a completion given up on answered after all: %d completed, %d claimed, %s",
            sum(1 for completed in outcomes if completed),
            len(claimed),
            "left to their lease (the worker has stopped)" if self._closed else "given back",
        )
        if claimed and not self._closed:
            task = asyncio.create_task(self._give_back_claimed(claimed))
            self._giving_back.add(task)
            task.add_done_callback(self._giving_back.discard)

    async def _give_back_claimed(self, claimed: list[Item]) -> None:
        """Give the items back one by one; at the first failure the rest are left to
        their lease (a database still not answering would fail each in turn)."""
        for number, item in enumerate(claimed):
            try:
                await self._db(functools.partial(self.work.release, item=item))
            except Exception as exc:
                self._fault(
                    exc,
                    "giving back %s failed; %d more left to their lease",
                    self.work.describe(item),
                    len(claimed) - number - 1,
                )
                return

    async def _linger(self) -> None:
        """Let successes gather for one call: until a claim's worth is queued, no handler
        runs nor waits for a slot (nothing more is coming), the worker stops, or
        COMPLETE_LINGER has passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + COMPLETE_LINGER
        while (
            self._done
            and len(self._done) < self.batch
            and (self._running > 0 or self._queued)
            and not self._stopping.is_set()
        ):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._done_ready.clear()
            await _wait(self._done_ready, remaining)

    def _forget_pending_completions(self) -> None:
        for flight, _ in self._done:
            self._forget(flight)
        self._done.clear()

    # -- stopping, waking, upkeep -----------------------------------------------------

    def _in_flight(self) -> str:
        """The items in flight, counted: '1 message', '15 messages (4 in handlers)'."""
        count = len(self._flights)
        said = f"{count} {self.work.noun if count == 1 else self.work.nouns}"
        return said if self._running == count else f"{said} ({self._running} in handlers)"

    async def _drain(self, grace: float) -> None:
        """Wait up to `grace` for the items in flight, then cancel the handlers of the
        rest and wait while they are given back."""
        if not self._flights:
            return
        if grace > 0 and not self._hurry.is_set():
            log.info(
                "stopping: waiting up to %g s for %s in flight (stop again to give them back now)",
                grace,
                self._in_flight(),
            )
            await _wait_either(self._idle, self._hurry, grace)
            if self._hurry.is_set() and self._flights:
                log.info("stopped again: giving back %s now", self._in_flight())
        for flight in list(self._flights):
            flight.cancel()
        self._admit.set()  # the queued ones are given back
        self._done_ready.set()
        await self._idle.wait()

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
                    if not await self._hears(conn):
                        log.warning(
                            "worker %s: LISTEN on %s hears nothing (a transaction pooler?): "
                            "polling every %g s at most instead; give the worker a direct "
                            "connection to LISTEN on (listen=URL, pgcoord work --listen URL)",
                            self.name,
                            where(conn),
                            self.idle_poll,
                        )
                        listening.set()
                        return
                    await conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))
                    if listening.is_set():
                        self._wake.set()  # notifications may have been missed meanwhile
                    listening.set()
                    pause = 0.5
                    await self._serve(conn)
            except Exception as exc:
                self._fault(exc, "listening on %s failed; retrying", channel)
            listening.set()
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_ERROR_PAUSE)

    async def _hears(self, conn: AsyncConn) -> bool:
        """Whether notifications reach `conn`: through a transaction pooler LISTEN
        succeeds and then hears nothing, the session that ran it gone back to the pool
        (docs/poolers.md), and the marks of an idle or busy worker would stay on pooled
        sessions. A probe channel of its own, notified from the pool, before the work's
        channel is listened to: when it is not heard, the probe's is all there is to
        UNLISTEN."""
        name = f"pgcoord_probe_{uuid.uuid4().hex[:16]}"
        probe = pgsql.Identifier(name)
        await conn.execute(pgsql.SQL("LISTEN {}").format(probe))
        try:
            await self._db(lambda pooled: _notify(pooled, probe))
            deadline = asyncio.get_running_loop().time() + PROBE_WAIT
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                async for notice in conn.notifies(timeout=left, stop_after=1):
                    if notice.channel == name:
                        return True
            return False
        finally:
            with contextlib.suppress(psycopg.Error):
                await conn.execute(pgsql.SQL("UNLISTEN {}").format(probe))

    async def _serve(self, conn: AsyncConn) -> None:
        """Wake the claim loop on every notification; between them, make the calls it asks
        for on this connection (the idle mark, a session's). Returns or raises when the
        connection is lost; the calls still waiting then fail."""
        self._listening = True
        try:
            while True:
                heard = asyncio.create_task(self._heard(conn))
                asked = asyncio.create_task(self._listener_calls.get())
                try:
                    await asyncio.wait({heard, asked}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (heard, asked):
                        task.cancel()
                    await asyncio.gather(heard, asked, return_exceptions=True)
                if not asked.cancelled():
                    await self._answer(conn, *asked.result())
                if not heard.cancelled():
                    heard.result()  # the connection failed: raises
        finally:
            self._listening = False
            self._marked, self._busy_held = None, False  # gone with the session
            lost = psycopg.OperationalError("the LISTEN connection was lost")
            while not self._listener_calls.empty():
                _, future = self._listener_calls.get_nowait()
                if not future.done():
                    future.set_exception(lost)

    async def _heard(self, conn: AsyncConn) -> None:
        async for _ in conn.notifies():
            self._wake.set()
        raise psycopg.OperationalError("the LISTEN connection stopped delivering")

    async def _answer(
        self,
        conn: AsyncConn,
        call: Callable[[AsyncConn], Awaitable[Any]],
        future: asyncio.Future[Any],
    ) -> None:
        if future.done():  # its caller gave up waiting
            return
        try:
            future.set_result(await call(conn))
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            if isinstance(exc, FAULTS):
                raise

    def _on_listener(self, call: Callable[[AsyncConn], Awaitable[T]]) -> asyncio.Future[T]:
        """`call` on the LISTEN connection, between notifications: its future, which
        fails when the connection is lost first; awaited, bounded by call_timeout. With
        LISTENER_CALLS_MAX calls already waiting (the connection hangs on one), it fails
        at once."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        if self._listener_calls.qsize() >= LISTENER_CALLS_MAX:
            future.set_exception(TimeoutError("the LISTEN connection is behind"))
        else:
            self._listener_calls.put_nowait((call, future))
        return asyncio.ensure_future(asyncio.wait_for(future, self.call_timeout))

    async def _housekeep(self) -> None:
        every = self.work.housekeeping_every
        assert every is not None
        while True:
            try:
                await self._db(lambda conn: self.work.housekeep(conn, self.name))
            except InvalidArgument as exc:
                self._refuse(exc, "housekeeping")  # its period is out of range
                return
            except Exception as exc:
                self._fault(exc, "housekeeping failed; trying again later")
            await asyncio.sleep(every.total_seconds())


async def _notify(conn: AsyncConn, channel: pgsql.Identifier) -> None:
    await conn.execute(pgsql.SQL("NOTIFY {}").format(channel), prepare=False)


def _answered_late(late: Callable[[T], None], task: asyncio.Task[T]) -> None:
    if not task.cancelled() and task.exception() is None:
        late(task.result())
