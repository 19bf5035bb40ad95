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
from sqlkit import (
    BELOW_ZERO_BY_THE_CALENDAR,
    OVER_BY_THE_CALENDAR,
    PARTS_PAST_THE_DATES,
    Conn,
    assert_all_refused,
    call,
    daylight_saving_within_a_day,
    scalar,
    server_clock,
)
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
    Range("buffer_failed", "p_retry_in", True, "30 days", "31 days"),
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


def assert_refused_with_every_base(conn: Conn, where: Range, values: list[tuple[str, str]]) -> None:
    """Each of `values` (value, label), given as `where`'s argument with each set of valid
    arguments for its function, raises 22023 naming it and changes nothing."""
    tokens = setup(conn)
    cases = [
        (
            f"{label} ({value!r}) with {base}",
            {**base, where.argument: value},
            where.argument,
            INVALID,
        )
        for base in bases(where.function, tokens)
        for value, label in values
    ]
    assert_all_refused(conn, where.function, cases, state, at_least=2)


@pytest.mark.parametrize("where", INTERVALS + NUMBERS, ids=str)
def test_beyond_the_maximum_raises_naming_the_argument(conn: Conn, where: Range) -> None:
    assert_refused_with_every_base(conn, where, bad_values(where))


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


@pytest.mark.parametrize("where", INTERVALS, ids=str)
def test_an_interval_is_measured_by_the_calendar(conn: Conn, where: Range) -> None:
    """PostgreSQL compares intervals counting a month as 30 days, but adds them to the
    clock by the calendar: an interval that compares as within its range, yet ends below
    0 or past the maximum from the server's clock, is refused too."""
    values = [
        (BELOW_ZERO_BY_THE_CALENDAR, "below 0 by the calendar"),
        (OVER_BY_THE_CALENDAR[where.maximum], "over the maximum by the calendar"),
    ]
    assert_refused_with_every_base(conn, where, values)


def test_the_calendar_cases_compare_as_within_the_range(conn: Conn) -> None:
    """The premise of the calendar cases: each compares as within its range, yet from
    the server's clock ends 4 or more days outside it."""
    below = BELOW_ZERO_BY_THE_CALENDAR
    assert scalar(conn, "SELECT %s::interval = '1 day'", below)
    assert scalar(
        conn,
        "SELECT clock_timestamp() + %s::interval < clock_timestamp() - interval '4 days'",
        below,
    )
    for maximum, over in OVER_BY_THE_CALENDAR.items():
        assert scalar(conn, "SELECT %s::interval = %s::interval", over, maximum)
        later = "SELECT now() + %s::interval > now() + %s::interval + interval '4 days'"
        assert scalar(conn, later, over, maximum), (over, maximum)


@pytest.mark.parametrize("where", INTERVALS, ids=str)
def test_an_interval_with_a_part_past_the_dates_is_refused(conn: Conn, where: Range) -> None:
    """An interval whose parts cancel out compares as within the range, but the server
    adds it to the clock part by part: its days (or months) alone would reach a date it
    cannot represent. It is refused naming the argument, not failed by the arithmetic."""
    values = [(parts, "a part past the dates") for parts in PARTS_PAST_THE_DATES]
    assert_refused_with_every_base(conn, where, values)


def test_the_parts_past_the_dates_compare_as_an_hour(conn: Conn) -> None:
    """The premise: each compares as 1 hour, yet the clock plus it is out of the server's
    range of dates."""
    for parts in PARTS_PAST_THE_DATES:
        assert scalar(conn, "SELECT %s::interval = '1 hour'", parts), parts
        with pytest.raises(psycopg.errors.DatetimeFieldOverflow):
            scalar(conn, "SELECT clock_timestamp() + %s::interval", parts)
        conn.rollback()


LEASES = [where for where in INTERVALS if where.argument in {"p_ttl", "p_lease"}]


@pytest.mark.parametrize("where", LEASES, ids=str)
def test_a_lease_that_would_end_before_the_clock_is_refused(conn: Conn, where: Range) -> None:
    """On a day of 23 hours (the session's time zone springs forward), '1 day -23 hours
    -30 minutes' compares as 30 minutes, yet would end 30 minutes before the clock: a
    lease already run out, free for another claimer at once. It is refused; one that
    ends 30 minutes after the clock ('1 day -22 hours -30 minutes') is granted."""
    tokens = setup(conn)
    base = bases(where.function, tokens)[0]
    with daylight_saving_within_a_day(conn):
        backwards = "1 day -23 hours -30 minutes"
        assert scalar(conn, "SELECT %s::interval = '30 minutes'", backwards)
        case = (f"{backwards!r} with {base}", {**base, where.argument: backwards})
        assert_all_refused(conn, where.function, [(*case, where.argument, INVALID)], state)
        before = server_clock(conn)
        call(conn, where.function, {**base, where.argument: "1 day -22 hours -30 minutes"})
        after = server_clock(conn)
    half_hour = timedelta(minutes=30)
    ends = [end for (end,) in conn.execute(ENDS[where.argument]).fetchall()]
    assert any(end and before + half_hour <= end <= after + half_hour for end in ends), ends


def test_parts_that_pull_apart_are_accepted_within_the_range(conn: Conn) -> None:
    """Only the length from the clock counts: '1 day -1 hour' is a TTL of 23 hours, and
    a retention of '1 mon' keeps a month, whatever its number of days."""
    before = server_clock(conn)
    [row] = call(conn, "lock_acquire", {"p_key": "k", "p_owner": "o", "p_ttl": "1 day -1 hour"})
    after = server_clock(conn)
    acquired, expires_at = row[0], row[3]
    assert acquired
    assert before + timedelta(hours=23) <= expires_at <= after + timedelta(hours=23)
    assert call(conn, "message_prune", {"p_older_than": "1 mon", "p_limit": 10}) == [(0,)]
