"""The campaign worker: claims due campaign messages in batches and calls a handler once
per message.

    async def send(message: CampaignMessage) -> dict[str, Any]:
        text = await llm.generate(message.payload)              # under the worker's timeout
        await gateway.send(message.recipient, text)
        return {"tokens": 812, "generate_ms": 640}               # stored as the metrics

    await CampaignWorker(send, "postgresql://...", concurrency=8,
                         rate=RateBudget("whatsapp", per_second=20, burst=20)).run()

Each sent message's metrics are the handler's, with `handler_ms`, the handler's time
as the worker measured it (pgcoord.campaign_stats reports its median and 95th
percentile). The worker claims up to `batch` messages in one call (holding at most
`concurrency + batch` claims, so memory stays bounded whatever the backlog), runs up to
`concurrency` handlers at once, and completes successes in batches (one
`campaign_completed` round trip for all that finished meanwhile, as
`campaign_complete_many` does, answering which were completed; a stale token is never
completed). That call also claims the next batch when places are free
(`campaign_completed_then_claim`: one statement, one transaction), so a busy worker makes
one round trip per batch; the messages of one claim share one heartbeat.

A handler that raises, or runs past `timeout` (default 30 s, then it is cancelled),
fails its try: the message comes back after the run's backoff (or after `Retry.after`
when that is later), and is failed for good with its error kept after the run's last
retry.
A handler that raises `RateLimited(after)` (the provider answered 429 with Retry-After)
snoozes its message without spending a try and pauses the shared rate key, so every
worker of the fleet waits.

With `rate`, every worker given the same key shares one token bucket: the worker
acquires for all the handlers it can start at once in one `rate_acquire` call (a token
each) before they start, and the fleet never exceeds it. A `FailForGood` from a handler
fails its message at once, whatever retries are left. Every `skip_stale_every` one
worker of the fleet (whoever takes the lease lock `pgcoord:campaign_skip_stale`) marks
too-old pending messages skipped. Waking, stopping and outages work as for `BufferWorker`: LISTEN
pgcoord_campaigns (notified at most once per enqueue), a timed sleep until the next due
message otherwise, SIGTERM/SIGINT give the rest back without spending a try. An idle
worker marks itself so on its LISTEN connection (campaign_idle), and says it is busy once
a claim comes back full (campaign_busy): enqueues skip the NOTIFY while the run's workers
are busy and none is idle, so that producers feeding busy workers never take turns at
the commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from .. import arguments, campaigns_async, locks_async, sql
from ..config import CAMPAIGN_CLAIM_LIMIT, CAMPAIGN_DELAY_MAX, CAMPAIGN_LEASE
from ..jsonb import Unencodable, jsonb, plain
from ..types import CampaignMessage
from .runtime import AsyncConn, AsyncPool, Failure, RateBudget, Runtime, Work, log, takes

Handler = Callable[[CampaignMessage], Awaitable[Mapping[str, Any] | None]]

SKIP_STALE_LOCK = "pgcoord:campaign_skip_stale"
T = TypeVar("T")

HANDLER_MS = "handler_ms"  # the metrics key of the handler's time
# the metrics key that says why the handler's own metrics were not stored
METRICS_ERROR = "metrics_error"


class CampaignWork(Work[CampaignMessage]):
    """Campaign messages (pgcoord.campaign_*)."""

    noun, nouns = "message", "messages"
    max_delay = CAMPAIGN_DELAY_MAX
    channel = sql.CAMPAIGN_CHANNEL
    # campaign_enqueue (and a resume) notifies when something is due within this long
    # (campaign_wake's 5 seconds): the woken worker then sleeps until it is due
    # (campaign_due_in); a sleep of this length finds in time whatever falls due later
    max_idle_poll = timedelta(seconds=5)
    final_line = "failed {item} for good at attempt {attempt}: {reason}"
    completes_in_batches = True
    shares_leases = True  # a claim's messages share its token's lease

    def __init__(self, run_id: int | None, skip_stale_every: timedelta | None) -> None:
        self.run_id = run_id
        self.housekeeping_every = skip_stale_every

    def describe(self, item: CampaignMessage) -> str:
        return f"message {item.message_id} of run {item.run_id}"

    def token(self, item: CampaignMessage) -> int:
        return item.claim_token

    def attempt(self, item: CampaignMessage) -> int:
        return item.attempt

    async def claim(
        self, conn: AsyncConn, worker: str, limit: int, lease: timedelta
    ) -> list[CampaignMessage]:
        return await campaigns_async.campaign_claim(conn, worker, limit, lease, self.run_id)

    async def due_in(self, conn: AsyncConn) -> timedelta | None:
        return await campaigns_async.campaign_due_in(conn, self.run_id)

    marks = True  # campaign_enqueue skips its NOTIFY while workers are busy, none idle

    async def idle(self, conn: AsyncConn) -> tuple[timedelta | None, bool]:
        look = await campaigns_async.campaign_idle(conn, self.run_id)
        return look.due_in, look.settled

    async def busy(self, conn: AsyncConn) -> bool:
        return await campaigns_async.campaign_busy(conn, self.run_id)

    async def extend(
        self, conn: AsyncConn, item: CampaignMessage, lease: timedelta
    ) -> datetime | None:
        return await campaigns_async.campaign_extend(conn, item.message_id, item.claim_token, lease)

    def outcome(self, item: CampaignMessage, result: Any, seconds: float) -> dict[str, Any]:
        """The metrics stored with the sent message: the handler's, and its time as the
        worker measured it, `handler_ms` (what `pgcoord campaigns` reports as p50/p95; it
        wins over a `handler_ms` of the handler's own). The message was sent whatever the
        handler returned: what is not a dict of metrics is noted, not failed."""
        ms = round(seconds * 1_000_000) / 1000  # to the µs, as round(, 3)
        if result is None:
            return {HANDLER_MS: ms}
        if type(result) is not dict and not isinstance(result, Mapping):  # dict: at once
            said = f"the handler returned {type(result).__name__}, not a dict"
            return _unstorable(item, ms, said)
        try:
            metrics = dict(result)
        except Exception as exc:  # a mapping of the user's that fails to be read
            return _unstorable(item, ms, f"the handler's {type(result).__name__} fails: {exc!r}")
        metrics[HANDLER_MS] = ms
        return metrics

    async def complete(
        self, conn: AsyncConn, done: Sequence[tuple[CampaignMessage, Any]]
    ) -> list[bool]:
        completed = await _storing(
            done, lambda columns: campaigns_async.campaign_completed(conn, *columns)
        )
        return [item.message_id in completed for item, _ in done]

    async def complete_then_claim(
        self,
        conn: AsyncConn,
        done: Sequence[tuple[CampaignMessage, Any]],
        worker: str,
        limit: int,
        lease: timedelta,
    ) -> tuple[list[bool], list[CampaignMessage]]:
        completed, claimed = await _storing(
            done,
            lambda columns: campaigns_async.campaign_completed_then_claim(
                conn, *columns, worker, limit, lease, self.run_id
            ),
        )
        return [item.message_id in completed for item, _ in done], claimed

    async def complete_one(self, conn: AsyncConn, item: CampaignMessage) -> bool:
        return await campaigns_async.campaign_complete(conn, item.message_id, item.claim_token)

    async def fail(
        self, conn: AsyncConn, item: CampaignMessage, error: str, retry_after: timedelta | None
    ) -> Failure | None:
        found = await campaigns_async.campaign_fail_in(
            conn, item.message_id, item.claim_token, error, retry_after
        )
        if found is None:
            return None
        final, retry_in = found
        return Failure(final=final, retry_in=retry_in)

    async def fail_for_good(
        self, conn: AsyncConn, item: CampaignMessage, error: str
    ) -> Failure | None:
        failed = await campaigns_async.campaign_fail_for_good(
            conn, item.message_id, item.claim_token, error
        )
        return Failure(final=True) if failed else None

    async def snooze(
        self, conn: AsyncConn, item: CampaignMessage, delay: timedelta
    ) -> bool | Failure | None:
        return await campaigns_async.campaign_snooze(conn, item.message_id, item.claim_token, delay)

    async def release(self, conn: AsyncConn, item: CampaignMessage) -> bool:
        return await campaigns_async.campaign_release(conn, item.message_id, item.claim_token)

    async def housekeep(self, conn: AsyncConn, worker: str) -> None:
        """Skip stale messages, by one worker of the fleet at a time: the lease lock is
        held for the whole period and never released, so the fleet runs it once a
        period whatever its size."""
        every = self.housekeeping_every
        assert every is not None
        grant = await locks_async.lock_acquire(conn, SKIP_STALE_LOCK, worker, every)
        if grant.acquired:
            skipped = await campaigns_async.campaign_skip_stale(conn)
            if skipped:
                log.info("skipped %d stale campaign messages", skipped)


async def _storing(
    done: Sequence[tuple[CampaignMessage, Any]],
    call: Callable[[tuple[list[int], list[int], list[Any]]], Awaitable[T]],
) -> T:
    """`call` with the done messages' columns; again with their unstorable metrics
    replaced, when JSON or PostgreSQL cannot hold some (raised before anything is sent)."""
    try:
        return await call(_columns(done))
    except Unencodable:
        return await call(_columns(_storable(done)))


def _storable(
    done: Sequence[tuple[CampaignMessage, Any]],
) -> list[tuple[CampaignMessage, Any]]:
    """The outcomes with the metrics that JSON or PostgreSQL cannot hold (NaN, an object
    of no JSON form) replaced by a note: the messages were sent, and are completed."""
    kept = []
    for item, metrics in done:
        try:
            jsonb(metrics, "metrics")
        except Unencodable as exc:
            metrics = _unstorable(item, metrics.get(HANDLER_MS), str(exc))
        kept.append((item, metrics))
    return kept


def _unstorable(item: CampaignMessage, ms: float | None, why: str) -> dict[str, Any]:
    why = plain(why, 300)  # the note itself holds only what jsonb can
    log.warning(
        "the metrics of message %d of run %d cannot be stored (%s): it is completed with %s",
        item.message_id,
        item.run_id,
        why,
        METRICS_ERROR,
    )
    return {HANDLER_MS: ms, METRICS_ERROR: why}


def _columns(
    done: Sequence[tuple[CampaignMessage, Any]],
) -> tuple[list[int], list[int], list[Any]]:
    """The messages' ids, claim tokens and metrics, as the completion calls take them."""
    return (
        [item.message_id for item, _ in done],
        [item.claim_token for item, _ in done],
        [metrics for _, metrics in done],
    )


class CampaignWorker(Runtime[CampaignMessage]):
    """Claims due campaign messages in batches and runs `handler` on each; see the module
    documentation.

    `run_id` limits the worker to one run. `batch` is the claim size (default 15, capped
    by the rate budget's burst); `concurrency` the handlers at once (default 8);
    `timeout` each handler's limit (default 30 s); `lease` the claims' lease (default 5
    minutes), kept alive by a heartbeat; `skip_stale_every` how often the fleet marks
    stale messages skipped (None: never; `pgcoord maintain` does it on demand). The other
    options are `BufferWorker`'s.
    """

    def __init__(
        self,
        handler: Handler,
        conninfo: str | None = None,
        *,
        pool: AsyncPool | None = None,
        name: str | None = None,
        run_id: int | None = None,
        concurrency: int = 8,
        batch: int = CAMPAIGN_CLAIM_LIMIT,
        lease: timedelta = CAMPAIGN_LEASE,
        timeout: timedelta | None = timedelta(seconds=30),
        idle_poll: timedelta = CampaignWork.max_idle_poll,
        grace: timedelta = timedelta(seconds=30),
        listen: bool | str = True,
        rate: RateBudget | None = None,
        skip_stale_every: timedelta | None = timedelta(minutes=1),
    ) -> None:
        if not takes(handler, 1):
            raise TypeError("the handler takes one argument, the message (a CampaignMessage)")
        arguments.check("skip_stale_every", skip_stale_every, timedelta | None)
        if skip_stale_every is not None and skip_stale_every <= timedelta(0):
            raise ValueError(f"skip_stale_every must be positive, got {skip_stale_every}")
        super().__init__(
            CampaignWork(run_id, skip_stale_every),
            handler,
            conninfo,
            pool=pool,
            name=name,
            concurrency=concurrency,
            batch=batch,
            prefetch=batch,
            lease=lease,
            timeout=timeout,
            idle_poll=idle_poll,
            grace=grace,
            listen=listen,
            rate=rate,
        )
