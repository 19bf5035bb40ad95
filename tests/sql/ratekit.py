"""Helpers for the SQL tests of the shared rate limits (API.md section 4): the contract,
the calls in named notation with the server clock read around them, and the table's
state for "nothing changed" checks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import sql
from sqlkit import Conn, scalar

# The section-4 contract, as the server prints it back (pg_get_function_arguments and
# pg_get_function_result).
RATE_CONTRACT: dict[str, tuple[str, str]] = {
    "rate_acquire": (
        "p_key text, p_per_second double precision, p_burst integer, p_cost integer DEFAULT 1",
        "interval",
    ),
    "rate_pause": ("p_key text, p_for interval", "timestamp with time zone"),
}
SECTION_4 = tuple(RATE_CONTRACT)
# Not in API.md, granted like the API: forget a key's bucket and pause.
RATE_HELPERS = ("rate_reset",)
RATE_STATUS_COLUMNS = [
    ("key", "text"),
    ("tokens", "double precision"),
    ("per_second", "double precision"),
    ("burst", "integer"),
    ("paused_until", "timestamp with time zone"),
    ("updated_at", "timestamp with time zone"),
]

GRANTED = timedelta(0)
MICROSECOND = timedelta(microseconds=1)
# float8 arithmetic on token counts: a grant may be off by this much of a token
EPSILON = 1e-6


def acquire(conn: Conn, key: str, per_second: float, burst: int, cost: int = 1) -> timedelta:
    """rate_acquire: GRANTED, or how long to wait."""
    value = scalar(
        conn,
        "SELECT pgcoord.rate_acquire(p_key => %s, p_per_second => %s, p_burst => %s, p_cost => %s)",
        key,
        per_second,
        burst,
        cost,
    )
    assert isinstance(value, timedelta)
    return value


@dataclass(frozen=True)
class Timed:
    """A rate_acquire and the server clock read in the same statement just before and
    just after it: the call's own clock reading lies between them."""

    before: datetime
    wait: timedelta
    after: datetime
    cost: int

    @property
    def granted(self) -> bool:
        return self.wait == GRANTED


def timed_acquire(conn: Conn, key: str, per_second: float, burst: int, cost: int = 1) -> Timed:
    row = conn.execute(
        "SELECT clock_timestamp(), pgcoord.rate_acquire(p_key => %s, p_per_second => %s,"
        " p_burst => %s, p_cost => %s), clock_timestamp()",
        (key, per_second, burst, cost),
    ).fetchone()
    assert row is not None
    before, wait, after = row
    assert before <= after
    return Timed(before, wait, after, cost)


def pause(conn: Conn, key: str, for_: timedelta) -> datetime:
    value = scalar(conn, "SELECT pgcoord.rate_pause(p_key => %s, p_for => %s)", key, for_)
    assert isinstance(value, datetime)
    return value


def reset(conn: Conn, key: str) -> bool:
    value = scalar(conn, "SELECT pgcoord.rate_reset(p_key => %s)", key)
    assert isinstance(value, bool)
    return value


def row_by_key(conn: Conn, relation: str, key: str) -> dict[str, Any] | None:
    """The row of `key` in a relation of pgcoord, by column name."""
    cursor = conn.execute(
        sql.SQL("SELECT * FROM pgcoord.{} WHERE key = %s").format(sql.Identifier(relation)),
        (key,),
    )
    row = cursor.fetchone()
    if row is None:
        return None
    assert cursor.description is not None
    return {column.name: value for column, value in zip(cursor.description, row, strict=True)}


def stored(conn: Conn, key: str) -> dict[str, Any] | None:
    """The bucket's row as stored (tokens as of tokens_at)."""
    return row_by_key(conn, "rates", key)


def status(conn: Conn, key: str) -> dict[str, Any] | None:
    """The key's row of rate_status."""
    return row_by_key(conn, "rate_status", key)


def snapshot(conn: Conn) -> list[tuple[Any, ...]]:
    """Every bucket with the place and writer of its row version: a new version or a
    row lock (xmax) shows even when the values stay the same."""
    return conn.execute(
        "SELECT r.*, r.ctid::text, r.xmin::text, r.xmax::text FROM pgcoord.rates AS r"
        " ORDER BY r.key"
    ).fetchall()
