"""The `pgcoord` command: install or upgrade the schema, show the held locks and the
buffered conversations, run a buffer worker, versions.

    pgcoord migrate [--database-url URL] [--to VERSION]
    pgcoord status  [--database-url URL]
    pgcoord revive  CONVERSATION [--database-url URL]
    pgcoord work    HANDLER [--database-url URL] [--concurrency N] [--lease SECONDS]
                    [--timeout SECONDS] [--retry-in SECONDS] [--grace SECONDS] [--name NAME]
    pgcoord version [--database-url URL]
    pgcoord demo ...                      (options of its own: pgcoord demo --help)

--database-url defaults to $DATABASE_URL. Exit status: 0 done (for `work`: stopped by
SIGTERM or SIGINT, its batches finished or given back), 1 failed (the reason is printed
on one line), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import psycopg
from tabulate import tabulate

from . import config, inbox, locks, migrations, releases
from .errors import NotInstalled, PgcoordError
from .types import BufferStatus, LockStatus

# the columns of `pgcoord status`: those of the views pgcoord.lock_status and
# pgcoord.buffer_status
LOCK_COLUMNS = ("key", "owner", "token", "acquired_at", "expires_at", "expired")
BUFFER_COLUMNS = (
    "conversation_key",
    "message_count",
    "first_message_at",
    "last_message_at",
    "flush_at",
    "claimed_by",
    "claimed_until",
    "attempt",
    "dead",
    "last_error",
)
NO_BUFFERS = "no buffered conversations"
LAST_ERROR_WIDTH = 60  # characters of buffer_status.last_error shown
INBOX_SINCE = "0.2.0"  # the first release with the inbox (buffer_status, buffer_claim...)
WORKER_DEFAULTS = {"concurrency": 4, "grace": 30.0}

# Commands with an argument parser of their own, imported only when run:
# name -> (module with main(argv) -> int, one-line help).
PASSTHROUGH: dict[str, tuple[str, str]] = {
    "demo": ("pgcoord.demo.main", "run the demo (see pgcoord demo --help)"),
    "torture": ("pgcoord.demo.torture", "run the fault torture (see pgcoord torture --help)"),
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

    status = commands.add_parser(
        "status", help="show the held locks and the buffered conversations"
    )
    _database_option(status)
    status.set_defaults(run=run_status)

    revive = commands.add_parser(
        "revive", help="replay a conversation's dead batches: their messages are due again"
    )
    revive.add_argument("conversation", metavar="CONVERSATION", help="the conversation key")
    _database_option(revive)
    revive.set_defaults(run=run_revive)

    work = commands.add_parser(
        "work",
        help="run a buffer worker: call HANDLER once per batch until SIGTERM or SIGINT",
        description="Claim due conversations and call HANDLER, an async function taking "
        "a pgcoord.Batch, once per batch. SIGTERM or SIGINT stops claiming; batches in "
        "flight get --grace seconds to finish, then are given back.",
    )
    work.add_argument(
        "handler",
        metavar="HANDLER",
        help="package.module:function (importable from the current directory too)",
    )
    _database_option(work)
    work.add_argument(
        "--concurrency",
        metavar="N",
        type=_positive(int),
        default=WORKER_DEFAULTS["concurrency"],
        help="handlers running at once, and claims held (default: %(default)s)",
    )
    work.add_argument(
        "--lease",
        metavar="SECONDS",
        type=_positive(float),
        default=config.BUFFER_LEASE.total_seconds(),
        help="lease of each claim, renewed by a heartbeat (default: %(default)g)",
    )
    work.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_positive(float),
        help="a handler running longer is cancelled and its batch given back (default: none)",
    )
    work.add_argument(
        "--retry-in",
        metavar="SECONDS",
        type=_positive(float, zero=True),
        default=config.BUFFER_RETRY_IN.total_seconds(),
        help="delay before a failed batch is tried again (default: %(default)g)",
    )
    work.add_argument(
        "--grace",
        metavar="SECONDS",
        type=_positive(float, zero=True),
        default=WORKER_DEFAULTS["grace"],
        help="on SIGTERM/SIGINT, time the batches in flight get to finish (default: %(default)g)",
    )
    work.add_argument(
        "--name",
        metavar="NAME",
        help="the worker's name in the claims (default: host:pid:random)",
    )
    work.set_defaults(run=run_work)

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


def run_revive(args: argparse.Namespace) -> int:
    with _connection(args) as conn:
        try:
            count = inbox.buffer_revive(conn, args.conversation)
        except NotInstalled as exc:
            raise CommandError(_not_installed(conn)) from exc
        except PgcoordError as exc:
            raise CommandError(str(exc)) from exc
    if count == 0:
        print(f"no dead batch of {args.conversation!r}: nothing to revive")
    else:
        plural = "" if count == 1 else "s"
        print(f"revived {count} message{plural} of {args.conversation!r}: due now")
    return 0


def run_status(args: argparse.Namespace) -> int:
    with _connection(args) as conn:
        try:
            held = locks.lock_status(conn)
        except NotInstalled as exc:
            raise CommandError(_not_installed(conn)) from exc
        try:
            buffers = _buffers_table(inbox.buffer_status(conn))
        except NotInstalled:  # a release before the inbox has no view buffer_status
            version = migrations.installed_version(conn)
            buffers = f"no buffers: pgcoord {version} has no inbox (pgcoord migrate installs it)"
    print(_locks_table(held))
    print()
    print(buffers)
    return 0


def _locks_table(held: list[LockStatus]) -> str:
    if not held:
        return "no locks are held"
    rows = [
        (
            lock.key,
            lock.owner,
            lock.token,
            _time(lock.acquired_at),
            _time(lock.expires_at),
            "yes" if lock.expired else "no",
        )
        for lock in held
    ]
    return tabulate(rows, headers=LOCK_COLUMNS, disable_numparse=True)


def _buffers_table(buffers: list[BufferStatus]) -> str:
    """One row per buffered conversation and parked batch; dead batches say DEAD and
    are counted below the table."""
    if not buffers:
        return NO_BUFFERS
    rows = [
        (
            b.conversation_key,
            b.message_count,
            _time(b.first_message_at),
            _time(b.last_message_at),
            _time(b.flush_at),
            b.claimed_by or "",
            _time(b.claimed_until),
            b.attempt,
            "DEAD" if b.dead else "no",
            _short(b.last_error),
        )
        for b in buffers
    ]
    table = tabulate(rows, headers=BUFFER_COLUMNS, disable_numparse=True)
    dead = sum(b.dead for b in buffers)
    if dead:
        table += (
            f"\n{dead} batch{'es' if dead > 1 else ''} parked as DEAD after repeated failures"
            " (kept for inspection; new messages of those conversations still flow;"
            " pgcoord revive CONVERSATION replays them)"
        )
    return table


def _time(value: datetime | None) -> str:
    return "" if value is None else value.isoformat(sep=" ", timespec="milliseconds")


def _short(text: str | None) -> str:
    """An error on one line, cut to LAST_ERROR_WIDTH characters."""
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= LAST_ERROR_WIDTH else line[: LAST_ERROR_WIDTH - 3] + "..."


def run_work(args: argparse.Namespace) -> int:
    # imported here: the other commands need no asyncio machinery
    from .worker import BufferWorker

    handler = load_handler(args.handler)
    url = _database_url(args)
    with _connection(args) as conn:
        installed = migrations.installed_version(conn)
        if installed is None:
            raise CommandError(_not_installed(conn))
        if releases.version_key(installed) < releases.version_key(INBOX_SINCE):
            raise CommandError(
                f"pgcoord {installed} in {_where(conn)} has no inbox: run pgcoord migrate"
            )
    _log_to_stderr()
    try:
        worker = BufferWorker(
            handler,
            url,
            name=args.name,
            concurrency=args.concurrency,
            lease=timedelta(seconds=args.lease),
            timeout=None if args.timeout is None else timedelta(seconds=args.timeout),
            retry_in=timedelta(seconds=args.retry_in),
            grace=timedelta(seconds=args.grace),
        )
        asyncio.run(worker.run(handle_signals=True))
    except (ValueError, PgcoordError) as exc:
        raise CommandError(str(exc)) from exc
    except KeyboardInterrupt:  # before the worker's own signal handlers were set
        return 130
    return 0


def load_handler(spec: str) -> Callable[..., Any]:
    """The async function named by `package.module:function` (the function may be a
    dotted attribute path), importable from the current directory too."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"HANDLER must be package.module:function, got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise CommandError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {_one_line(exc)}"
        ) from exc
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError as exc:
            raise CommandError(f"{module_name!r} has no {attribute!r}") from exc
    if not (
        inspect.iscoroutinefunction(target)
        or inspect.iscoroutinefunction(getattr(target, "__call__", None))  # noqa: B004
    ):
        raise CommandError(f"{spec} is not an async function (async def handler(batch))")
    handler: Callable[..., Any] = target
    return handler


def _log_to_stderr() -> None:
    """One line per batch, with the time: INFO and up to stderr (unless the program
    has configured logging already)."""
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pgcoord").setLevel(logging.INFO)


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


def _positive(kind: Callable[[str], Any], zero: bool = False) -> Callable[[str], Any]:
    """An argparse type: a number above zero (or at least zero)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(
                f"must be {'at least' if zero else 'more than'} 0, got {text}"
            )
        return value

    return parse


def _database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL connection URL or conninfo (default: $DATABASE_URL)",
    )


def _database_url(args: argparse.Namespace) -> str:
    url: str | None = args.database_url or os.environ.get("DATABASE_URL")
    if not url:
        raise UsageError("no database given: pass --database-url URL or set DATABASE_URL")
    return url


@contextmanager
def _connection(args: argparse.Namespace) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the database of --database-url or $DATABASE_URL."""
    url = _database_url(args)
    try:
        timeout = config.connect_timeout(url)
    except psycopg.ProgrammingError as exc:
        raise UsageError(f"invalid database URL: {_one_line(exc)}") from exc
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
