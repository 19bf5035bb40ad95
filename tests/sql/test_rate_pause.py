"""rate_pause: every caller of the key is refused until the pause ends, told the remaining
pause (or the wait for tokens when that is later); a pause never shortens the one in
force, however concurrent; and rate_reset lifts it."""

from __future__ import annotations

import time
from datetime import timedelta

from inboxkit import until_server_time
from ratekit import (
    GRANTED,
    MICROSECOND,
    Timed,
    acquire,
    pause,
    reset,
    snapshot,
    status,
    stored,
    timed_acquire,
)
from sqlkit import Conn, connections, fan_out, server_clock

CALLERS = 8
# plenty of tokens: only the pause refuses
RATE, BURST = 1000.0, 1000


def ask_until_granted(conn: Conn, key: str) -> list[Timed]:
    calls = []
    while True:
        timed = timed_acquire(conn, key, RATE, BURST)
        calls.append(timed)
        if timed.granted:
            return calls
        time.sleep(min(timed.wait.total_seconds(), 0.05))


def test_every_caller_waits_out_the_pause(db_url: str) -> None:
    with connections(db_url, CALLERS + 1) as conns:
        observer, callers = conns[0], conns[1:]
        assert acquire(observer, "k", RATE, BURST) == GRANTED
        before = server_clock(observer)
        until = pause(observer, "k", timedelta(seconds=1))
        assert (
            before + timedelta(seconds=1) <= until <= server_clock(observer) + timedelta(seconds=1)
        )

        runs = fan_out(callers, lambda i, conn: ask_until_granted(conn, "k"))

    for calls in runs:
        first, *_, last = calls
        assert not first.granted, "every caller was refused while the pause was in force"
        for timed in calls[:-1]:
            # told exactly the remaining pause, as of the call's own clock reading
            assert timed.before < until
            assert until - timed.after <= timed.wait <= until - timed.before + MICROSECOND
        assert last.granted and last.after >= until


def test_a_pause_refuses_a_full_bucket_and_a_new_key(conn: Conn) -> None:
    until = pause(conn, "new", timedelta(seconds=30))
    timed = timed_acquire(conn, "new", RATE, BURST)
    assert until - timed.after <= timed.wait <= until - timed.before + MICROSECOND
    view = status(conn, "new")
    assert view is not None
    assert (view["tokens"], view["burst"], view["paused_until"]) == (None, None, until)


def test_the_wait_is_the_later_of_the_pause_and_the_tokens(conn: Conn) -> None:
    assert acquire(conn, "k", 1.0, 5, 5) == GRANTED  # empty: 5 tokens in 5 s
    bucket = stored(conn, "k")
    assert bucket is not None
    ready_at = bucket["tokens_at"] + timedelta(seconds=5)

    short = pause(conn, "k", timedelta(seconds=1))
    timed = timed_acquire(conn, "k", 1.0, 5, 5)
    assert timed.after + timed.wait >= ready_at > short, "the tokens come later: their wait"
    assert timed.before + timed.wait <= ready_at + MICROSECOND

    long = pause(conn, "k", timedelta(seconds=20))
    timed = timed_acquire(conn, "k", 1.0, 5, 1)
    assert timed.after + timed.wait >= long > ready_at, "the pause ends later: its wait"
    assert timed.before + timed.wait <= long + MICROSECOND


def test_a_later_pause_wins_and_a_shorter_never_shortens(conn: Conn) -> None:
    first = pause(conn, "k", timedelta(seconds=10))
    assert pause(conn, "k", timedelta(seconds=1)) == first
    assert pause(conn, "k", timedelta(0)) == first
    before = server_clock(conn)
    later = pause(conn, "k", timedelta(seconds=20))
    assert later >= before + timedelta(seconds=20) > first
    assert pause(conn, "k", timedelta(seconds=10)) == later
    view = status(conn, "k")
    assert view is not None and view["paused_until"] == later


def test_concurrent_pauses_keep_the_latest_end(db_url: str) -> None:
    lengths = [timedelta(seconds=s) for s in (5, 1, 8, 0, 3, 8, 2, 7)]
    for round_ in range(5):
        key = f"k{round_}"
        with connections(db_url, CALLERS) as conns:
            results = fan_out(
                conns,
                lambda i, conn: (server_clock(conn), pause(conn, key, lengths[i])),  # noqa: B023
            )
            view = status(conns[0], key)
        assert view is not None
        for (before, until), length in zip(results, lengths, strict=True):
            assert until >= before + length
            assert until <= view["paused_until"]
        assert view["paused_until"] == max(until for _, until in results)


def test_a_pause_of_zero_pauses_nobody(conn: Conn) -> None:
    before = server_clock(conn)
    until = pause(conn, "k", timedelta(0))
    assert before <= until <= server_clock(conn)
    assert acquire(conn, "k", RATE, BURST) == GRANTED


def test_after_the_pause_the_bucket_has_refilled_meanwhile(conn: Conn) -> None:
    assert acquire(conn, "k", 10.0, 3, 3) == GRANTED
    until = pause(conn, "k", timedelta(seconds=1))
    before = snapshot(conn)
    timed = timed_acquire(conn, "k", 10.0, 3, 1)
    if timed.before < until:  # unless this test stalled for the whole second
        assert not timed.granted
        assert snapshot(conn) == before, "a refusal during the pause writes nothing"
    until_server_time(conn, until)
    assert [acquire(conn, "k", 10.0, 3, 1) for _ in range(3)] == [GRANTED] * 3


def test_reset_lifts_the_pause_and_fills_the_bucket(conn: Conn) -> None:
    assert acquire(conn, "k", 0.001, 2, 2) == GRANTED
    pause(conn, "k", timedelta(hours=1))
    assert acquire(conn, "k", 0.001, 2, 1) > timedelta(minutes=59)
    assert reset(conn, "k") is True
    assert status(conn, "k") is None
    waits = [acquire(conn, "k", 0.001, 2, 1) for _ in range(3)]
    assert waits[:2] == [GRANTED, GRANTED] and waits[2] > GRANTED
    assert reset(conn, "k") is True and reset(conn, "k") is False
