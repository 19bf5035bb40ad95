"""The ranges of `pgcoord work`'s options are those of the SQL arguments they become:
the server accepts each bound of an option and refuses the value just past it, so the
command lets nothing through that the server would refuse (where the SQL takes any
positive interval, the command's shortest is 1 ms)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from pgcoord import InvalidArgument, inbox
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


def bounds(kind: options.Seconds | options.Integer | options.Text) -> list[tuple[Any, bool]]:
    """(value, accepted by the server) at and just past each end of the option's range."""
    if isinstance(kind, options.Seconds):
        least, most = timedelta(seconds=kind.least), timedelta(seconds=kind.most)
        below = least - (MICROSECOND if kind.least == 0 else least)
        return [(least, True), (below, False), (most, True), (most + MICROSECOND, False)]
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
    ],
    ids=["--lease", "--concurrency", "--retry-in", "--name"],
)
def test_an_option_range_is_its_sql_argument_range(
    conn: psycopg.Connection[Any],
    kind: options.Seconds | options.Integer | options.Text,
    call: Call,
    argument: str,
) -> None:
    for value, accepted in bounds(kind):
        if accepted:
            call(conn, value)
        else:
            with pytest.raises(InvalidArgument, match=argument):
                call(conn, value)
