# DO NOT CHANGE! Generated from query_async.py by scripts/async-to-sync;
# change the original instead.
"""Run one pgcoord statement on the caller's psycopg.Connection: one round trip, never
prepared on the server, whatever the connection's prepare_threshold (prepared statements
break behind transaction-mode poolers), the server's errors mapped by `errors.translated`,
and rows read as dataclasses or plain values whatever row factory the connection has."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg.rows import class_row, tuple_row

from .errors import translated

T = TypeVar("T")

Params = Mapping[str, Any] | None


def one(
    conn: psycopg.Connection[Any], cls: type[T], query: LiteralString, params: Params = None
) -> T:
    """The single row of a function that always returns one, as a `cls`."""
    with conn.cursor(row_factory=class_row(cls)) as cur:
        with translated():
            cur.execute(query, params, prepare=False)
        row = cur.fetchone()
    assert row is not None, query  # the function always returns one row
    return row


def rows(
    conn: psycopg.Connection[Any], cls: type[T], query: LiteralString, params: Params = None
) -> list[T]:
    """Every row, as a `cls` each."""
    with conn.cursor(row_factory=class_row(cls)) as cur:
        with translated():
            cur.execute(query, params, prepare=False)
        return cur.fetchall()


def value(conn: psycopg.Connection[Any], query: LiteralString, params: Params = None) -> Any:
    """The first column of the first row (None when there is no row)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        with translated():
            cur.execute(query, params, prepare=False)
        row = cur.fetchone()
    return None if row is None else row[0]
