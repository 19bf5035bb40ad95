"""The database of a command: --database-url, else $DATABASE_URL, and a connection to it
whose failure is one line naming the cause. A URL that does not parse is a usage error
(exit status 2); a server that does not answer in time, refuses the connection or the
login, or has no such database, is a runtime error (exit status 1). Passwords are never
shown."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .. import config
from .errors import CommandError, UsageError, one_line, shown

OPTION = "--database-url"
VARIABLE = "DATABASE_URL"
SCHEMES = ("postgresql", "postgres")

# libpq's framing of a failed attempt, which the message replaces by where it connected
_ATTEMPT = re.compile(
    r'(?:connection (?:failed|is bad): )?connection to server (?:at "[^"]*", port \S+|'
    r'on socket "[^"]*") failed: (?:FATAL:\s+)?'
)
_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*@")


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        OPTION,
        metavar="URL",
        help=f"PostgreSQL connection URL or conninfo (default: ${VARIABLE})",
    )


def given(args: argparse.Namespace) -> bool:
    """Whether the command line or the environment names a database."""
    return args.database_url is not None or bool(os.environ.get(VARIABLE))


def url(args: argparse.Namespace) -> str:
    """The database URL of the command, checked: UsageError when none is given or it
    does not parse."""
    value: str | None = args.database_url
    source = OPTION
    if value is None:
        value, source = os.environ.get(VARIABLE) or None, VARIABLE
    if value is None:
        raise UsageError(f"no database given: pass {OPTION} URL or set {VARIABLE}")
    check(value, source)
    return value


def check(value: str, source: str) -> None:
    """UsageError naming `source` when `value` is not a PostgreSQL URL or conninfo."""
    if not value.strip():
        raise UsageError(f"invalid database URL: {source} is empty, got {shown(value)}")
    scheme, sep, _rest = value.partition("://")
    if sep and scheme not in SCHEMES:
        raise UsageError(
            f"invalid database URL: {source} must start with postgresql:// or postgres://, "
            f"got {shown(redacted(value))}"
        )
    try:
        params = conninfo_to_dict(value)
    except psycopg.ProgrammingError as exc:
        cause = one_line(exc).replace(f'"{value}"', "it")
        raise UsageError(f"invalid database URL: {redacted(cause)} ({source})") from None
    port = str(params.get("port") or "")
    if port and not all(part.isdigit() for part in port.split(",")):
        raise UsageError(f"invalid database URL: the port must be a number, got {shown(port)}")


def redacted(text: str) -> str:
    """`text` with the password of any URL in it replaced by ***."""
    return _PASSWORD.sub(r"\1***@", text)


def cannot_connect(exc: psycopg.Error, conninfo: str) -> str:
    """Why a connection failed, on one line, with where it was tried (no password)."""
    cause = "; ".join(
        _ATTEMPT.sub("", line).strip() for line in str(exc).splitlines() if line.strip()
    )
    return f"cannot connect to the database: {config.describe(conninfo)}: {cause}"


@contextmanager
def connect(args: argparse.Namespace) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the command's database; a server error while it is
    in use is a CommandError with the server's message."""
    conninfo = url(args)
    try:
        conn = psycopg.connect(
            conninfo, autocommit=True, connect_timeout=config.connect_timeout(conninfo)
        )
    except psycopg.Error as exc:
        raise CommandError(cannot_connect(exc, conninfo)) from exc
    try:
        with conn:
            yield conn
    except psycopg.Error as exc:
        raise CommandError(one_line(exc)) from exc


def where(conn: psycopg.Connection[Any]) -> str:
    info = conn.info
    host = info.host if not info.host.startswith("/") else "local socket"
    return f"database {info.dbname!r} on {host}:{info.port}"


def not_installed(conn: psycopg.Connection[Any]) -> str:
    return f"pgcoord is not installed in {where(conn)}: run pgcoord migrate"
