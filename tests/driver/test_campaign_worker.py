"""CampaignWorker: batched claims and completions, per-message timeouts and retries with
the run's backoff, snoozes on 429, the shared rate budget, stale messages, stopping."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from dying import die_once
from queuekit import Queue, run, worker
from workerkit import running, wait_until

from pgcoord import (
    ClaimLost,
    FailForGood,
    InvalidArgument,
    RateLimited,
    Retry,
    campaigns_async,
    complete_in,
    config,
    rates_async,
)
from pgcoord.types import CampaignMessage
from pgcoord.worker import RateBudget, runtime
from pgcoord.worker.campaigns import CampaignWork, CampaignWorker


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How often the worker made each campaign call (and with how many items); a
    completion that claims with it counts as both."""
    counted: Counter[str] = Counter()
    claim, completed = campaigns_async.campaign_claim, campaigns_async.campaign_completed

    async def counted_claim(conn: psycopg.AsyncConnection[Any], *args: Any) -> Any:
        found = await claim(conn, *args)
        counted["claim"] += 1
        counted["claimed"] += len(found)
        counted["claimed alone"] += len(found)
        counted[f"claims of {len(found)}"] += 1
        return found

    async def counted_completed(conn: psycopg.AsyncConnection[Any], *args: Any) -> Any:
        counted["complete"] += 1
        counted[f"completions of {len(args[0])}"] += 1
        return await completed(conn, *args)

    async def counted_completed_then_claim(conn: psycopg.AsyncConnection[Any], *args: Any) -> Any:
        counted["complete"] += 1
        counted[f"completions of {len(args[0])}"] += 1
        completed_ids, found = await completed_then_claim(conn, *args)
        counted["claim"] += 1
        counted["claimed"] += len(found)
        counted[f"claims of {len(found)}"] += 1
        return completed_ids, found

    completed_then_claim = campaigns_async.campaign_completed_then_claim
    monkeypatch.setattr(campaigns_async, "campaign_claim", counted_claim)
    monkeypatch.setattr(campaigns_async, "campaign_completed", counted_completed)
    monkeypatch.setattr(
        campaigns_async, "campaign_completed_then_claim", counted_completed_then_claim
    )
    return counted


def test_every_message_is_sent_once_with_its_metrics_in_batched_round_trips(
    db_url: str, calls: Counter[str]
) -> None:
    async def test(queue: Queue) -> None:
        run_id = await queue.run()
        await queue.enqueue(run_id, 90)
        handled: list[int] = []

        async def send(message: CampaignMessage) -> dict[str, Any]:
            handled.append(message.message_id)
            await asyncio.sleep(0.01)
            return {"recipient": message.recipient, "i": message.payload["i"]}

        w = worker(send, db_url, concurrency=4, batch=15)
        async with running(w):
            await wait_until(lambda: queue.done(run_id, sent=90), "every message sent")
        assert sorted(handled) == sorted(set(handled)) and len(handled) == 90
        states = await queue.states(run_id)
        assert {s.status for s in states.values()} == {"sent"}
        assert all(s.attempt == 1 for s in states.values())
        for state in states.values():
            assert state.metrics is not None
            assert state.metrics["i"] == int(state.metrics["recipient"][1:])
            assert state.metrics["handler_ms"] >= 5  # measured by the worker: it slept 10 ms
        assert (w.processed, w.failed) == (90, 0)
        # batches: far fewer claims and completions than messages
        assert calls["claimed"] == 90
        assert calls["claim"] <= 90 / 4, calls
        assert calls["complete"] <= 90 / 2, calls

    run(test, db_url)


def test_the_handler_time_is_measured_and_reported_by_campaign_stats(db_url: str) -> None:
    """The worker stores the time it measured as handler_ms (over the handler's own
    value, and for a handler that returns None), and campaign_stats reads it."""

    async def test(queue: Queue) -> None:
        run_id = await queue.run()
        await queue.enqueue(run_id, 4)

        async def send(message: CampaignMessage) -> dict[str, Any] | None:
            await asyncio.sleep(0.05)
            return {"handler_ms": -1} if message.payload["i"] % 2 else None

        async with running(worker(send, db_url, concurrency=4)):
            await wait_until(lambda: queue.done(run_id, sent=4), "every message sent")
        states = await queue.states(run_id)
        assert all(s.metrics is not None and s.metrics["handler_ms"] >= 50 for s in states.values())
        [stats] = await campaigns_async.campaign_stats(queue.conn, run_id)
        assert stats.sent_last_minute == 4
        assert stats.handler_p50_ms is not None and stats.handler_p95_ms is not None
        assert 50 <= stats.handler_p50_ms <= stats.handler_p95_ms

    run(test, db_url)


class Odd:
    def __repr__(self) -> str:
        return "odd \x00 \ud800"


class Unreadable(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("cannot list its keys")

    def __len__(self) -> int:
        return 1


def test_metrics_that_cannot_be_stored_are_noted_and_the_message_completed(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler that sent its message but returned what is not a dict, or a value JSON
    cannot hold, costs neither its own completion nor the others' of the same call: each
    is sent once, at its first attempt, the note in its metrics."""
    bad: list[Any] = [
        float("nan"),
        {"o": object()},
        42,
        [1, 2],
        {"inf": float("inf")},
        {"text": "broken \ud83d pair"},  # the server refuses it (22P02), the encoder not
        {"o": Odd()},  # its repr, in the note, holds a NUL and a lone surrogate
        Unreadable(),  # a mapping whose items fail
    ]

    async def test(queue: Queue) -> None:
        run_id = await queue.run(max_retries=0)
        await queue.enqueue(run_id, 32)
        sent: Counter[int] = Counter()

        async def send(message: CampaignMessage) -> Any:
            sent[message.message_id] += 1
            i = message.payload["i"]
            if i % 4 == 0:
                kind = bad[i // 4]
                return kind if not isinstance(kind, float) else {"cost": kind}
            return {"tokens": i}

        with caplog.at_level(logging.WARNING, logger="pgcoord"):
            async with running(worker(send, db_url, batch=32, concurrency=32)):
                await wait_until(lambda: queue.done(run_id, sent=32), "every message sent")
        states = await queue.states(run_id)
        assert set(sent.values()) == {1}, "none sent twice"
        assert {s.attempt for s in states.values()} == {1}
        by_i = {
            s.metrics["tokens"]: s for s in states.values() if s.metrics and "tokens" in s.metrics
        }
        assert len(by_i) == 24, "the others kept their metrics"
        noted = [s.metrics for s in states.values() if s.metrics and "metrics_error" in s.metrics]
        assert len(noted) == 8
        assert all(m["handler_ms"] >= 0 for m in noted)
        assert any("not a dict" in m["metrics_error"] for m in noted)
        assert any("NaN" in m["metrics_error"] for m in noted)
        assert any("lone surrogate" in m["metrics_error"] for m in noted)
        assert sum("cannot be stored" in r.getMessage() for r in caplog.records) == 8

    run(test, db_url)


def test_a_handler_past_its_timeout_is_cancelled_and_retried_after_the_backoff(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(queue: Queue) -> None:
        run_id = await queue.run(max_retries=2, backoff=[timedelta(milliseconds=300)])
        await queue.enqueue(run_id, 1)
        tries: list[tuple[int, datetime]] = []
        cancelled = asyncio.Event()

        async def send(message: CampaignMessage) -> None:
            tries.append((message.attempt, await queue.now()))
            if message.attempt == 1:
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    cancelled.set()
                    raise

        w = worker(send, db_url, timeout=timedelta(seconds=0.3))
        async with running(w):
            await wait_until(lambda: queue.done(run_id, sent=1), "the retry sent")
        assert cancelled.is_set()
        assert [attempt for attempt, _ in tries] == [1, 2]
        # the retry came after the timeout and the run's backoff, on the server's clock
        assert tries[1][1] - tries[0][1] >= timedelta(milliseconds=600)
        [state] = (await queue.states(run_id)).values()
        assert (state.status, state.attempt) == ("sent", 2)
        assert (w.processed, w.failed) == (1, 1)
        # the fail's answer says how long until the retry, by the server's clock
        [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("gave back")]
        [seconds] = re.findall(r"\(attempt 1, retry in ([0-9.e-]+) s\)", line)
        assert 0.1 < float(seconds) <= 0.3, line
        assert line.endswith("): handler timed out after 0.3 s"), line

    run(test, db_url)


def test_a_message_failing_every_try_is_failed_for_good_with_its_error(db_url: str) -> None:
    async def test(queue: Queue) -> None:
        run_id = await queue.run(max_retries=2)
        await queue.enqueue(run_id, 1)
        attempts: list[int] = []

        async def send(message: CampaignMessage) -> None:
            attempts.append(message.attempt)
            raise ValueError(f"gateway refused try {message.attempt}")

        w = worker(send, db_url)
        async with running(w):
            await wait_until(lambda: queue.done(run_id, sent=0, failed=1), "the message failed")
        assert attempts == [1, 2, 3]  # max_retries 2: three tries in all
        [state] = (await queue.states(run_id)).values()
        assert state.status == "failed"
        assert state.last_error == "ValueError: gateway refused try 3"
        assert (w.processed, w.failed) == (0, 3)

    run(test, db_url)


def test_a_handler_error_postgresql_text_cannot_hold_is_kept_escaped(db_url: str) -> None:
    """A NUL character or a lone surrogate in the handler's error is escaped, and the try
    is counted as any other: not left to the lease by a give-back that cannot be sent."""

    async def test(queue: Queue) -> None:
        run_id = await queue.run(max_retries=0)
        await queue.enqueue(run_id, 1)

        async def send(message: CampaignMessage) -> None:
            raise ValueError("bad \x00 byte in \udcff")

        w = worker(send, db_url)
        async with running(w):
            await wait_until(lambda: queue.done(run_id, sent=0, failed=1), "the message failed")
        [state] = (await queue.states(run_id)).values()
        assert state.last_error == "ValueError: bad \\x00 byte in \\udcff"
        assert (w.processed, w.failed) == (0, 1)

    run(test, db_url)


def test_a_housekeeping_period_the_server_refuses_stops_the_worker_with_the_error(
    db_url: str,
) -> None:
    """skip_stale_every is the ttl of the fleet's housekeeping lock: beyond its maximum
    the server refuses it, and retrying cannot mend it."""

    async def test(queue: Queue) -> None:
        run_id = await queue.run()
        await queue.enqueue(run_id, 2)

        async def send(message: CampaignMessage) -> None:
            pass

        w = worker(send, db_url, skip_stale_every=timedelta(days=400))
        with pytest.raises(InvalidArgument, match="p_ttl"):
            await asyncio.wait_for(w.run(), 15)
        p = await queue.progress(run_id)
        assert p.processing == 0, "nothing left claimed"

    run(test, db_url)


def test_complete_in_outside_a_worker_completes_a_campaign_message(db_url: str) -> None:
    async def test(queue: Queue) -> None:
        run_id = await queue.run()
        await queue.enqueue(run_id, 1)
        [message] = await campaigns_async.campaign_claim(queue.conn, "me")
        async with queue.conn.transaction():
            await complete_in(queue.conn, message)
        assert await queue.done(run_id, sent=1)
        with pytest.raises(ClaimLost):  # done: its claim is no longer current
            await complete_in(queue.conn, message)
        with pytest.raises(TypeError, match="item must be a Batch or a CampaignMessage"):
            await complete_in(queue.conn, message.message_id)

    run(test, db_url)


def test_fail_for_good_fails_a_message_at_once_whatever_retries_are_left(db_url: str) -> None:
    async def test(queue: Queue) -> None:
        run_id = await queue.run(max_retries=3)
        await queue.enqueue(run_id, 4)
        tries: Counter[str] = Counter()

        async def send(message: CampaignMessage) -> None:
            tries[message.recipient] += 1
            if message.recipient.endswith(("0", "2")):
                raise FailForGood(f"{message.recipient} is not a WhatsApp number")

        w = worker(send, db_url)
        async with running(w):
            await wait_until(lambda: queue.done(run_id, sent=2, failed=2), "two sent, two failed")
        assert sorted(tries.values()) == [1, 1, 1, 1], "no retry of either"
        failed = [s for s in (await queue.states(run_id)).values() if s.status == "failed"]
        assert sorted((s.attempt, s.last_error) for s in failed) == [
            (1, "r0 is not a WhatsApp number"),
            (1, "r2 is not a WhatsApp number"),
        ]
        assert (w.processed, w.failed) == (2, 2)

    run(test, db_url)


def test_rate_limited_snoozes_without_a_try_and_pauses_the_whole_fleet(db_url: str) -> None:
    async def test(queue: Queue) -> None:
        run_id = await queue.run(max_retries=0)  # a spent try would fail it for good
        await queue.enqueue(run_id, 6)
        starts: list[tuple[str, int, datetime]] = []
        told = asyncio.Event()
        budget = RateBudget("gateway", per_second=1000, burst=50)

        async def send(message: CampaignMessage) -> None:
            starts.append((message.recipient, message.attempt, await queue.now()))
            if not told.is_set():
                told.set()
                raise RateLimited(1.0, "429 Too Many Requests")

        async def paused_until() -> datetime | None:
            found = await rates_async.rate_status(queue.conn)
            return found[0].paused_until if found else None

        fleet = [
            worker(send, db_url, name=f"w{i}", concurrency=1, batch=1, rate=budget)
            for i in range(2)
        ]
        pause_end: list[datetime] = []
        async with running(*fleet):

            async def paused() -> bool:
                end = await paused_until()
                if end is not None:
                    pause_end.append(end)
                return end is not None

            await wait_until(paused, "the rate key paused")
            await wait_until(lambda: queue.done(run_id, sent=6), "every message sent", 20)
        # no handler of either worker started while the key was paused (1 s up to its end)
        end = pause_end[0]
        during = [at for _, _, at in starts if end - timedelta(seconds=0.95) < at < end]
        assert during == [], (end, starts)
        assert max(at for _, _, at in starts) >= end  # the rest went after it
        # the snoozed message came back as the same try
        snoozed = starts[0][0]
        assert [a for r, a, _ in starts if r == snoozed] == [1, 1]
        assert {s.status for s in (await queue.states(run_id)).values()} == {"sent"}

    run(test, db_url)


def test_a_pause_whose_connection_died_is_made_on_a_sound_one(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A killed backend (a restarted pooler, pg_terminate_backend) under the rate_pause
    of a 429: the pause goes again on a sound connection, for what is left of it, so
    the fleet still waits; a lost pause would leave it sending into the 429s."""
    killed = die_once(monkeypatch, rates_async, "rate_pause")

    async def test(queue: Queue) -> None:
        run_id = await queue.run(max_retries=0)
        await queue.enqueue(run_id, 1)
        told: list[datetime] = []

        async def send(message: CampaignMessage) -> None:
            if not told:
                told.append(await queue.now())
                raise RateLimited(3.0, "429 Too Many Requests")

        async def paused() -> bool:
            found = await rates_async.rate_status(queue.conn)
            return bool(found) and found[0].paused_until is not None

        budget = RateBudget("gateway", per_second=1000, burst=50)
        with caplog.at_level(logging.WARNING, logger="pgcoord"):
            async with running(worker(send, db_url, rate=budget)):
                await wait_until(paused, "the rate key paused")
                [status] = await rates_async.rate_status(queue.conn)
                await wait_until(lambda: queue.done(run_id, sent=1), "the message sent", 20)
        assert killed, "the pause met its dead connection"
        assert status.paused_until is not None
        # paused for what was left of the 3 s once a sound connection made it
        assert told[0] + timedelta(seconds=2) < status.paused_until
        assert status.paused_until <= told[0] + timedelta(seconds=3.5)
        lines = [r.getMessage() for r in caplog.records]
        assert any(line.startswith("pausing the rate key 'gateway' failed") for line in lines)

    run(test, db_url)


def test_a_hung_listen_connection_holds_no_growing_queue_and_work_still_flows(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The LISTEN connection hangs in the idle mark (a server or network that stops
    answering it): each look of the idle worker then goes through the pool instead of
    queueing one more call behind the hung one, and messages enqueued meanwhile are
    claimed and sent all the same."""
    hung = asyncio.Event()

    async def hanging(self: CampaignWork, conn: psycopg.AsyncConnection[Any]) -> Any:
        hung.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(CampaignWork, "idle", hanging)

    async def test(queue: Queue) -> None:
        run_id = await queue.run()
        sent: list[int] = []

        async def send(message: CampaignMessage) -> None:
            sent.append(message.message_id)

        # a call gives up after 1 s: about one look a second while it hangs
        w = worker(send, db_url, lease=timedelta(seconds=2), idle_poll=timedelta(seconds=0.1))
        async with running(w):
            await asyncio.wait_for(hung.wait(), 10)
            waiting = []
            for _ in range(8):
                await asyncio.sleep(0.6)
                waiting.append(w._listener_calls.qsize())
            await queue.enqueue(run_id, 5)
            await wait_until(lambda: queue.done(run_id, sent=5), "the messages sent", 20)
        assert max(waiting) <= runtime.LISTENER_CALLS_MAX, waiting
        assert len(sent) == 5

    run(test, db_url)


def test_the_fleet_never_starts_more_handlers_than_the_shared_budget(db_url: str) -> None:
    async def test(queue: Queue) -> None:
        run_id = await queue.run()
        await queue.enqueue(run_id, 40)
        starts: list[float] = []  # this process's clock: no shared connection in the way
        budget = RateBudget("provider", per_second=20, burst=4)

        async def send(message: CampaignMessage) -> None:
            starts.append(time.monotonic())

        fleet = [
            worker(send, db_url, name=f"w{i}", concurrency=4, batch=8, rate=budget)
            for i in range(3)
        ]
        async with running(*fleet):
            await wait_until(lambda: queue.done(run_id, sent=40), "every message sent", 30)
        starts.sort()
        # in any window, at most burst + rate x its length, plus the slack of reading
        # the clock as a handler starts: a start can come a loop turn after its grant,
        # later than the next one's on a busy machine (a doubled budget still shows)
        for i, first in enumerate(starts):
            for j in range(i, len(starts)):
                window = starts[j] - first + 0.05
                assert j - i + 1 <= 4 + 20 * window, (i, j, starts)
        # and the budget was used: 40 starts took about (40 - 4) / 20 s, not much more
        assert starts[-1] - starts[0] < 6

    run(test, db_url)


def test_a_worker_starting_several_at_a_time_shares_the_budget_with_one_starting_one(
    db_url: str,
) -> None:
    """A refused rate_acquire says how long until the tokens asked for are there: the
    worker that asks for four asks next for what the bucket holds, instead of waiting for
    four while a worker that takes each token as it comes gets them all first."""

    async def test(queue: Queue) -> None:
        run_id = await queue.run()
        await queue.enqueue(run_id, 80)
        budget = RateBudget("shared", per_second=40, burst=4)
        started: Counter[str] = Counter()

        def sender(name: str) -> Any:
            async def send(message: CampaignMessage) -> None:
                started[name] += 1

            return send

        one = worker(sender("one"), db_url, name="one", concurrency=1, batch=1, rate=budget)
        four = worker(sender("four"), db_url, name="four", concurrency=4, batch=4, rate=budget)
        async with running(one, four):
            await wait_until(lambda: queue.done(run_id, sent=80), "every message sent", 30)
        # the one that takes each token as it comes would have them all, but for the
        # claims the other holds when the backlog runs dry (concurrency + batch: 8)
        assert started["four"] >= 20, started

    run(test, db_url)


def test_a_paused_budget_is_waited_out_not_asked_again_and_again(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During a pause a refusal's wait is the pause, not a wait for tokens: one ask made
    at once for what the bucket seems to hold, then the rest of the pause waited out."""
    acquire = rates_async.rate_acquire
    asked: list[float] = []

    async def counted(*args: Any) -> timedelta:
        asked.append(time.monotonic())
        return await acquire(*args)

    monkeypatch.setattr(rates_async, "rate_acquire", counted)

    async def test(queue: Queue) -> None:
        budget = RateBudget("paused", per_second=1, burst=40)
        await rates_async.rate_pause(queue.conn, budget.key, timedelta(seconds=1.5))
        run_id = await queue.run()
        await queue.enqueue(run_id, 40)

        async def send(message: CampaignMessage) -> None:
            pass

        w = worker(send, db_url, concurrency=40, batch=40, rate=budget)
        async with running(w):
            await wait_until(lambda: queue.done(run_id, sent=40), "every message sent", 30)
        first = asked[0]
        during = [t - first for t in asked if t - first < 1.3]
        assert len(during) <= 3, during

    run(test, db_url)


def test_complete_in_sends_the_message_with_the_handlers_writes(db_url: str) -> None:
    """A campaign handler's complete_in commits with its own writes; the worker then
    neither completes the message again nor takes the claim it finds gone for lost."""

    async def test(queue: Queue) -> None:
        await queue.conn.execute("CREATE TABLE sent (message_id bigint)")
        run_id = await queue.run()
        await queue.enqueue(run_id, 3)

        async def send(message: CampaignMessage) -> None:
            async with (
                await psycopg.AsyncConnection.connect(db_url) as conn,
                conn.transaction(),
            ):
                await conn.execute("INSERT INTO sent VALUES (%s)", [message.message_id])
                await complete_in(conn, message)

        w = worker(send, db_url)
        async with running(w):
            await wait_until(lambda: queue.done(run_id, sent=3), "every message sent")
        rows = await (await queue.conn.execute("SELECT count(*) FROM sent")).fetchone()
        assert rows == (3,)
        assert (w.processed, w.failed) == (3, 0)
        states = (await queue.states(run_id)).values()
        assert [(s.status, s.attempt) for s in states] == [("sent", 1)] * 3

    run(test, db_url)


def test_stop_gives_back_what_has_not_started_without_spending_a_try(db_url: str) -> None:
    async def test(queue: Queue) -> None:
        run_id = await queue.run(max_retries=0)
        await queue.enqueue(run_id, 10)
        started = asyncio.Event()
        release = asyncio.Event()

        async def send(message: CampaignMessage) -> None:
            started.set()
            await release.wait()

        w = worker(send, db_url, concurrency=2, batch=5, grace=timedelta(seconds=0.2))
        async with running(w):
            await asyncio.wait_for(started.wait(), 10)
        # stopped: two handlers were cancelled past the grace, the rest never started
        p = await queue.progress(run_id)
        assert (p.pending, p.processing, p.failed, p.sent) == (10, 0, 0, 0)
        states = await queue.states(run_id)
        assert all(s.attempt in (0, 1) for s in states.values())
        # nothing was spent: a new worker sends all ten at their first try
        release.set()
        w2 = worker(send, db_url, name="w2")
        async with running(w2):
            await wait_until(lambda: queue.done(run_id, sent=10), "every message sent")

    run(test, db_url)


async def most_held(queue: Queue, w: CampaignWorker, count: int) -> int:
    """Run `w` over a run of `count` messages until all are sent; the most it held at
    once (the run's processing messages, looked at every 5 ms)."""
    run_id = await queue.run()
    await queue.enqueue(run_id, count)
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            most = max(most, (await queue.progress(run_id)).processing)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    async with running(w):
        await wait_until(lambda: queue.done(run_id, sent=count), "every message sent", 30)
    watcher.cancel()
    return most


def test_the_worker_holds_no_more_claims_than_concurrency_plus_batch(db_url: str) -> None:
    async def test(queue: Queue) -> None:
        w = worker(lambda m: asyncio.sleep(0.005), db_url, concurrency=3, batch=5)
        assert 0 < await most_held(queue, w, 200) <= 3 + 5

    run(test, db_url)


def test_a_rate_bound_worker_holds_no_more_than_concurrency_plus_its_burst(db_url: str) -> None:
    """With a rate budget the claim is capped at the burst, and so are the claims held
    ahead of the handlers: the worker does not sit on what its fleet could start."""

    async def test(queue: Queue) -> None:
        budget = RateBudget("held", per_second=1000, burst=3)
        w = worker(lambda m: asyncio.sleep(0.02), db_url, concurrency=2, batch=15, rate=budget)
        assert (w.batch, w.capacity) == (3, 2 + 3)
        assert 0 < await most_held(queue, w, 40) <= 2 + 3

    run(test, db_url)


def test_a_claim_of_quick_messages_is_completed_in_one_call_with_fewer_slots_than_the_batch(
    db_url: str, calls: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Successes wait for the rest of their claim while some of it waits for a slot, and
    the claims stay whole (no group split). No time limit ends a wait here: the linger
    is made longer than the test."""
    monkeypatch.setattr(runtime, "COMPLETE_LINGER", 60.0)

    async def test(queue: Queue) -> None:
        run_id = await queue.run()
        await queue.enqueue(run_id, 60)  # four groups of 15

        async def send(message: CampaignMessage) -> None:
            return None

        w = worker(send, db_url, concurrency=4, batch=15)
        async with running(w):
            await wait_until(lambda: queue.done(run_id, sent=60), "every message sent")
        assert (calls["claimed"], calls["claims of 15"]) == (60, 4), calls
        assert (calls["complete"], calls["completions of 15"]) == (4, 4), calls
        # one round trip per claim: after the first, each claim rode with a completion
        assert calls["claimed alone"] == 15, calls

    run(test, db_url)


def test_a_message_settled_before_its_first_beat_starts_no_heartbeat(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat's task starts a third of the lease after the claim; a quick claim
    costs a timer only (test_worker.py checks the beats of long handlers)."""
    beats: list[Any] = []
    heartbeat = runtime.Runtime._heartbeat

    def counted_heartbeat(self: Any, lease: Any) -> Any:
        beats.append(lease)
        return heartbeat(self, lease)

    monkeypatch.setattr(runtime.Runtime, "_heartbeat", counted_heartbeat)

    async def test(queue: Queue) -> None:
        run_id = await queue.run()
        await queue.enqueue(run_id, 30)

        async def send(message: CampaignMessage) -> None:
            return None

        w = worker(send, db_url, lease=timedelta(minutes=5))  # the first beat after 100 s
        async with running(w):
            await wait_until(lambda: queue.done(run_id, sent=30), "every message sent")
        assert w.processed == 30 and beats == []

    run(test, db_url)


def test_stale_messages_are_skipped_by_one_worker_of_the_fleet(db_url: str) -> None:
    async def test(queue: Queue) -> None:
        run_id = await campaigns_async.campaign_create(
            queue.conn, "stale", stale_after=timedelta(seconds=1)
        )
        past = (await queue.now()) - timedelta(hours=1)
        items = [{"recipient": f"old{i}", "scheduled_at": past} for i in range(5)]
        await campaigns_async.campaign_enqueue(queue.conn, run_id, items)
        other = await queue.run("other")  # what these workers claim: nothing is in it
        sent: list[int] = []

        async def send(message: CampaignMessage) -> None:
            sent.append(message.message_id)

        every = timedelta(seconds=0.2)
        fleet = [
            worker(send, db_url, name=f"w{i}", run_id=other, skip_stale_every=every)
            for i in range(2)
        ]
        async with running(*fleet):

            async def skipped() -> bool:
                return (await queue.progress(run_id)).skipped == 5

            await wait_until(skipped, "the stale messages skipped")
        assert sent == []  # these workers claim only the other run: upkeep skipped them

    run(test, db_url)


def test_one_heartbeat_per_claim_keeps_every_message_of_it(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The messages of one claim share its token's lease: one extend per beat keeps them
    all, however many handlers run past the lease."""
    extends: list[int] = []
    extend = campaigns_async.campaign_extend

    async def counted_extend(conn: psycopg.AsyncConnection[Any], *args: Any) -> Any:
        extends.append(args[1])  # the claim token
        return await extend(conn, *args)

    monkeypatch.setattr(campaigns_async, "campaign_extend", counted_extend)

    async def test(queue: Queue) -> None:
        run_id = await queue.run()
        await queue.enqueue(run_id, 6)  # one group: one claim, one token

        async def send(message: CampaignMessage) -> None:
            await asyncio.sleep(2.0)  # past the lease of 1.5 s

        w = worker(send, db_url, lease=timedelta(seconds=1.5), concurrency=8)
        async with running(w):
            await wait_until(lambda: queue.done(run_id, sent=6), "every message sent")
        states = await queue.states(run_id)
        assert {s.attempt for s in states.values()} == {1}, states  # never lost
        assert (w.processed, w.failed) == (6, 0)
        # a beat every 0.5 s for 2 s: about 4 extends of the one token, not 6 per beat
        assert len(set(extends)) == 1 and 3 <= len(extends) <= 6, extends

    run(test, db_url)


def test_a_lost_claim_cancels_every_handler_of_it(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the heartbeat finds the claim gone, every handler of the claim is cancelled
    and none of its messages is completed or failed by this worker: they come back once
    their lease has run out, as their second try."""
    extend = campaigns_async.campaign_extend
    lost_once: list[bool] = []

    async def losing_extend(conn: psycopg.AsyncConnection[Any], *args: Any) -> Any:
        if not lost_once:
            lost_once.append(True)
            return None  # as if another worker held the claim now
        return await extend(conn, *args)

    monkeypatch.setattr(campaigns_async, "campaign_extend", losing_extend)

    async def test(queue: Queue) -> None:
        run_id = await queue.run()
        await queue.enqueue(run_id, 4)
        cancelled: list[int] = []

        async def send(message: CampaignMessage) -> None:
            if message.attempt == 1:
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    cancelled.append(message.message_id)
                    raise

        w = worker(send, db_url, lease=timedelta(seconds=1.5))
        async with running(w):
            await wait_until(lambda: queue.done(run_id, sent=4), "every message sent", 20)
        assert len(cancelled) == 4, cancelled
        states = await queue.states(run_id)
        assert {s.attempt for s in states.values()} == {2}, states
        assert (w.processed, w.failed) == (4, 0)

    run(test, db_url)


def test_the_completion_goes_alone_when_its_claim_fails(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error of the claim undoes the completion it rode with: the worker then completes
    alone at once (no message waits for its lease to be sent again)."""
    broken: list[int] = []

    async def broken_claim(conn: psycopg.AsyncConnection[Any], *args: Any) -> Any:
        broken.append(len(args[0]))
        raise psycopg.errors.RaiseException("the claim broke")

    monkeypatch.setattr(campaigns_async, "campaign_completed_then_claim", broken_claim)

    async def test(queue: Queue) -> None:
        run_id = await queue.run()
        await queue.enqueue(run_id, 30)

        async def send(message: CampaignMessage) -> None:
            return None

        w = worker(send, db_url, lease=timedelta(minutes=5))
        async with running(w):
            await wait_until(lambda: queue.done(run_id, sent=30), "every message sent")
        states = await queue.states(run_id)
        assert {s.attempt for s in states.values()} == {1}, states
        assert w.processed == 30 and broken

    run(test, db_url)


def test_the_deadlines_of_ended_handlers_do_not_pile_up_behind_a_long_one(db_url: str) -> None:
    """One timer watches every handler's deadline; those of handlers that ended behind
    one still running are dropped, so the worker's memory stays bounded whatever the
    backlog."""

    async def test(queue: Queue) -> None:
        run_id = await queue.run()
        await queue.enqueue(run_id, 300)
        release = asyncio.Event()

        async def send(message: CampaignMessage) -> None:
            if message.payload["i"] == 0:
                await release.wait()  # runs until the other 299 are sent

        w = worker(send, db_url, concurrency=2, timeout=timedelta(seconds=30))
        most = 0

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, len(w._deadlines))
                await asyncio.sleep(0.005)

        async def others_sent() -> bool:
            return (await queue.progress(run_id)).sent == 299

        watcher = asyncio.create_task(watch())
        async with running(w):
            await wait_until(others_sent, "the other 299 sent", 30)
            release.set()
            await wait_until(lambda: queue.done(run_id, sent=300), "every message sent")
        watcher.cancel()
        assert 0 < most <= 4 * w.capacity + 1, most

    run(test, db_url)


def test_an_idle_worker_sends_a_message_due_in_seconds_when_it_falls_due(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that found nothing due sleeps its longest idle poll (5 s). A message
    enqueued meanwhile, due within that sleep, is sent when it falls due, not when the
    sleep ends: the enqueue wakes the worker, which sleeps on until the message is due
    (campaign_idle: marked idle, so that the enqueue notifies, and campaign_due_in),
    without polling hard."""
    idle = campaigns_async.campaign_idle
    answers: list[timedelta | None] = []
    asleep = asyncio.Event()

    async def spied_idle(conn: psycopg.AsyncConnection[Any], *args: Any) -> Any:
        look = await idle(conn, *args)
        answers.append(look.due_in)
        if look.due_in is None and look.settled:
            asleep.set()
        return look

    monkeypatch.setattr(campaigns_async, "campaign_idle", spied_idle)

    async def test(queue: Queue) -> None:
        run_id = await queue.run()
        started: list[datetime] = []

        async def send(message: CampaignMessage) -> None:
            started.append(await queue.now())

        w = worker(send, db_url, idle_poll=CampaignWork.max_idle_poll)
        async with running(w):
            await asyncio.wait_for(asleep.wait(), 10)  # from here it sleeps 5 s, unless woken
            due = (await queue.now()) + timedelta(seconds=2)
            items = [{"recipient": "soon", "scheduled_at": due}]
            await campaigns_async.campaign_enqueue(queue.conn, run_id, items)
            asked = len(answers)
            await wait_until(lambda: queue.done(run_id, 1), "the message sent")
        assert due <= started[0] <= due + timedelta(seconds=1.5)
        # woken: nothing due yet, a sleep until it is; after its claim, nothing more
        # due: a few looks in all over those 2 s, not a tight loop
        assert len(answers) - asked <= 4

    run(test, db_url)


# the marks of a worker of one run: idle (campaign_idle) and busy (campaign_busy), session
# advisory locks of its LISTEN connection
MARKS = (
    "SELECT l.classid::bigint FROM pg_locks AS l WHERE l.locktype = 'advisory' AND l.granted"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND l.classid IN (1885823845, 1885823846) AND l.objid = %s::oid"
)
IDLE, BUSY = 1885823845, 1885823846


def test_the_worker_says_when_it_is_idle_and_when_its_claims_come_back_full(db_url: str) -> None:
    """Enqueues skip the NOTIFY only while the run's workers are busy and none is idle: a
    worker that found nothing holds the idle mark (and an enqueue wakes it at once), one
    whose claims come back full holds the busy mark instead, and is idle again once the
    run has nothing left for it."""

    async def test(queue: Queue) -> None:
        run_id = await queue.run()
        release = asyncio.Event()
        started: list[int] = []

        async def send(message: CampaignMessage) -> None:
            started.append(message.message_id)
            await release.wait()

        async def marked(*expected: int) -> bool:
            cur = await queue.conn.execute(MARKS, (run_id,))
            return sorted(row[0] for row in await cur.fetchall()) == list(expected)

        w = worker(
            send, db_url, run_id=run_id, concurrency=4, batch=4, idle_poll=timedelta(seconds=5)
        )
        async with running(w):
            await wait_until(lambda: marked(IDLE), "the idle worker's mark")
            await queue.enqueue(run_id, 40)
            woken = time.monotonic()

            async def busy() -> bool:
                return len(started) == 4 and await marked(BUSY)

            await wait_until(busy, "a busy worker, marked busy")
            assert time.monotonic() - woken < 2, "woken by the enqueue, not its 5 s poll"
            release.set()
            await wait_until(lambda: queue.done(run_id, 40), "every message sent")
            await wait_until(lambda: marked(IDLE), "idle again, marked idle")

    run(test, db_url)


@pytest.mark.parametrize(
    ("budget", "argument"),
    [
        (RateBudget("refused", per_second=-1.0, burst=5), "p_per_second"),
        (RateBudget("refused", per_second=1.0, burst=0), "p_burst"),
        (RateBudget("refused", per_second=1.0, burst=-3), "p_burst"),
    ],
    ids=["negative-rate", "burst-0", "negative-burst"],
)
def test_a_rate_budget_the_server_refuses_stops_the_worker_with_the_error(
    db_url: str, budget: RateBudget, argument: str
) -> None:
    """A bad argument is no outage: a budget out of range (a negative rate, a burst
    below 1) is refused by rate_acquire, and retrying cannot mend it. The worker gives
    back what it claimed, without spending a try, and run() raises the server's error
    naming the argument."""

    async def test(queue: Queue) -> None:
        run_id = await queue.run()
        await queue.enqueue(run_id, 3)

        async def send(message: CampaignMessage) -> None:
            raise AssertionError("no handler may start without a granted budget")

        w = worker(send, db_url, rate=budget)
        with pytest.raises(InvalidArgument, match=argument):
            await asyncio.wait_for(w.run(), 15)
        p = await queue.progress(run_id)
        assert (p.pending, p.processing, p.sent, p.failed) == (3, 0, 0, 0)
        states = await queue.states(run_id)
        assert all(s.attempt == 0 for s in states.values()), states  # no try spent

    run(test, db_url)


def test_a_handler_must_take_one_argument_the_message() -> None:
    async def two(message: CampaignMessage, extra: Any) -> None:
        pass

    async def none() -> None:
        pass

    for handler in (two, none):
        with pytest.raises(TypeError, match=r"the handler takes one argument, the message"):
            CampaignWorker(handler, "dbname=unused")  # type: ignore[arg-type]


def test_delays_beyond_the_servers_maxima_are_capped_at_them(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A provider's Retry-After of days: RateLimited(2 days) pauses the rate key for its
    maximum (1 day) and snoozes the message for 2 days; Retry(60 days) puts the message
    back after the longest retry the queue takes (30 days), as one failed try. Neither is
    refused by the server and left to the lease (attempt 2, 'lease expired'), nor said
    done when it was not."""

    async def test(queue: Queue) -> None:
        run_id = await queue.run(max_retries=3)
        await queue.enqueue(run_id, 2)
        budget = RateBudget("slow-provider", per_second=100, burst=10)

        async def send(message: CampaignMessage) -> None:
            if message.payload["i"] == 0:
                raise RateLimited(timedelta(days=2), "429 Too Many Requests")
            raise Retry(timedelta(days=60), "come back in two months")

        w = worker(send, db_url, concurrency=2, batch=2, rate=budget)

        async def both_back() -> bool:
            return w.failed == 2  # a snooze and a failed try

        async with running(w):
            await wait_until(both_back, "both messages put back")
        now = await queue.now()
        [pause] = await rates_async.rate_status(queue.conn)
        assert pause.paused_until is not None
        assert abs(pause.paused_until - now - config.RATE_PAUSE_MAX) < timedelta(minutes=1)
        rows = await (
            await queue.conn.execute(
                "SELECT (payload->>'i')::int, attempt, snoozes, next_attempt_at, last_error"
                " FROM pgcoord.campaign_message_status s JOIN pgcoord.campaign_messages m"
                " ON m.id = s.message_id WHERE s.run_id = %s ORDER BY 1",
                [run_id],
            )
        ).fetchall()
        [(_, tries0, snoozes0, next0, _), (_, tries1, snoozes1, next1, error1)] = rows
        assert (tries0, snoozes0) == (0, 1)  # snoozed: no try spent
        assert abs(next0 - now - timedelta(days=2)) < timedelta(minutes=1)
        assert (tries1, snoozes1, error1) == (1, 0, "come back in two months")
        assert abs(next1 - now - config.CAMPAIGN_DELAY_MAX) < timedelta(minutes=1)
        said = [r.getMessage() for r in caplog.records if r.name == "pgcoord.worker"]
        assert any("; the rate key is paused for 86400 s" in line for line in said), said
        capped = {
            line.split(" of message ")[0] + ": " + line.split(" asked for ")[1]
            for line in said
            if " capped at the longest the database takes, " in line
        }
        assert capped == {
            "the pause of the rate key: 172800 s, capped at the longest the database takes, "
            "86400 s",
            "the retry: 5184000 s, capped at the longest the database takes, 2592000 s",
        }, said
        assert not [r for r in caplog.records if r.exc_info], "nothing was refused"

    with caplog.at_level(logging.INFO, logger="pgcoord.worker"):
        run(test, db_url)


def each_sent_once_at_first_try(
    db_url: str, caplog: pytest.LogCaptureFixture, count: int, lease: timedelta, said: str
) -> None:
    """A worker (batches of 10) sends `count` messages: each once, at its first attempt
    (none came back after its lease); a warning says `said`."""

    async def test(queue: Queue) -> None:
        run_id = await queue.run()
        await queue.enqueue(run_id, count)
        sent: Counter[int] = Counter()

        async def send(message: CampaignMessage) -> dict[str, Any]:
            sent[message.message_id] += 1
            return {}

        with caplog.at_level(logging.WARNING, logger="pgcoord"):
            async with running(worker(send, db_url, batch=10, lease=lease)):
                await wait_until(lambda: queue.done(run_id, sent=count), "every message sent")
        states = await queue.states(run_id)
        assert {s.attempt for s in states.values()} == {1}, "none came back after its lease"
        assert set(sent.values()) == {1}, "none sent twice"
        assert any(said in r.getMessage() for r in caplog.records)

    run(test, db_url)


def test_a_completion_whose_connection_died_goes_once_more(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A killed backend (a restarted pooler, pg_terminate_backend) under a completion:
    it goes again on a sound connection, instead of leaving sent messages to their lease
    and a second send."""
    killed = die_once(monkeypatch, campaigns_async, "campaign_completed_then_claim")
    each_sent_once_at_first_try(db_url, caplog, 40, timedelta(seconds=30), "trying once more")
    assert killed, "a completion met its dead connection"


def test_a_claim_answered_after_the_call_was_given_up_on_is_not_left_to_its_lease(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A pooler PAUSEd holds a completion and claim past the worker's call timeout, then
    runs it: the messages it claimed are given back at once, with no try spent, and sent
    at their first attempt, not left to wait out their lease and come back as attempt
    2."""
    real = campaigns_async.campaign_completed_then_claim
    held: list[float] = []

    async def held_once(conn: psycopg.AsyncConnection[Any], *args: Any) -> Any:
        if not held:
            held.append(time.monotonic())
            await asyncio.sleep(2.0)  # past the call timeout (1.5 s for a 3 s lease)
        return await real(conn, *args)

    monkeypatch.setattr(campaigns_async, "campaign_completed_then_claim", held_once)
    each_sent_once_at_first_try(db_url, caplog, 30, timedelta(seconds=3), "answered after all")
    assert held, "a completion and claim was held up"


def test_a_stop_says_how_many_messages_it_holds_and_how_many_are_in_handlers(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(queue: Queue) -> None:
        run_id = await queue.run()
        await queue.enqueue(run_id, 5)
        started = asyncio.Event()

        async def send(message: CampaignMessage) -> dict[str, Any]:
            started.set()
            await asyncio.sleep(0.3)
            return {}

        with caplog.at_level(logging.INFO, logger="pgcoord"):
            w = worker(send, db_url, batch=5, concurrency=1, grace=timedelta(seconds=5))
            async with running(w):
                await asyncio.wait_for(started.wait(), 10)
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stopping")]
        assert lines and "for 5 messages (1 in handlers)" in lines[0], lines

    run(test, db_url)
