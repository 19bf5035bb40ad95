"""The `pgcoord` command: install or upgrade the schema, show the held locks, versions.

    pgcoord migrate [--database-url URL] [--to VERSION]
    pgcoord status  [--database-url URL]
    pgcoord version [--database-url URL]
    pgcoord demo ...                      (options of its own: pgcoord demo --help)

--database-url defaults to $DATABASE_URL. Exit status: 0 done, 1 failed (the reason is
printed on one line), 2 bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from tabulate import tabulate

from . import locks, migrations, releases
from .errors import NotInstalled, PgcoordError

CONNECT_TIMEOUT = 10  # seconds, unless the URL sets connect_timeout

# the columns of `pgcoord status`, those of the view pgcoord.lock_status
LOCK_COLUMNS = ("key", "owner", "token", "acquired_at", "expires_at", "expired")

# Commands with an argument parser of their own, imported only when run:
# name -> (module with main(argv) -> int, one-line help).
PASSTHROUGH: dict[str, tuple[str, str]] = {
    "demo": ("pgcoord.demo", "run the demo (see pgcoord demo --help)"),
}


class UsageError(Exception):
    """Bad usage that argparse cannot see (exit status 2)."""


class CommandError(Exception):
    """The command failed for a reason worth one line (exit status 1)."""


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in PASSTHROUGH:
        return _passthrough(args_list[0], args_list[1:])
    args = build_parser().parse_args(args_list)
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except UsageError as exc:
        _error(str(exc))
        return 2
    except CommandError as exc:
        _error(str(exc))
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgcoord", description="Coordination primitives in PostgreSQL (schema pgcoord)."
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    migrate = commands.add_parser(
        "migrate", help="install pgcoord, or upgrade it to the newest (or given) release"
    )
    _database_option(migrate)
    migrate.add_argument(
        "--to",
        metavar="VERSION",
        choices=releases.versions(),
        help="release to install or upgrade to (default: the newest, %(default)s)",
        default=releases.latest(),
    )
    migrate.set_defaults(run=run_migrate)

    status = commands.add_parser("status", help="show the held locks")
    _database_option(status)
    status.set_defaults(run=run_status)

    version = commands.add_parser(
        "version", help="show the newest release this driver has and the installed one"
    )
    _database_option(version)
    version.set_defaults(run=run_version)

    for name, (_module, help_text) in PASSTHROUGH.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def run_migrate(args: argparse.Namespace) -> int:
    with _connection(args) as conn:
        try:
            before, after = migrations.migrate(conn, args.to)
        except PgcoordError as exc:
            raise CommandError(_with_hint(exc)) from exc
        where = _where(conn)
    if before is None:
        print(f"installed pgcoord {after} in {where}")
    elif before == after:
        print(f"pgcoord {after} is already installed in {where}: nothing to do")
    else:
        print(f"upgraded pgcoord {before} -> {after} in {where}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    with _connection(args) as conn:
        try:
            held = locks.lock_status(conn)
        except (NotInstalled, psycopg.errors.UndefinedTable) as exc:
            raise CommandError(_not_installed(conn)) from exc
    if not held:
        print("no locks are held")
        return 0
    rows = [
        (
            lock.key,
            lock.owner,
            lock.token,
            lock.acquired_at.isoformat(sep=" ", timespec="milliseconds"),
            lock.expires_at.isoformat(sep=" ", timespec="milliseconds"),
            "yes" if lock.expired else "no",
        )
        for lock in held
    ]
    print(tabulate(rows, headers=LOCK_COLUMNS, disable_numparse=True))
    return 0


def run_version(args: argparse.Namespace) -> int:
    print(f"driver:    {releases.latest()} (newest release it can install)")
    if not (args.database_url or os.environ.get("DATABASE_URL")):
        print("installed: unknown (give --database-url or set DATABASE_URL)")
        return 0
    with _connection(args) as conn:
        installed = migrations.installed_version(conn)
        where = _where(conn)
    print(f"installed: {installed or 'none'} ({where})")
    return 0


def _database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL connection URL or conninfo (default: $DATABASE_URL)",
    )


@contextmanager
def _connection(args: argparse.Namespace) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the database of --database-url or $DATABASE_URL."""
    url = args.database_url or os.environ.get("DATABASE_URL")
    if not url:
        raise UsageError("no database given: pass --database-url URL or set DATABASE_URL")
    try:
        options = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise UsageError(f"invalid database URL: {_one_line(exc)}") from exc
    # None leaves the URL's own connect_timeout in force
    timeout = None if "connect_timeout" in options else CONNECT_TIMEOUT
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=timeout)
    except psycopg.Error as exc:
        raise CommandError(f"cannot connect to the database: {_one_line(exc)}") from exc
    try:
        with conn:
            yield conn
    except psycopg.Error as exc:
        raise CommandError(_one_line(exc)) from exc


def _passthrough(name: str, argv: list[str]) -> int:
    module_name, _help = PASSTHROUGH[name]
    module = importlib.import_module(module_name)
    result = module.main(argv)
    return int(result or 0)


def _not_installed(conn: psycopg.Connection[Any]) -> str:
    return f"pgcoord is not installed in {_where(conn)}: run pgcoord migrate"


def _where(conn: psycopg.Connection[Any]) -> str:
    info = conn.info
    host = info.host if not info.host.startswith("/") else "local socket"
    return f"database {info.dbname!r} on {host}:{info.port}"


def _with_hint(exc: PgcoordError) -> str:
    return f"{exc} ({exc.hint})" if exc.hint else str(exc)


def _one_line(exc: BaseException) -> str:
    """A server or libpq message on one line (libpq's own span several)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines) or type(exc).__name__


def _error(message: str) -> None:
    print(f"pgcoord: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
