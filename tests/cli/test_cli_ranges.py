"""The ranges of the commands' options are those of the SQL arguments they become:
the server accepts each bound of an option and refuses the value just past it, so the
command lets nothing through that the server would refuse (where the SQL takes any
positive interval, the command's shortest is 1 ms)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from pgcoord import InvalidArgument, campaigns, inbox, locks, rates
from pgcoord.cli import options

MICROSECOND = timedelta(microseconds=1)
Call = Callable[[psycopg.Connection[Any], Any], object]


def claim_lease(conn: psycopg.Connection[Any], lease: timedelta) -> object:
    return inbox.buffer_claim(conn, "w", 1, lease)


def claim_limit(conn: psycopg.Connection[Any], limit: int) -> object:
    return inbox.buffer_claim(conn, "w", limit)


def fail_retry_in(conn: psycopg.Connection[Any], retry_in: timedelta) -> object:
    return inbox.buffer_fail(conn, "c", 1, "e", retry_in)


def claim_worker(conn: psycopg.Connection[Any], worker: str) -> object:
    return inbox.buffer_claim(conn, worker)


def revive_conversation(conn: psycopg.Connection[Any], key: str) -> object:
    return inbox.buffer_revive(conn, key)


def campaign_claim_lease(conn: psycopg.Connection[Any], lease: timedelta) -> object:
    return campaigns.campaign_claim(conn, "w", 1, lease)


def campaign_claim_limit(conn: psycopg.Connection[Any], limit: int) -> object:
    return campaigns.campaign_claim(conn, "w", limit)


def rate_key(conn: psycopg.Connection[Any], key: str) -> object:
    return rates.rate_acquire(conn, key, 1, 1)


def rate_per_second(conn: psycopg.Connection[Any], per_second: float) -> object:
    return rates.rate_acquire(conn, "k", per_second, 1)


def rate_burst(conn: psycopg.Connection[Any], burst: int) -> object:
    return rates.rate_acquire(conn, "k", 1, burst)


def skip_stale_older_than(conn: psycopg.Connection[Any], older_than: timedelta) -> object:
    return campaigns.campaign_skip_stale(conn, older_than)


def prune_ended(conn: psycopg.Connection[Any], older_than: timedelta) -> object:
    return campaigns.campaign_prune(conn, older_than)


def skip_stale_lock_ttl(conn: psycopg.Connection[Any], every: timedelta) -> object:
    """The campaign worker's stale-message check holds a lease lock of its period."""
    return locks.lock_acquire(conn, "k", "o", every)


def bounds(
    kind: options.Seconds | options.Integer | options.PerSecond | options.Text,
) -> list[tuple[Any, bool]]:
    """(value, accepted by the server) at and just past each end of the option's range."""
    if isinstance(kind, options.Seconds):
        least, most = timedelta(seconds=kind.least), timedelta(seconds=kind.most)
        below = least - (MICROSECOND if kind.least == 0 else least)
        return [(least, True), (below, False), (most, True), (most + MICROSECOND, False)]
    if isinstance(kind, options.PerSecond):
        return [(kind.least, True), (0.0, False), (kind.most, True), (kind.most * 1.000001, False)]
    if isinstance(kind, options.Integer):
        return [
            (kind.least, True),
            (kind.least - 1, False),
            (kind.most, True),
            (kind.most + 1, False),
        ]
    return [("x" * kind.most, True), ("x" * (kind.most + 1), False), ("", False)]


@pytest.mark.parametrize(
    ("kind", "call", "argument"),
    [
        (options.LEASE, claim_lease, "p_lease"),
        (options.CLAIM_LIMIT, claim_limit, "p_limit"),
        (options.RETRY_IN, fail_retry_in, "p_retry_in"),
        (options.NAME, claim_worker, "p_worker"),
        (options.NAME, revive_conversation, "p_conversation_key"),
        (options.LEASE, campaign_claim_lease, "p_lease"),
        (options.CLAIM_LIMIT, campaign_claim_limit, "p_limit"),
        (options.NAME, rate_key, "p_key"),
        (options.RATE, rate_per_second, "p_per_second"),
        (options.BURST, rate_burst, "p_burst"),
        (options.OLDER_THAN, skip_stale_older_than, "p_older_than"),
        (options.PRUNE_ENDED, prune_ended, "p_older_than"),
    ],
    ids=[
        "--lease",
        "--concurrency",
        "--retry-in",
        "--name",
        "revive CONVERSATION",
        "--campaign --lease",
        "--campaign --batch",
        "--rate-key",
        "--rate",
        "--burst",
        "maintain --older-than",
        "maintain --prune-ended",
    ],
)
def test_an_option_range_is_its_sql_argument_range(
    conn: psycopg.Connection[Any],
    kind: options.Seconds | options.Integer | options.PerSecond | options.Text,
    call: Call,
    argument: str,
) -> None:
    for value, accepted in bounds(kind):
        if accepted:
            call(conn, value)
        else:
            with pytest.raises(InvalidArgument, match=argument):
                call(conn, value)


def test_skip_stale_every_is_a_lock_ttl_or_0_for_never(conn: psycopg.Connection[Any]) -> None:
    """0 turns the check off (nothing is sent); any other value is the period's lease."""
    kind = options.SKIP_STALE_EVERY
    assert kind.least == 0
    most = timedelta(seconds=kind.most)
    skip_stale_lock_ttl(conn, timedelta(milliseconds=1))
    skip_stale_lock_ttl(conn, most)
    with pytest.raises(InvalidArgument, match="p_ttl"):
        skip_stale_lock_ttl(conn, most + MICROSECOND)
