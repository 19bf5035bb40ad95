"""`pgcoord work HANDLER`: a buffer worker calling HANDLER once per batch until SIGTERM
or SIGINT. Its defaults are BufferWorker's own, read from its signature."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any, NamedTuple

from .. import migrations, releases
from ..errors import PgcoordError
from ..worker import BufferWorker
from . import database, options
from .command import Command
from .errors import CommandError, UsageError, one_line, shown

INBOX_SINCE = "0.2.0"  # the first release with the inbox (buffer_status, buffer_claim...)
DEFAULTS = {name: p.default for name, p in inspect.signature(BufferWorker).parameters.items()}


class WorkerOption(NamedTuple):
    """An option that is the BufferWorker argument of the same name (--retry-in is
    retry_in), with that argument's default."""

    option: str
    metavar: str
    type: Callable[[str], Any]
    help: str
    unset: str = ""  # how a default of None reads in --help

    @property
    def argument(self) -> str:
        return self.option.removeprefix("--").replace("-", "_")


WORKER_OPTIONS = (
    WorkerOption(
        "--concurrency", "N", options.CLAIM_LIMIT, "handlers running at once, and claims held"
    ),
    WorkerOption(
        "--lease", "SECONDS", options.LEASE, "lease of each claim, renewed by a heartbeat"
    ),
    WorkerOption(
        "--timeout",
        "SECONDS",
        options.WORKER_TIMEOUT,
        "a handler running longer is cancelled and its batch given back",
        unset="none",
    ),
    WorkerOption(
        "--retry-in", "SECONDS", options.RETRY_IN, "delay before a failed batch is tried again"
    ),
    WorkerOption(
        "--grace",
        "SECONDS",
        options.WORKER_GRACE,
        "on SIGTERM/SIGINT, time the batches in flight get to finish",
    ),
    WorkerOption(
        "--name", "NAME", options.NAME, "the worker's name in the claims", unset="host:pid:random"
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "handler",
        metavar="HANDLER",
        help="package.module:function (importable from the current directory too)",
    )
    database.add_option(parser)
    for worker_option in WORKER_OPTIONS:
        default = DEFAULTS[worker_option.argument]
        parser.add_argument(
            worker_option.option,
            metavar=worker_option.metavar,
            type=worker_option.type,
            default=default,
            help=f"{worker_option.help} (default: {_default_text(default, worker_option.unset)})",
        )


def run(args: argparse.Namespace) -> int:
    handler = load_handler(args.handler)
    url = database.url(args)
    with database.connect(args) as conn:
        installed = migrations.installed_version(conn)
        if installed is None:
            raise CommandError(database.not_installed(conn))
        if releases.version_key(installed) < releases.version_key(INBOX_SINCE):
            raise CommandError(
                f"pgcoord {installed} in {database.where(conn)} has no inbox: run pgcoord migrate"
            )
    _log_to_stderr()
    settings = {option.argument: getattr(args, option.argument) for option in WORKER_OPTIONS}
    try:
        worker = BufferWorker(handler, url, **settings)
        asyncio.run(worker.run(handle_signals=True))
    except (ValueError, PgcoordError) as exc:
        raise CommandError(str(exc)) from exc
    return 0


def _default_text(default: object, unset: str) -> str:
    if default is None:
        return unset
    return options.seconds(default) if isinstance(default, timedelta) else str(default)


def load_handler(spec: str) -> Callable[..., Any]:
    """The async function named by `package.module:function` (the function may be a
    dotted attribute path), importable from the current directory too."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"HANDLER must be package.module:function, got {shown(spec)}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise CommandError(
            f"cannot import {shown(module_name)}: {type(exc).__name__}: {one_line(exc)}"
        ) from exc
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError as exc:
            raise CommandError(f"{shown(module_name)} has no {shown(attribute)}") from exc
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


COMMAND = Command(
    "work",
    "run a buffer worker: call HANDLER once per batch until SIGTERM or SIGINT",
    add_arguments,
    run,
    description="Claim due conversations and call HANDLER, an async function taking "
    "a pgcoord.Batch, once per batch. SIGTERM or SIGINT stops claiming; batches in "
    "flight get --grace seconds to finish, then are given back.",
)
