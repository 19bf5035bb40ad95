"""One budget across all callers: 8 connections released together by a barrier ask for
tokens of one key for about two seconds, each coming back when it was told to. The total
granted never exceeds the burst plus the rate times the time elapsed (server clock), at
any moment of the run, and it reaches a fair share of that ceiling."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from ratekit import EPSILON, Timed, acquire, stored, timed_acquire
from sqlkit import Conn, connections, fan_out, server_clock

CALLERS = 8
RATE, BURST = 10.0, 3
RUN = timedelta(seconds=2)


def ask_until(conn: Conn, key: str, cost: int, until: datetime) -> list[Timed]:
    """Ask again and again until the server clock passes `until`, sleeping the answered
    wait between refusals (capped, so the run ends on time)."""
    calls = []
    while True:
        timed = timed_acquire(conn, key, RATE, BURST, cost)
        calls.append(timed)
        if timed.after >= until:
            return calls
        if not timed.granted:
            time.sleep(min(timed.wait, until - timed.after).total_seconds())


def ceiling(start: datetime, at: datetime) -> float:
    return BURST + RATE * (at - start).total_seconds() + EPSILON


def test_the_total_granted_stays_within_the_budget(db_url: str) -> None:
    with connections(db_url, CALLERS + 1) as conns:
        observer, callers = conns[0], conns[1:]
        start = server_clock(observer)
        until = start + RUN
        runs = fan_out(
            callers, lambda i, conn: ask_until(conn, "shared", 1 + i % 3, until), timeout=60
        )
        end = server_clock(observer)

    calls = [timed for run in runs for timed in run]
    grants = sorted((timed for timed in calls if timed.granted), key=lambda timed: timed.after)
    assert all(timed.wait > timedelta(0) for timed in calls if not timed.granted)

    # every grant's own clock reading lies before its `after`: the grants that had
    # returned by any moment fit the budget up to that moment
    spent = 0
    for timed in grants:
        spent += timed.cost
        assert spent <= ceiling(start, timed.after), (
            f"{spent} tokens granted by {timed.after}, budget {ceiling(start, timed.after)}"
        )
    total = sum(timed.cost for timed in grants)
    assert total <= ceiling(start, end)
    assert total >= 0.5 * ceiling(start, until), (
        f"only {total} of {ceiling(start, until):.1f} tokens granted"
    )
    assert len(calls) > len(grants), "the callers were refused too"


def test_different_keys_have_budgets_of_their_own(db_url: str) -> None:
    with connections(db_url, CALLERS) as conns:
        results = fan_out(
            conns,
            lambda i, conn: [acquire(conn, f"key-{i % 2}", 0.001, 4) for _ in range(CALLERS)],
        )
        granted = [sum(wait == timedelta(0) for wait in waits) for waits in results]
        assert sum(granted) == 2 * 4, "each key granted exactly its burst"
        for key in ("key-0", "key-1"):
            bucket = stored(conns[0], key)
            assert bucket is not None and 0 <= bucket["tokens"] < 0.01
