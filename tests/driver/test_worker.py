"""BufferWorker against a real server: one handler call per burst, completion, give-back
and retries up to the dead batch, timeouts, Retry, heartbeat, lost claims, the
concurrency bound, two workers, and complete_in."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from workerkit import HOUR, Inbox, run, running, settled, wait_until, worker

from pgcoord import InvalidArgument, inbox_async
from pgcoord.types import Batch
from pgcoord.worker import (
    BufferWorker,
    ClaimLost,
    FailForGood,
    RateBudget,
    RateLimited,
    Retry,
    complete_in,
)


def test_each_burst_is_one_call_with_its_messages_in_order_and_then_done(db_url: str) -> None:
    async def test(inbox: Inbox) -> None:
        sent = [await inbox.ingest("a", body) for body in ("a1", "a2", "a3")]
        sent.append(await inbox.ingest("b", "b1"))
        calls: list[Batch] = []

        async def handler(burst: Batch) -> None:
            calls.append(burst)

        w = worker(handler, db_url)
        async with running(w):
            await wait_until(lambda: settled(inbox), "both bursts completed")
        calls.sort(key=lambda b: b.conversation_key)
        assert [(b.conversation_key, b.bodies, b.attempt) for b in calls] == [
            ("a", ["a1", "a2", "a3"], 1),
            ("b", ["b1"], 1),
        ]
        assert calls[0].message_ids == [m.message_id for m in sent[:3]]
        assert calls[0].first_message_at == sent[0].received_at
        assert calls[0].last_message_at == sent[2].received_at
        assert await inbox.states() == {b: ["done"] for b in ("a1", "a2", "a3", "b1")}
        assert (w.processed, w.failed) == (1 + 1, 0)

    run(test, db_url)


def test_a_failing_burst_is_retried_after_retry_in_then_parked_while_new_messages_flow(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(inbox: Inbox) -> None:
        await inbox.ingest("c", "bad")
        calls: list[tuple[Batch, datetime]] = []

        async def handler(burst: Batch) -> None:
            calls.append((burst, await inbox.now()))
            if burst.bodies == ["bad"]:
                if burst.attempt == 2:
                    # arrives while the bad batch is held: waits behind it
                    await inbox.ingest("c", "meanwhile")
                raise RuntimeError("boom")

        retry_in = timedelta(seconds=0.2)
        w = worker(handler, db_url, retry_in=retry_in)
        async with running(w):
            await wait_until(lambda: settled(inbox, dead=1), "the bad batch parked")
            dead = await inbox.row("c", dead=True)
            assert (dead.message_count, dead.attempt, dead.dead) == (1, 5, True)
            assert dead.last_error == "RuntimeError: boom"
            assert (dead.flush_at, dead.claimed_by) == (None, None)
            # the dead batch does not silence the conversation
            await inbox.ingest("c", "after")
            await wait_until(lambda: _done(inbox, "after"), "'after' done")
            assert await settled(inbox, dead=1)

        tries = [(b.bodies, b.attempt) for b, _ in calls if b.bodies == ["bad"]]
        assert tries == [(["bad"], n) for n in range(1, 6)]
        assert len({b.claim_token for b, _ in calls}) == len(calls)
        starts = [at for b, at in calls if b.bodies == ["bad"]]
        # each retry came no sooner than retry_in after the try before it began
        assert all(later - earlier >= retry_in for earlier, later in itertools.pairwise(starts))
        assert bodies_of(calls, exclude=["bad"]) == [["meanwhile"], ["after"]]
        assert await inbox.states() == {
            "bad": ["dead"],
            "meanwhile": ["done"],
            "after": ["done"],
        }
        assert (w.processed, w.failed) == (2, 5)
        # the server says which try parked it: the log line says so on that try only
        said = [r.getMessage() for r in caplog.records if "'c'" in r.getMessage()]
        parked = [line for line in said if line.startswith("parked ")]
        assert parked == ["parked 'c' as dead at attempt 5: RuntimeError: boom"], said
        assert sum("retry in" in line for line in said) == 4, said

    caplog.set_level(logging.INFO, logger="pgcoord.worker")
    run(test, db_url)


async def _done(inbox: Inbox, body: str) -> bool:
    return (await inbox.states()).get(body) == ["done"]


def bodies_of(calls: list[tuple[Batch, datetime]], exclude: list[str]) -> list[list[str]]:
    return [b.bodies for b, _ in calls if b.bodies != exclude]


def test_a_handler_past_its_timeout_is_cancelled_and_given_back(db_url: str) -> None:
    async def test(inbox: Inbox) -> None:
        await inbox.ingest("t", "slow")
        outcome: list[str] = []

        async def handler(burst: Batch) -> None:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                outcome.append("cancelled")
                raise

        w = worker(handler, db_url, timeout=timedelta(seconds=0.2))
        async with running(w):

            async def given_back() -> bool:
                return (await inbox.row("t")).last_error is not None

            await wait_until(given_back, "the burst given back")
            row = await inbox.row("t")
            now = await inbox.now()
        assert outcome == ["cancelled"]
        assert row.last_error == "handler timed out after 0.2 s"
        assert (row.claimed_by, row.attempt, row.message_count) == (None, 1, 1)
        # given back with the worker's retry_in (an hour)
        assert row.flush_at is not None and row.flush_at > now + HOUR - timedelta(minutes=1)
        assert (w.processed, w.failed) == (0, 1)

    run(test, db_url)


def test_retry_gives_back_with_its_own_delay(db_url: str) -> None:
    async def test(inbox: Inbox) -> None:
        await inbox.ingest("r", "rate limited")
        starts: list[datetime] = []
        seen: list[tuple[int, str | None]] = []

        async def handler(burst: Batch) -> None:
            starts.append(await inbox.now())
            if burst.attempt == 1:
                raise Retry(timedelta(seconds=0.3), "provider said 429")
            row = await inbox.row("r")
            seen.append((row.attempt, row.last_error))

        w = worker(handler, db_url)  # retry_in: an hour
        async with running(w):
            await wait_until(lambda: settled(inbox), "the retried burst completed")
        assert seen == [(2, "provider said 429")]
        assert timedelta(seconds=0.3) <= starts[1] - starts[0] < timedelta(minutes=1)
        assert (w.processed, w.failed) == (1, 1)

    run(test, db_url)


def test_fail_for_good_parks_the_burst_at_once(db_url: str) -> None:
    """No retry mends a customer who blocked the number: the batch is parked as dead on
    its first try, where any other error would bring it back up to five times."""

    async def test(inbox: Inbox) -> None:
        await inbox.ingest("f", "hello")
        tries: list[int] = []

        async def handler(burst: Batch) -> None:
            tries.append(burst.attempt)
            raise FailForGood("the customer blocked the bot")

        async def parked() -> bool:
            return any(r.dead for r in await inbox.status())

        w = worker(handler, db_url, retry_in=timedelta(0))
        async with running(w):
            await wait_until(parked, "the burst parked")
        row = await inbox.row("f", dead=True)
        assert (row.attempt, row.last_error) == (1, "the customer blocked the bot")
        assert tries == [1] and (w.processed, w.failed) == (0, 1)

    run(test, db_url)


def test_a_retry_delay_the_server_refuses_stops_the_worker_with_the_error(db_url: str) -> None:
    """retry_in beyond buffer_fail's maximum (30 days) is refused at the first failure,
    and retrying cannot mend it: the worker stops and run() raises the server's error
    naming the argument, where it used to leave each failed batch to its lease."""

    async def test(inbox: Inbox) -> None:
        await inbox.ingest("x", "hello")

        async def handler(burst: Batch) -> None:
            raise ValueError("the provider is down")

        w = worker(handler, db_url, retry_in=timedelta(days=31))
        with pytest.raises(InvalidArgument, match="p_retry_in"):
            await asyncio.wait_for(w.run(), 15)

    run(test, db_url)


def test_a_give_back_refused_as_stale_is_neither_counted_nor_said_done(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The claim is taken over while the handler runs, before any heartbeat could see
    it: the handler's error then finds its claim stale. buffer_fail answers false and
    touches nothing; the worker says so, and counts no give-back."""

    async def test(inbox: Inbox) -> None:
        await inbox.ingest("s", "hello")
        taken: list[Batch] = []

        async def handler(burst: Batch) -> None:
            await inbox.conn.execute(
                "UPDATE pgcoord.buffers SET claimed_until = clock_timestamp() - interval '1 s',"
                " due_at = clock_timestamp() - interval '1 s'"
                " WHERE conversation_key = 's' AND claimed_by IS NOT NULL"
            )
            taken.extend(await inbox_async.buffer_claim(inbox.conn, "other", 1, HOUR))
            raise ValueError("boom")

        w = worker(handler, db_url)  # the heartbeat: a third of an hour
        with caplog.at_level(logging.WARNING, logger="pgcoord.worker"):
            async with running(w):

                async def settled_after_handler() -> bool:
                    return (
                        bool(taken)
                        and w.failed + w.processed == 0
                        and any("no longer current" in r.getMessage() for r in caplog.records)
                    )

                await wait_until(settled_after_handler, "the refused give-back")
        assert (w.failed, w.processed) == (0, 0)
        row = await inbox.row("s")
        assert (row.claimed_by, row.last_error) == ("other", "lease expired (claimed by w1)")
        assert "could not give back 's': its claim is no longer current" in caplog.text

    run(test, db_url)


@pytest.mark.parametrize("budget", [True, False], ids=["with-a-rate-budget", "without"])
def test_rate_limited_spends_no_try_where_the_rate_key_holds_the_fleet(
    db_url: str, budget: bool
) -> None:
    """A provider's 429: with a rate budget the key is paused and the batch goes back
    untouched, its try not spent (five 429s in a row never park a conversation as dead),
    and comes again once the pause is over. Without one there is no pause to hold it
    back: it is a failed try with the Retry-After as its delay."""

    async def test(inbox: Inbox) -> None:
        await inbox.ingest("r", "hello")
        starts: list[tuple[int, datetime]] = []

        async def handler(burst: Batch) -> None:
            starts.append((burst.attempt, await inbox.now()))
            if len(starts) == 1:
                raise RateLimited(0.5, "429 Too Many Requests")

        rate = RateBudget("provider", per_second=100, burst=10) if budget else None
        w = worker(handler, db_url, rate=rate)  # retry_in: an hour
        async with running(w):
            await wait_until(lambda: settled(inbox), "the limited burst completed")
        assert [attempt for attempt, _ in starts] == ([1, 1] if budget else [1, 2])
        assert timedelta(seconds=0.45) <= starts[1][1] - starts[0][1] < timedelta(minutes=1)
        assert (w.processed, w.failed) == (1, 1)

    run(test, db_url)


def test_retry_takes_seconds_and_refuses_a_negative_delay() -> None:
    assert Retry(1.5).after == timedelta(seconds=1.5)
    assert str(Retry(0, "later")) == "later"
    with pytest.raises(ValueError, match="negative"):
        Retry(timedelta(seconds=-1))


def test_the_heartbeat_keeps_a_handler_longer_than_the_lease(db_url: str) -> None:
    async def test(inbox: Inbox) -> None:
        await inbox.ingest("h", "long")
        calls: list[Batch] = []
        held: list[bool] = []

        async def handler(burst: Batch) -> None:
            calls.append(burst)
            await asyncio.sleep(2.0)  # more than three leases of 0.6 s
            row = await inbox.row("h")
            assert row.claimed_until is not None
            held.append(row.claimed_until > await inbox.now())

        lease = timedelta(seconds=0.6)
        w1 = worker(handler, db_url, name="w1", lease=lease)
        w2 = worker(handler, db_url, name="w2", lease=lease)  # would take a lapsed claim
        async with running(w1, w2):
            await wait_until(lambda: settled(inbox), "the long burst completed")
        assert [(b.bodies, b.attempt) for b in calls] == [(["long"], 1)]
        assert held == [True]
        assert w1.processed + w2.processed == 1

    run(test, db_url)


def test_a_lost_claim_cancels_the_handler_and_leaves_the_burst_to_the_new_claim(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    beating = True
    real_extend = inbox_async.buffer_extend

    async def extend(
        conn: psycopg.AsyncConnection[Any], key: str, token: int, lease: timedelta
    ) -> datetime | None:
        if beating:
            return await real_extend(conn, key, token, lease)
        return datetime.now().astimezone()  # a stalled heartbeat: the lease runs out

    monkeypatch.setattr(inbox_async, "buffer_extend", extend)

    async def test(inbox: Inbox) -> None:
        nonlocal beating
        await inbox.ingest("k", "taken over")
        started = asyncio.Event()
        outcome: list[str] = []

        async def handler(burst: Batch) -> None:
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                outcome.append("cancelled")
                raise
            outcome.append("returned")

        # concurrency 1: the worker cannot take its own lapsed claim back meanwhile
        w = worker(handler, db_url, lease=timedelta(seconds=0.6), concurrency=1)
        async with running(w):
            await asyncio.wait_for(started.wait(), 15)
            beating = False

            async def lapsed() -> bool:
                row = await inbox.row("k")
                return row.claimed_until is not None and row.claimed_until < await inbox.now()

            await wait_until(lapsed, "the lease to run out")
            [thief] = await inbox_async.buffer_claim(inbox.conn, "thief", 10, HOUR)
            assert (thief.conversation_key, thief.attempt) == ("k", 2)
            beating = True
            await wait_until(lambda: _true(outcome), "the handler cancelled")
        assert outcome == ["cancelled"]
        row = await inbox.row("k")
        assert (row.claimed_by, row.attempt) == ("thief", 2)
        assert row.last_error == "lease expired (claimed by w1)"
        # the worker neither completed nor gave back: the new claim is intact
        assert (w.processed, w.failed) == (0, 0)
        assert await inbox_async.buffer_complete(inbox.conn, "k", thief.claim_token)

    run(test, db_url)


async def _true(items: list[str]) -> bool:
    return bool(items)


def test_a_heartbeat_whose_cancel_is_swallowed_still_ends_with_its_handler(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting for a pooled connection can swallow a cancellation: on Python 3.11,
    psycopg_pool waits with asyncio.wait_for, which returns the connection that arrives
    together with the cancel. A heartbeat cancelled right then must not go on beating
    (extending the claim for ever, the burst never completed, the worker never
    stopping): it ends with its handler all the same."""
    waiting = asyncio.Event()
    swallowed: list[bool] = []
    real_extend = inbox_async.buffer_extend

    async def extend(
        conn: psycopg.AsyncConnection[Any], key: str, token: int, lease: timedelta
    ) -> datetime | None:
        if not swallowed:  # the first beat waits "for a connection" until cancelled
            waiting.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                swallowed.append(True)  # ... and gets it together with the cancel
        return await real_extend(conn, key, token, lease)

    monkeypatch.setattr(inbox_async, "buffer_extend", extend)

    async def test(inbox: Inbox) -> None:
        await inbox.ingest("s", "beaten")

        async def handler(burst: Batch) -> None:
            await waiting.wait()  # return while the heartbeat waits in extend

        w = worker(handler, db_url, concurrency=1)
        async with running(w):
            await wait_until(lambda: settled(inbox), "the burst completed", timeout=10)
        assert swallowed == [True]
        assert (w.processed, w.failed) == (1, 0)
        assert await inbox.states() == {"beaten": ["done"]}

    run(test, db_url)


def test_no_more_handlers_nor_claims_than_the_concurrency(db_url: str) -> None:
    async def test(inbox: Inbox) -> None:
        keys = [f"c{i}" for i in range(8)]
        for key in keys:
            await inbox.ingest(key, f"{key} hello")
        running_now = 0
        most = 0
        claimed: list[int] = []
        calls: list[str] = []

        async def handler(burst: Batch) -> None:
            nonlocal running_now, most
            running_now += 1
            most = max(most, running_now)
            calls.append(burst.conversation_key)
            cur = await inbox.conn.execute(
                "SELECT count(*) FROM pgcoord.buffer_status WHERE claimed_by = 'w1'"
            )
            row = await cur.fetchone()
            assert row is not None
            claimed.append(row[0])
            await asyncio.sleep(0.1)
            running_now -= 1

        w = worker(handler, db_url, concurrency=3)
        async with running(w):
            await wait_until(lambda: settled(inbox), "all bursts completed")
        assert most == 3  # the first claim took three due conversations at once
        assert max(claimed) == 3
        assert sorted(calls) == keys

    run(test, db_url)


def test_two_workers_never_run_one_conversation_at_once(db_url: str) -> None:
    async def test(inbox: Inbox) -> None:
        keys = ["p", "q", "r", "s"]
        for key in keys:
            await inbox.ingest(key, f"{key}0")
        # four first bursts run together: two per worker of concurrency 2
        together = asyncio.Barrier(len(keys))
        active: dict[str, str] = {}
        overlaps: list[str] = []
        calls: list[tuple[str, Batch]] = []

        def handler_of(name: str) -> Callable[[Batch], Awaitable[None]]:
            async def handler(burst: Batch) -> None:
                key = burst.conversation_key
                if key in active:
                    overlaps.append(f"{key}: {active[key]} and {name}")
                active[key] = name
                calls.append((name, burst))
                if burst.bodies == [f"{key}0"]:
                    await asyncio.wait_for(together.wait(), 15)
                await asyncio.sleep(0.05)
                del active[key]

            return handler

        w1 = worker(handler_of("w1"), db_url, name="w1", concurrency=2)
        w2 = worker(handler_of("w2"), db_url, name="w2", concurrency=2)

        async def delivered(n: int) -> None:
            async def enough() -> bool:
                return sum(len(b.bodies) for _, b in calls) >= n

            await wait_until(enough, f"{n} messages delivered")

        async with running(w1, w2):
            # the next round arrives while some conversations are being processed
            for round_, after in ((1, 4), (2, 6), (3, 10)):
                await delivered(after)
                for key in keys:
                    await inbox.ingest(key, f"{key}{round_}")
            await wait_until(lambda: settled(inbox), "every burst completed")
        assert overlaps == []
        assert {name for name, b in calls if b.bodies[0].endswith("0")} == {"w1", "w2"}
        for key in keys:
            delivered = [body for _, b in calls if b.conversation_key == key for body in b.bodies]
            assert delivered == [f"{key}{i}" for i in range(4)]  # once each, in order
        assert all(b.attempt == 1 for _, b in calls)

    run(test, db_url)


def test_complete_in_commits_the_handlers_writes_with_the_completion(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(inbox: Inbox) -> None:
        await inbox.conn.execute("CREATE TABLE replies (conversation text, reply text)")
        await inbox.ingest("x", "hi")
        outcome: list[str] = []

        async def handler(burst: Batch) -> None:
            async with (
                await psycopg.AsyncConnection.connect(db_url) as conn,
                conn.transaction(),
            ):
                await conn.execute(
                    "INSERT INTO replies VALUES (%s, %s)", [burst.conversation_key, "hello"]
                )
                await complete_in(conn, burst)
            # after the commit the heartbeat finds no claim: it must not cancel us
            await asyncio.sleep(0.5)
            outcome.append("returned")

        w = worker(handler, db_url, lease=timedelta(seconds=0.6))
        with caplog.at_level(logging.INFO, logger="pgcoord.worker"):
            async with running(w):
                await wait_until(lambda: _true(outcome), "the handler to return")
        assert outcome == ["returned"]
        cur = await inbox.conn.execute("SELECT conversation, reply FROM replies")
        assert await cur.fetchall() == [("x", "hello")]
        assert await inbox.status() == []
        assert await inbox.states() == {"hi": ["done"]}
        assert (w.processed, w.failed) == (1, 0)
        # one line for the burst, no warning (no second completion, no lost claim)
        logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "pgcoord.worker"]
        assert [level for level, _ in logged if level >= logging.WARNING] == []
        [line] = [message for _, message in logged if "'x'" in message]
        assert line.startswith("completed 'x': 1 message, attempt 1, ")

    run(test, db_url)


def test_an_error_after_complete_in_does_not_give_the_completed_burst_back(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(inbox: Inbox) -> None:
        await inbox.ingest("z", "hi")
        sent = asyncio.Event()

        async def handler(burst: Batch) -> None:
            async with await psycopg.AsyncConnection.connect(db_url) as conn:
                await complete_in(conn, burst)  # autocommit off: commits on leaving
            sent.set()
            raise RuntimeError("logging the reply failed")

        w = worker(handler, db_url, retry_in=timedelta(0))
        with caplog.at_level(logging.WARNING, logger="pgcoord.worker"):
            async with running(w):
                await asyncio.wait_for(sent.wait(), 15)
                await wait_until(lambda: settled(inbox), "the burst completed")
        assert await inbox.states() == {"hi": ["done"]}
        assert (w.processed, w.failed) == (1, 0)
        assert [r.getMessage() for r in caplog.records if r.name == "pgcoord.worker"] == [
            "completed 'z' in the handler's transaction, but the handler then ended with: "
            "RuntimeError: logging the reply failed"
        ]

    run(test, db_url)


def test_complete_in_with_a_stale_claim_raises_claim_lost_and_the_writes_roll_back(
    db_url: str,
) -> None:
    async def test(inbox: Inbox) -> None:
        await inbox.conn.execute("CREATE TABLE replies (conversation text, reply text)")
        await inbox.ingest("y", "hi")
        [stale] = await inbox_async.buffer_claim(inbox.conn, "slow", 10, timedelta(seconds=0.2))

        async def lapsed() -> bool:
            row = await inbox.row("y")
            return row.claimed_until is not None and row.claimed_until < await inbox.now()

        await wait_until(lapsed, "the lease to run out")
        [current] = await inbox_async.buffer_claim(inbox.conn, "fast", 10, HOUR)
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            with pytest.raises(ClaimLost) as caught:
                async with conn.transaction():
                    await conn.execute("INSERT INTO replies VALUES ('y', 'twice')")
                    await complete_in(conn, stale)
        assert caught.value.batch is stale
        assert f"claim {stale.claim_token} of conversation 'y'" in str(caught.value)
        cur = await inbox.conn.execute("SELECT count(*) FROM replies")
        assert await cur.fetchone() == (0,)
        assert (await inbox.row("y")).claimed_by == "fast"
        assert await inbox_async.buffer_complete(inbox.conn, "y", current.claim_token)

    run(test, db_url)


def test_worker_arguments_are_checked() -> None:
    async def handler(burst: Batch) -> None:
        pass

    with pytest.raises(TypeError):
        BufferWorker(handler)
    for options, match in [
        ({"concurrency": 0}, "concurrency"),
        ({"lease": timedelta(0)}, "lease"),
        ({"timeout": timedelta(0)}, "timeout"),
        ({"retry_in": timedelta(seconds=-1)}, "retry_in"),
        ({"grace": timedelta(seconds=-1)}, "grace"),
        ({"idle_poll": timedelta(seconds=2)}, "idle_poll"),
    ]:
        with pytest.raises(ValueError, match=match):
            BufferWorker(handler, "dbname=unused", **options)  # type: ignore[arg-type]
