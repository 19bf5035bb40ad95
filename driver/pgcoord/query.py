# DO NOT CHANGE! Generated from query_async.py by scripts/async-to-sync;
# change the original instead.
"""Run one pgcoord statement on the caller's psycopg.Connection: one round trip, never
prepared on the server, whatever the connection's prepare_threshold (prepared statements
break behind transaction-mode poolers), the server's errors mapped by `errors.translate`,
and rows read as dataclasses or plain values whatever row factory the connection has.

This is every call's hot path, kept lean on purpose (the benchmark compares its client
CPU with bare psycopg sending the same statement): rows are read as tuples and a result
dataclass is built from its columns by position (tests/sql/test_catalog.py checks that
each dataclass lists the function's result columns in order).

Only a failed call does more: a role refused with 42501 is read back from the server
(`current_user`, on a connection that can still answer) so that `PermissionDenied` names
the GRANT it needs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg import pq
from psycopg.rows import tuple_row

from . import sql
from .errors import PermissionDenied, translate, unsendable

T = TypeVar("T")

Params = Mapping[str, Any] | None


def one(
    conn: psycopg.Connection[Any], cls: type[T], query: LiteralString, params: Params = None
) -> T:
    """The single row of a function that always returns one, as a `cls`."""
    row = (_execute(conn, query, params)).fetchone()
    assert row is not None, query  # the function always returns one row
    return cls(*row)


def rows(
    conn: psycopg.Connection[Any], cls: type[T], query: LiteralString, params: Params = None
) -> list[T]:
    """Every row, as a `cls` each."""
    return [cls(*row) for row in (_execute(conn, query, params)).fetchall()]


def tuples(
    conn: psycopg.Connection[Any], query: LiteralString, params: Params = None
) -> list[tuple[Any, ...]]:
    """Every row, as a tuple."""
    return (_execute(conn, query, params)).fetchall()


def value(conn: psycopg.Connection[Any], query: LiteralString, params: Params = None) -> Any:
    """The first column of the first row (None when there is no row)."""
    row = (_execute(conn, query, params)).fetchone()
    return None if row is None else row[0]


def _execute(
    conn: psycopg.Connection[Any], query: LiteralString, params: Params
) -> psycopg.Cursor[tuple[Any, ...]]:
    cur = conn.cursor(row_factory=tuple_row)
    try:
        cur.execute(query, params, prepare=False)
    except UnicodeEncodeError as exc:
        raise unsendable(exc, params, conn.info.encoding) from exc
    except psycopg.Error as exc:
        if exc.sqlstate is None and isinstance(exc, psycopg.DataError):
            raise unsendable(exc, params, conn.info.encoding) from exc
        mapped = translate(exc)
        if mapped is None:
            raise
        if isinstance(mapped, PermissionDenied):
            mapped = advised(conn, mapped)
        raise mapped from exc
    return cur


def advised(conn: psycopg.Connection[Any], denied: PermissionDenied) -> PermissionDenied:
    """The refusal with the GRANT the role needs. The role is the server's current_user
    when the connection can still answer (not inside a failed transaction), else the
    connection's user."""
    role, has_grant, member = conn.info.user, False, False
    if conn.info.transaction_status == pq.TransactionStatus.IDLE:
        try:
            with conn.cursor(row_factory=tuple_row) as cur:
                cur.execute(sql.CURRENT_ROLE, prepare=False)
                found = cur.fetchone()
        except psycopg.Error:
            found = None
        if found is not None:
            role, has_grant, member = found
    return denied.advised(role, has_grant, member)
