"""The maxima of every interval and number argument: a value beyond the maximum, however
far ('1000000 years', just over it by a microsecond) or infinite, raises 22023 naming the
argument and changes nothing, so no lease, window, delay or pause can reach a time the
server or a client cannot represent. The exact maximum is accepted and used as given.

PostgreSQL 17 and later accept 'infinity' and '-infinity' as intervals; there the
function must refuse them. Before 17 the server cannot even parse the literal: the call
fails before the function runs, with the interval's own syntax error."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import test_inbox_arguments
from inboxkit import snapshot as inbox_snapshot
from ratekit import GRANTED, acquire, pause
from ratekit import snapshot as rate_snapshot
from sqlkit import Conn, assert_all_refused, call, scalar, server_clock
from sqlkit import acquire as lock_acquire
from sqlkit import snapshot as lock_snapshot

INVALID = "22023"
INVALID_DATETIME_FORMAT = "22007"


@dataclass(frozen=True)
class Range:
    function: str
    argument: str
    zero_allowed: bool  # >= 0, else > 0
    maximum: str  # an interval or integer literal
    over: str  # a round value just over it, as a caller would write it

    def __str__(self) -> str:
        return f"{self.function}.{self.argument}"


INTERVALS = [
    Range("lock_acquire", "p_ttl", False, "1 day", "2 days"),
    Range("lock_acquire", "p_wait", True, "1 hour", "2 hours"),
    Range("lock_extend", "p_ttl", False, "1 day", "2 days"),
    Range("message_ingest", "p_debounce", True, "1 day", "2 days"),
    Range("message_ingest", "p_max_wait", True, "7 days", "8 days"),
    Range("buffer_claim", "p_lease", False, "1 day", "2 days"),
    Range("buffer_extend", "p_lease", False, "1 day", "2 days"),
    Range("buffer_fail", "p_retry_in", True, "30 days", "31 days"),
    Range("message_prune", "p_older_than", False, "100 years", "101 years"),
    Range("rate_pause", "p_for", True, "1 day", "2 days"),
]
NUMBERS = [
    Range("buffer_claim", "p_limit", False, "10000", "10001"),
    Range("message_prune", "p_limit", False, "1000000", "1000001"),
]


def state(conn: Conn) -> tuple[Any, ...]:
    """Everything the functions store."""
    return lock_snapshot(conn), inbox_snapshot(conn), rate_snapshot(conn)


def setup(conn: Conn) -> dict[str, int]:
    """A held lock, conversations in every state, a bucket and a pause."""
    assert lock_acquire(conn, "held", "holder").acquired
    assert acquire(conn, "rate", 1.0, 5) == GRANTED
    pause(conn, "paused", timedelta(minutes=1))
    return test_inbox_arguments.setup(conn)


def bases(function: str, tokens: dict[str, int]) -> list[dict[str, Any]]:
    """Valid arguments for `function`, one set per state a call could change; the first
    is granted at once (no waiting, no conflict)."""
    if function in {"lock_acquire", "lock_extend"}:
        base: dict[str, Any] = {"p_key": "held", "p_owner": "holder", "p_ttl": "30 seconds"}
        extra = {"p_wait": "0 seconds"} if function == "lock_acquire" else {}
        return [{**base, **extra}, {**base, **extra, "p_key": "free"}]
    if function == "message_prune":
        return [{"p_older_than": "1 hour", "p_limit": 10}]
    if function == "rate_pause":
        return [{"p_key": key, "p_for": "1 second"} for key in ("rate", "paused", "new")]
    return test_inbox_arguments.bases(function, tokens)


def server_version(conn: Conn) -> int:
    return int(scalar(conn, "SHOW server_version_num"))


def bad_values(where: Range) -> list[tuple[str, str]]:
    if where.argument == "p_limit":
        return [(where.over, "over"), ("2147483647", "the largest integer")]
    return [
        (where.over, "over"),
        ("1000000 years", "far over"),
        (f"{where.maximum} 0.000001 seconds", "a microsecond over"),
    ]


@pytest.mark.parametrize("where", INTERVALS + NUMBERS, ids=str)
def test_beyond_the_maximum_raises_naming_the_argument(conn: Conn, where: Range) -> None:
    tokens = setup(conn)
    cases = [
        (
            f"{label} ({value!r}) with {base}",
            {**base, where.argument: value},
            where.argument,
            INVALID,
        )
        for base in bases(where.function, tokens)
        for value, label in bad_values(where)
    ]
    assert_all_refused(conn, where.function, cases, state, at_least=2)


@pytest.mark.parametrize("where", INTERVALS, ids=str)
def test_an_infinite_interval_is_refused(conn: Conn, where: Range) -> None:
    tokens = setup(conn)
    base = bases(where.function, tokens)[0]
    for value in ("infinity", "-infinity"):
        before = state(conn)
        with pytest.raises(psycopg.Error) as raised:
            call(conn, where.function, {**base, where.argument: value})
        message = raised.value.diag.message_primary or ""
        if server_version(conn) >= 170000:
            assert raised.value.sqlstate == INVALID, message
            assert where.argument in message
            assert value in message, "the message shows the value"
        else:
            # the server's parser refuses the literal: it cannot even be passed
            assert raised.value.sqlstate == INVALID_DATETIME_FORMAT, message
            assert f'invalid input syntax for type interval: "{value}"' in message
            assert "pgcoord" not in (raised.value.diag.context or "")
        assert state(conn) == before


# Where the end of a lease, window or pause shows: (the argument, the column that shows it)
ENDS = {
    "p_ttl": "SELECT expires_at FROM pgcoord.lock_status",
    "p_lease": "SELECT claimed_until FROM pgcoord.buffer_status",
    "p_retry_in": "SELECT flush_at FROM pgcoord.buffer_status",
    "p_for": "SELECT paused_until FROM pgcoord.rate_status",
}


@pytest.mark.parametrize("where", INTERVALS + NUMBERS, ids=str)
def test_the_maximum_is_accepted(conn: Conn, where: Range) -> None:
    tokens = setup(conn)
    base = bases(where.function, tokens)[0]
    before = server_clock(conn)
    call(conn, where.function, {**base, where.argument: where.maximum})
    after = server_clock(conn)
    if where.argument in ENDS:
        # the lease, retry or pause ends the maximum after the call's clock reading
        maximum = scalar(conn, "SELECT %s::interval", where.maximum)
        ends = [end for (end,) in conn.execute(ENDS[where.argument]).fetchall()]
        assert any(end and before + maximum <= end <= after + maximum for end in ends), ends
