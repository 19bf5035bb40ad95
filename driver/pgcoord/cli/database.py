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

from .. import config, migrations
from ..config import where
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


def url(args: argparse.Namespace) -> str:
    """The database URL of the command, checked: UsageError when none is given or it
    does not parse."""
    value = given_url(args)
    if value is None:
        raise UsageError(f"no database given: pass {OPTION} URL or set {VARIABLE}")
    return value


def given_url(args: argparse.Namespace) -> str | None:
    """--database-url, else $DATABASE_URL (set but empty counts as unset), checked
    (UsageError naming where it came from); None when neither is given."""
    value: str | None = args.database_url
    if value is not None:
        check(value, OPTION)
        return value
    value = os.environ.get(VARIABLE) or None
    if value is not None:
        check(value, VARIABLE)
    return value


def check(value: str, source: str) -> None:
    """UsageError naming `source` when `value` is not a PostgreSQL URL or conninfo."""
    if not value.strip():
        raise UsageError(f"invalid database URL: {source} is empty, got {shown(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # bytes the locale could not decode
        raise UsageError(
            f"invalid database URL: {source} is not UTF-8 text, got {shown(redacted(value))}"
        ) from None
    scheme, sep, _rest = value.partition("://")
    if sep and scheme not in SCHEMES:
        raise UsageError(
            f"invalid database URL: {source} must start with postgresql:// or postgres://, "
            f"got {shown(redacted(value))}"
        )
    try:
        params = conninfo_to_dict(value)
    except psycopg.ProgrammingError as exc:
        # libpq quotes the whole value, password and all
        cause = one_line(exc).replace(f': "{value}"', "")
        cause = cause.replace(f'"{value}"', shown(redacted(value)))
        raise UsageError(f"invalid database URL: {redacted(cause)} ({source})") from None
    port = str(params.get("port") or "")
    if port and not all(part.isdigit() for part in port.split(",")):
        raise UsageError(f"invalid database URL: the port must be a number, got {shown(port)}")


def redacted(text: str) -> str:
    """`text` with the password of any URL in it replaced by ***."""
    return _PASSWORD.sub(r"\1***@", text)


def cannot_connect(exc: psycopg.Error, conninfo: str) -> str:
    """Why a connection failed, on one line, with where it was tried (no password)."""
    return f"cannot connect to the database: {config.describe(conninfo)}: {connection_cause(exc)}"


def connection_cause(exc: psycopg.Error) -> str:
    """libpq's reason for a failed connection on one line, without its framing of each
    attempt: 'database "x" does not exist', 'Connection refused; is the server...'."""
    parts = [_ATTEMPT.sub("", line).strip() for line in str(exc).splitlines() if line.strip()]
    if not parts:
        return type(exc).__name__
    return "; ".join([parts[0], *(_lower_first(part) for part in parts[1:])])


def _lower_first(text: str) -> str:
    """ "Is the server running..." after a semicolon: "is the server running..."."""
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


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


def not_installed(conn: psycopg.Connection[Any]) -> str:
    return f"pgcoord is not installed in {where(conn)}: run pgcoord migrate"


def lacks(conn: psycopg.Connection[Any], installed: str, what: str) -> str:
    """pgcoord `installed` is a release before `what` (the inbox, the campaign queue)."""
    return f"pgcoord {installed} in {where(conn)} has no {what}: run pgcoord migrate"


def missing(conn: psycopg.Connection[Any], what: str) -> CommandError:
    """Why a call found no pgcoord function or view that `what` brings: pgcoord is not
    installed, or an older release is."""
    installed = migrations.installed_version(conn)
    if installed is None:
        return CommandError(not_installed(conn))
    return CommandError(lacks(conn, installed, what))
