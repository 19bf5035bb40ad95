"""How long the torture waits for a stopped campaign worker's messages to be tried
again by another (`poll_behind`): the first bound, then longer only while the backlog
due before them shrinks each round, never past the limit; and that backlog as the queue
holds it (`Campaign.ahead`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, cast

import psycopg

from pgcoord.campaigns import campaign_claim, campaign_create, campaign_enqueue
from pgcoord.demo.server import server_clock
from pgcoord.demo.torture_campaign import Campaign
from pgcoord.demo.waiting import poll_behind

ROUND = 0.02  # seconds of one bound, in these tests
STEP = 0.001  # seconds between looks


def answers(after: int) -> tuple[Callable[[], str | None], list[int]]:
    """A check that answers "tried" on its `after`-th look after the first round."""
    rounds = [0]

    def check() -> str | None:
        return "tried" if rounds[0] >= after else None

    return check, rounds


def counting(values: Iterator[int], rounds: list[int]) -> Callable[[], int]:
    """`ahead`, answering the next of `values` and counting the rounds it ended."""

    def ahead() -> int:
        rounds[0] += 1
        return next(values)

    return ahead


def test_answer_within_the_first_round_needs_no_backlog() -> None:
    asked = []
    assert poll_behind(lambda: "tried", ROUND, lambda: asked.append(1) or 5, 1.0, STEP) == "tried"
    assert asked == []


def test_waits_on_while_the_backlog_shrinks() -> None:
    check, rounds = answers(after=3)
    ahead = counting(iter([9, 4, 1, 1]), rounds)
    assert poll_behind(check, ROUND, ahead, 5.0, STEP) == "tried"
    assert rounds == [3]


def test_gives_up_when_the_backlog_stops_shrinking() -> None:
    check, rounds = answers(after=10)
    ahead = counting(iter([5, 3, 3, 2, 1]), rounds)
    assert poll_behind(check, ROUND, ahead, 5.0, STEP) is None
    assert rounds == [3]  # 5, 3, then 3 again: no progress


def test_gives_up_at_once_with_nothing_ahead() -> None:
    check, rounds = answers(after=10)
    assert poll_behind(check, ROUND, counting(iter([0, 5]), rounds), 5.0, STEP) is None
    assert rounds == [1]


def test_never_waits_past_its_limit() -> None:
    check, rounds = answers(after=10**9)
    ahead = counting(iter(range(10**9, 0, -1)), rounds)  # shrinking for ever
    started = time.monotonic()
    assert poll_behind(check, ROUND, ahead, 0.2, STEP) is None
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 0.2 + 2 * ROUND + 0.5
    assert rounds[0] >= 5


def test_ahead_counts_the_messages_waiting_due_by_then(conn: psycopg.Connection[Any]) -> None:
    run_id = campaign_create(conn, "takeover", 3, [timedelta(seconds=1)])
    now = server_clock(conn)
    items = [
        {"recipient": f"+4912345{n:04d}", "payload": {}, "scheduled_at": now + timedelta(minutes=m)}
        for n, m in enumerate([-3, -2, -1, -1, 30, 60])
    ]
    assert campaign_enqueue(conn, run_id, items) == 6
    campaign = Campaign(cast(Any, None), run_id)
    assert campaign.ahead(conn, now) == 4
    assert campaign.ahead(conn, now - timedelta(seconds=90)) == 2
    assert campaign.ahead(conn, now + timedelta(minutes=45)) == 5
    claimed = campaign_claim(conn, "w1", 2, timedelta(seconds=30))
    assert len(claimed) == 2  # the two due first: held, not waiting
    assert campaign.ahead(conn, now) == 2
    assert campaign.ahead(conn, now - timedelta(seconds=90)) == 0
    other = campaign_create(conn, "other", 3, [timedelta(seconds=1)])
    campaign_enqueue(conn, other, items[:1])
    assert campaign.ahead(conn, now) == 2  # only its own run
