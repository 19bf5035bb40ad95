"""The buffer worker: claims due conversations and calls a handler once per batch.

    async def reply(batch: Batch) -> None:
        text = await my_bot.answer(batch.bodies)        # the messages, in arrival order
        await whatsapp.send(batch.conversation_key, text)

    await BufferWorker(reply, "postgresql://...", concurrency=8).run()

Each batch runs in a task of its own, at most `concurrency` at once: the worker claims
only as many conversations as it has free slots, so it never holds more claims than it
runs handlers, and its memory stays bounded whatever the backlog. While the handler runs,
a heartbeat extends the claim's lease every third of the lease; when the claim is lost
(its lease ran out and another worker took the conversation) the handler is cancelled
and the batch is left to its new holder. A handler that returns completes the claim; one
that raises or runs past `timeout` gives the batch back (`buffer_fail`), to be retried
after `retry_in` (or `Retry.after`), and parked as dead by the database after the 5th
failed try (new messages of the conversation still flow). A `RateLimited` pauses the
worker's shared rate key and gives the batch back untouched, no try spent (the pause
holds every worker's next start); without a rate budget it counts as a `Retry`, a
buffer having no snooze of its own. A `FailForGood` parks the batch as dead at once
(`buffer_fail_for_good`), whatever tries are left.

Side effects in the same database can commit exactly once with the completion:

    async def reply(batch: Batch) -> None:
        text = await my_bot.answer(batch.bodies)
        async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
            await conn.execute("INSERT INTO replies ...", ...)
            await complete_in(conn, batch)   # raises ClaimLost: the insert rolls back

The worker then leaves the claim alone: it does not complete it again.

With `payloads=True` the handler also gets the stored payloads of the batch's messages
(what message_ingest kept besides the body: the sender's name, a media URL...), in the
order of `batch.message_ids`, read in the claim's own statement (no extra round trip):

    async def reply(batch: Batch, payloads: list[dict[str, Any]]) -> None:
        name = payloads[-1].get("profile_name")

An idle worker sleeps until the next buffer is due, at most `idle_poll`, and wakes at
once when message_ingest opens a window due within a second (LISTEN pgcoord_buffers, set
up before the first claim). Through a transaction-mode pooler, where LISTEN hears
nothing, pass `listen=` a direct conninfo, or `listen=False`: the timed sleep alone still
finds every flush within `idle_poll`.

`stop()` (or SIGTERM / SIGINT with `run(handle_signals=True)`) stops claiming, lets the
batches in flight finish for up to `grace`, then cancels their handlers and gives them
back (`buffer_release`: claimable again at once, not counted as a failed try).
Cancelling `run()` gives the batches in flight back at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from .. import arguments, inbox_async, sql
from ..config import BUFFER_LEASE, BUFFER_RETRY_IN, BUFFER_RETRY_IN_MAX
from ..types import Batch, BatchWithPayloads
from .runtime import AsyncConn, AsyncPool, Failure, RateBudget, Runtime, Work, takes

Handler = Callable[[Batch], Awaitable[None]]
# the handler of BufferWorker(payloads=True): the batch, and the payloads of its messages
# (payloads[i] belongs to batch.message_ids[i])
PayloadHandler = Callable[[Batch, list[dict[str, Any]]], Awaitable[None]]


class BufferWork(Work[Batch]):
    """Conversations' due batches (pgcoord.buffer_*)."""

    noun, nouns = "batch", "batches"
    max_delay = BUFFER_RETRY_IN_MAX
    channel = sql.BUFFER_CHANNEL
    # message_ingest notifies only for windows due within a second: a worker must look
    # at least that often to find the others in time
    max_idle_poll = timedelta(seconds=1)
    final_line = "parked {item} as dead at attempt {attempt}: {reason}"

    def __init__(self, retry_in: timedelta = BUFFER_RETRY_IN, payloads: bool = False) -> None:
        self.retry_in = retry_in
        self.payloads = payloads  # claim each batch with its messages' payloads

    def describe(self, item: Batch) -> str:
        return repr(item.conversation_key)

    def subject(self, item: Batch) -> str:
        return f"conversation {item.conversation_key!r}"

    def summary(self, item: Batch) -> str:
        count = len(item.message_ids)
        return f"{item.conversation_key!r}: {count} message{'' if count == 1 else 's'}"

    def token(self, item: Batch) -> int:
        return item.claim_token

    def attempt(self, item: Batch) -> int:
        return item.attempt

    async def claim(
        self, conn: AsyncConn, worker: str, limit: int, lease: timedelta
    ) -> list[Batch]:
        if self.payloads:
            return [*await inbox_async.buffer_claim_with_payloads(conn, worker, limit, lease)]
        return await inbox_async.buffer_claim(conn, worker, limit, lease)

    async def due_in(self, conn: AsyncConn) -> timedelta | None:
        return await inbox_async.buffer_due_in(conn)

    async def extend(self, conn: AsyncConn, item: Batch, lease: timedelta) -> datetime | None:
        return await inbox_async.buffer_extend(conn, item.conversation_key, item.claim_token, lease)

    async def complete(self, conn: AsyncConn, done: Sequence[tuple[Batch, Any]]) -> list[bool]:
        return [await self.complete_one(conn, item) for item, _ in done]

    async def fail_for_good(self, conn: AsyncConn, item: Batch, error: str) -> Failure | None:
        failed = await inbox_async.buffer_fail_for_good(
            conn, item.conversation_key, item.claim_token, error
        )
        return Failure(final=True) if failed else None

    async def complete_one(self, conn: AsyncConn, item: Batch) -> bool:
        return await inbox_async.buffer_complete(conn, item.conversation_key, item.claim_token)

    async def fail(
        self, conn: AsyncConn, item: Batch, error: str, retry_after: timedelta | None
    ) -> Failure | None:
        retry_in = self.retry_in if retry_after is None else retry_after
        parked = await inbox_async._buffer_failed(
            conn, item.conversation_key, item.claim_token, error, retry_in
        )
        if parked is None:
            return None
        return Failure(final=parked, retry_in=retry_in)

    async def release(self, conn: AsyncConn, item: Batch) -> bool:
        return await inbox_async.buffer_release(conn, item.conversation_key, item.claim_token)


class BufferWorker(Runtime[Batch]):
    """Claims due batches and runs `handler` on each; see the module documentation.

    `conninfo` or `pool` names the database (a pool is borrowed, not closed; it needs
    about 2 * concurrency + 2 connections); the worker also opens one connection of its
    own to LISTEN (see `listen`). `name` is the worker's name in the claims
    (buffer_status.claimed_by); by default host:pid:random. `lease` is the claims' lease,
    kept alive by the heartbeat; `timeout` (default none) bounds each handler call;
    `retry_in` is the delay before a failed batch is claimable again; `grace` is how long
    `stop()` lets batches finish. `rate` shares a provider budget with every worker given
    the same key (one `rate_acquire` for all the handlers it can start at once: one
    token each). `payloads=True` claims each batch with
    its messages' payloads and calls `handler(batch, payloads)` (a `PayloadHandler`).
    `processed` and `failed` count the batches completed and given back.
    """

    def __init__(
        self,
        handler: Handler | PayloadHandler,
        conninfo: str | None = None,
        *,
        pool: AsyncPool | None = None,
        name: str | None = None,
        concurrency: int = 4,
        lease: timedelta = BUFFER_LEASE,
        timeout: timedelta | None = None,
        retry_in: timedelta = BUFFER_RETRY_IN,
        idle_poll: timedelta = BufferWork.max_idle_poll,
        grace: timedelta = timedelta(seconds=30),
        listen: bool | str = True,
        rate: RateBudget | None = None,
        payloads: bool = False,
    ) -> None:
        arguments.check("retry_in", retry_in, timedelta)
        if retry_in < timedelta(0):
            raise ValueError(f"retry_in must not be negative, got {retry_in}")
        _check_arguments(handler, 2 if payloads else 1)
        super().__init__(
            BufferWork(retry_in, payloads),
            with_payloads(cast(PayloadHandler, handler)) if payloads else cast(Handler, handler),
            conninfo,
            pool=pool,
            name=name,
            concurrency=concurrency,
            batch=None,
            prefetch=0,
            lease=lease,
            timeout=timeout,
            idle_poll=idle_poll,
            grace=grace,
            listen=listen,
            rate=rate,
        )


def with_payloads(handler: PayloadHandler) -> Handler:
    """The worker's one-argument handler that calls `handler(batch, payloads)`."""

    async def handle(batch: Batch) -> None:
        assert isinstance(batch, BatchWithPayloads), "claimed with its payloads"
        await handler(batch, batch.payloads)

    return handle


def _check_arguments(handler: Callable[..., Any], count: int) -> None:
    """TypeError at once when `handler` cannot be called with `count` arguments (the
    batch; with payloads=True, the batch and its payloads)."""
    if takes(handler, count):
        return
    if count == 2:
        raise TypeError("with payloads=True the handler takes two arguments: (batch, payloads)")
    raise TypeError(
        "the handler takes one argument, the batch (a handler of (batch, payloads) "
        "needs payloads=True)"
    )
