"""The `pgcoord` command line: the parser made of every command in COMMANDS, the
dispatch, and `guarded`, the one place where a failure becomes one line on stderr and
an exit status (errors.FAILED, USAGE, INTERRUPTED; 0 when the command went well)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Sequence

import psycopg

from .. import __version__
from ..errors import PgcoordError
from .command import Command, Passthrough
from .errors import FAILED, INTERRUPTED, USAGE, CommandError, UsageError, one_line
from .options import CommandsFormatter, Parser

PROG = "pgcoord"

# The commands in the order `pgcoord --help` lists them: each names a module of this
# package that defines COMMAND (a Command or a Passthrough).
COMMANDS = (
    "migrate",
    "status",
    "campaigns",
    "watch",
    "revive",
    "work",
    "maintain",
    "version",
    "demo",
    "torture",
)


def commands() -> list[Command | Passthrough]:
    found = []
    for name in COMMANDS:
        command = importlib.import_module(f"{__package__}.{name}").COMMAND
        if not isinstance(command, Command | Passthrough):
            raise TypeError(f"pgcoord.cli.{name}.COMMAND is not a Command or a Passthrough")
        found.append(command)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Run `pgcoord ARGV...` and return its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    return guarded(f"{PROG}: error: ", lambda: _dispatch(args))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Coordination primitives in PostgreSQL (schema pgcoord).",
        formatter_class=CommandsFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for command in commands():
        if isinstance(command, Passthrough):
            subparsers.add_parser(command.name, help=command.help, add_help=False)
            continue
        sub = subparsers.add_parser(
            command.name, help=command.help, description=command.description or command.help
        )
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def guarded(prefix: str, body: Callable[[], int]) -> int:
    """Run `body` and return its exit status. A UsageError, CommandError, pgcoord or
    database error becomes one line on stderr, `PREFIX message`, and status 2 or 1;
    Ctrl-C one line and 130. When the reader of stdout went away (`pgcoord ... | head`)
    the command stops quietly with status 1. Parser errors exit by themselves (one
    line, status 2)."""
    try:
        return _flushed(body)
    except BrokenPipeError:
        _silence_stdout()
        return FAILED
    except KeyboardInterrupt:
        _say(prefix, "interrupted")
        return INTERRUPTED
    except UsageError as exc:
        _say(prefix, str(exc))
        return USAGE
    except (CommandError, PgcoordError, psycopg.Error) as exc:
        _say(prefix, one_line(exc))
        return FAILED


def _flushed(body: Callable[[], int]) -> int:
    """Run `body`, then flush stdout, so that a closed pipe shows here rather than at
    exit; --help exits through the parser, its text flushed the same way."""
    try:
        status = body()
    except SystemExit:
        _flush_stdout()
        raise
    _flush_stdout()
    return status


def _flush_stdout() -> None:
    if sys.stdout is not None:  # None: started with stdout closed
        sys.stdout.flush()


def _dispatch(argv: list[str]) -> int:
    argv = _command_first(argv)
    for command in commands():
        if isinstance(command, Passthrough) and argv[:1] == [command.name]:
            module = importlib.import_module(command.module)
            return int(module.main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


def _command_first(argv: list[str]) -> list[str]:
    """`pgcoord --database-url URL status` as `pgcoord status --database-url URL`: the
    options of a command may come before it too."""
    if not argv or not argv[0].startswith("-") or argv[0] in {"-h", "--help", "--version"}:
        return argv
    for n, word in enumerate(argv):
        if word in COMMANDS:
            return [word, *argv[:n], *argv[n + 1 :]]
    raise UsageError(f"no COMMAND given (one of {', '.join(COMMANDS)}; see {PROG} --help)")


def _say(prefix: str, message: str) -> None:
    with contextlib.suppress(OSError):  # stderr may be gone too
        print(f"{prefix}{message}", file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    """Send whatever is still printed, at exit too, nowhere: no second error while
    Python flushes stdout on the way out."""
    if sys.stdout is None:
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
