"""Run one pgcoord statement on the caller's psycopg.AsyncConnection: one round trip, never
prepared on the server, whatever the connection's prepare_threshold (prepared statements
break behind transaction-mode poolers), the server's errors mapped by `errors.translate`,
and rows read as dataclasses or plain values whatever row factory the connection has.

Only a failed call does more: a role refused with 42501 is read back from the server
(`current_user`, on a connection that can still answer) so that `PermissionDenied` names
the GRANT it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg import pq
from psycopg.rows import class_row, tuple_row

from . import sql
from .errors import PermissionDenied, translate

T = TypeVar("T")

Params = Mapping[str, Any] | None


async def one(
    conn: psycopg.AsyncConnection[Any], cls: type[T], query: LiteralString, params: Params = None
) -> T:
    """The single row of a function that always returns one, as a `cls`."""
    async with conn.cursor(row_factory=class_row(cls)) as cur:
        await execute(cur, query, params)
        row = await cur.fetchone()
    assert row is not None, query  # the function always returns one row
    return row


async def rows(
    conn: psycopg.AsyncConnection[Any], cls: type[T], query: LiteralString, params: Params = None
) -> list[T]:
    """Every row, as a `cls` each."""
    async with conn.cursor(row_factory=class_row(cls)) as cur:
        await execute(cur, query, params)
        return await cur.fetchall()


async def value(
    conn: psycopg.AsyncConnection[Any], query: LiteralString, params: Params = None
) -> Any:
    """The first column of the first row (None when there is no row)."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await execute(cur, query, params)
        row = await cur.fetchone()
    return None if row is None else row[0]


async def execute(cur: psycopg.AsyncCursor[Any], query: LiteralString, params: Params) -> None:
    """Execute without preparing; a server error is raised as its pgcoord exception (the
    original chained), or as it is when it is not one of pgcoord's."""
    try:
        await cur.execute(query, params, prepare=False)
    except psycopg.Error as exc:
        mapped = translate(exc)
        if mapped is None:
            raise
        if isinstance(mapped, PermissionDenied):
            mapped = await advised(cur.connection, mapped)
        raise mapped from exc


async def advised(conn: psycopg.AsyncConnection[Any], denied: PermissionDenied) -> PermissionDenied:
    """The refusal with the GRANT the role needs. The role is the server's current_user
    when the connection can still answer (not inside a failed transaction), else the
    connection's user."""
    role, has_grant = conn.info.user, False
    if conn.info.transaction_status == pq.TransactionStatus.IDLE:
        try:
            async with conn.cursor(row_factory=tuple_row) as cur:
                await cur.execute(sql.CURRENT_ROLE, prepare=False)
                found = await cur.fetchone()
        except psycopg.Error:
            found = None
        if found is not None:
            role, has_grant = found
    return denied.advised(role, has_grant)
