"""Run one pgcoord statement on the caller's psycopg.AsyncConnection: one round trip, never
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


async def one(
    conn: psycopg.AsyncConnection[Any], cls: type[T], query: LiteralString, params: Params = None
) -> T:
    """The single row of a function that always returns one, as a `cls`."""
    async with conn.cursor(row_factory=class_row(cls)) as cur:
        with translated():
            await cur.execute(query, params, prepare=False)
        row = await cur.fetchone()
    assert row is not None, query  # the function always returns one row
    return row


async def rows(
    conn: psycopg.AsyncConnection[Any], cls: type[T], query: LiteralString, params: Params = None
) -> list[T]:
    """Every row, as a `cls` each."""
    async with conn.cursor(row_factory=class_row(cls)) as cur:
        with translated():
            await cur.execute(query, params, prepare=False)
        return await cur.fetchall()


async def value(
    conn: psycopg.AsyncConnection[Any], query: LiteralString, params: Params = None
) -> Any:
    """The first column of the first row (None when there is no row)."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        with translated():
            await cur.execute(query, params, prepare=False)
        row = await cur.fetchone()
    return None if row is None else row[0]
