"""`pgcoord work HANDLER`: a buffer worker calling HANDLER once per batch, or with
--campaign a campaign worker calling it once per campaign message, until SIGTERM or
SIGINT. Each option is the worker's argument of the same name (--retry-in is retry_in)
and belongs to the workers whose signature has that argument; an option not given is
not passed, so the defaults are the workers' own, read from their signatures."""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import psycopg

from .. import campaigns, config, migrations, releases, sql
from ..errors import InvalidArgument, PgcoordError
from ..worker import BufferWorker, CampaignWorker, RateBudget, Runtime, loop
from . import database, options
from .command import Command
from .errors import CommandError, UsageError, one_line, shown


@dataclass(frozen=True)
class Kind:
    """A kind of worker the command runs."""

    name: str
    worker: Callable[..., Runtime[Any]]
    since: str  # the first release with its tables
    what: str  # what an older release lacks
    item: str  # what its handler gets

    @property
    def defaults(self) -> Mapping[str, Any]:
        """The worker's arguments and their defaults."""
        parameters = inspect.signature(self.worker).parameters
        return {name: p.default for name, p in parameters.items()}


BUFFER = Kind("buffer worker", BufferWorker, "0.2.0", "inbox", "batch")
CAMPAIGN = Kind("campaign worker", CampaignWorker, "0.3.0", "campaign queue", "message")
KINDS = (BUFFER, CAMPAIGN)


class WorkerOption(NamedTuple):
    """An option that is the worker argument of the same name (--retry-in is retry_in),
    with that argument's default."""

    option: str
    metavar: str
    type: Callable[[str], Any]
    help: str
    unset: str = ""  # how a default of None reads in --help
    never: bool = False  # 0 means None (never)

    @property
    def argument(self) -> str:
        return self.option.removeprefix("--").replace("-", "_")

    def value(self, given: Any) -> Any:
        return None if self.never and not given else given


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
        "a handler running longer is cancelled and its item given back as a failed try",
        unset="none",
    ),
    WorkerOption(
        "--grace",
        "SECONDS",
        options.WORKER_GRACE,
        "on SIGTERM/SIGINT, time the items in flight get to finish (a second signal ends "
        "it at once)",
    ),
    WorkerOption(
        "--name", "NAME", options.NAME, "the worker's name in the claims", unset="host:pid:random"
    ),
    WorkerOption(
        "--retry-in", "SECONDS", options.RETRY_IN, "delay before a failed batch is tried again"
    ),
    WorkerOption(
        "--run-id",
        "RUN_ID",
        options.RUN_ID,
        "send the messages of this run only",
        unset="every running run",
    ),
    WorkerOption(
        "--batch",
        "N",
        options.CLAIM_LIMIT,
        "messages claimed in one call (capped at --burst with a rate limit)",
    ),
    WorkerOption(
        "--skip-stale-every",
        "SECONDS",
        options.SKIP_STALE_EVERY,
        "how often one worker of the fleet marks too-old pending messages skipped; 0: never",
        unset="never",
        never=True,
    ),
)


class Composite(NamedTuple):
    """Options that make one worker argument together."""

    options: tuple[str, ...]
    argument: str


RATE = Composite(("--rate-key", "--rate", "--burst"), "rate")
LISTEN = Composite(("--listen", "--no-listen"), "listen")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "handler",
        metavar="HANDLER",
        help="package.module:function, an async function (importable from the current "
        "directory too)",
    )
    parser.add_argument(
        "--campaign",
        action="store_true",
        help="run a campaign worker: HANDLER gets each pgcoord.CampaignMessage and returns "
        "its metrics (a dict) or None (default: a buffer worker, HANDLER gets each "
        "pgcoord.Batch)",
    )
    database.add_option(parser)
    groups = {
        KINDS: parser.add_argument_group("options of both workers"),
        (BUFFER,): parser.add_argument_group("options of the buffer worker"),
        (CAMPAIGN,): parser.add_argument_group("options of the campaign worker (--campaign)"),
    }
    for worker_option in WORKER_OPTIONS:
        kinds = _kinds(worker_option.argument)
        groups[kinds].add_argument(
            worker_option.option,
            metavar=worker_option.metavar,
            type=worker_option.type,
            help=f"{worker_option.help} (default: {_defaults_text(worker_option, kinds)})",
        )
    both = groups[_kinds(RATE.argument)]
    both.add_argument(
        "--rate-key",
        metavar="KEY",
        type=options.NAME,
        help="a rate limit shared by every worker given KEY (pgcoord.rate_acquire), with "
        "--rate and --burst: the fleet starts at most RATE handlers a second",
    )
    both.add_argument("--rate", metavar="RATE", type=options.RATE, help="handlers per second")
    both.add_argument(
        "--burst", metavar="N", type=options.BURST, help="handlers at once after a quiet spell"
    )
    groups[_kinds("payloads")].add_argument(
        "--payloads",
        action="store_true",
        help="HANDLER gets (batch, payloads): besides the batch, the stored payloads of its "
        "messages, in the order of batch.message_ids, read in the claim's own statement",
    )
    listen = groups[_kinds(LISTEN.argument)].add_mutually_exclusive_group()
    listen.add_argument(
        "--listen",
        metavar="URL",
        type=_listen_url,
        help="LISTEN for new work on this database URL, a direct connection to the server "
        "when --database-url goes through a transaction-mode pooler (default: on the "
        "worker's own database)",
    )
    listen.add_argument(
        "--no-listen",
        action="store_true",
        help="do not LISTEN: find new work by polling alone",
    )
    parser.add_argument(
        "--loop",
        choices=loop.LOOPS,
        help="the event loop to run on: uvloop, the cheaper one, where installed (a "
        f"dependency everywhere but on Windows), or asyncio's own (default: {loop.default()})",
    )


def run(args: argparse.Namespace) -> int:
    kind = CAMPAIGN if args.campaign else BUFFER
    settings = worker_settings(args, kind)
    if args.loop == "uvloop" and loop.default() != "uvloop":
        raise UsageError("--loop uvloop: uvloop is not installed (pip install uvloop)")
    item = "batch, payloads" if args.payloads else kind.item
    handler = load_handler(args.handler, item)
    url = database.url(args)
    with database.connect(args) as conn:
        installed = migrations.installed_version(conn)
        if installed is None:
            raise CommandError(database.not_installed(conn))
        if releases.version_key(installed) < releases.version_key(kind.since):
            raise CommandError(database.lacks(conn, installed, kind.what))
        if isinstance(settings.get("listen"), str):
            _check_listen(conn, settings["listen"])
        if settings.get("run_id") is not None:
            try:
                campaigns.campaign_due_in(conn, settings["run_id"])
            except InvalidArgument as exc:
                raise CommandError(
                    f"no campaign run {settings['run_id']} in {config.where(conn)}"
                ) from exc
            [run] = campaigns.campaign_progress(conn, settings["run_id"])
            if run.ended:
                raise CommandError(
                    f"campaign run {run.run_id} is {run.status}: none of its messages will "
                    "ever be claimed"
                )
    try:
        # TypeError: a handler that does not take what the worker passes it
        worker = kind.worker(handler, url, **settings)
    except (TypeError, ValueError, PgcoordError) as exc:
        raise CommandError(f"{args.handler}: {_in_option_words(str(exc))}") from exc
    _log_to_stderr()
    try:
        loop.run(worker.run(handle_signals=True), args.loop)
    except (ValueError, PgcoordError) as exc:
        raise CommandError(str(exc)) from exc
    return 0


def worker_settings(args: argparse.Namespace, kind: Kind) -> dict[str, Any]:
    """The worker arguments of the options given: UsageError for an option of the other
    kind of worker, or a rate limit given in part."""
    settings: dict[str, Any] = {}
    for worker_option in WORKER_OPTIONS:
        given = getattr(args, worker_option.argument)
        if given is not None:
            _check_kind(worker_option.option, worker_option.argument, kind)
            settings[worker_option.argument] = worker_option.value(given)
    rate = {option: getattr(args, _dest(option)) for option in RATE.options}
    missing = [option for option, value in rate.items() if value is None]
    if len(missing) < len(rate):
        if missing:
            raise UsageError(
                f"{', '.join(RATE.options[:-1])} and {RATE.options[-1]} go together: "
                f"{' and '.join(missing)} missing"
            )
        _check_kind(RATE.options[0], RATE.argument, kind)
        settings["rate"] = RateBudget(*rate.values())
    if args.payloads:
        _check_kind("--payloads", "payloads", kind)
        settings["payloads"] = True
    if args.listen is not None or args.no_listen:
        _check_kind("--listen" if args.listen is not None else "--no-listen", "listen", kind)
        settings["listen"] = False if args.no_listen else args.listen
    return settings


def _in_option_words(message: str) -> str:
    """A worker's message as the command line says it: the worker argument
    `payloads=True` is the option --payloads."""
    return message.replace("payloads=True", "--payloads")


def _check_kind(option: str, argument: str, kind: Kind) -> None:
    if argument in kind.defaults:
        return
    if kind is BUFFER:
        raise UsageError(f"{option} is an option of the campaign worker: add --campaign")
    raise UsageError(f"{option} is an option of the buffer worker, not of --campaign")


def _kinds(argument: str) -> tuple[Kind, ...]:
    return tuple(kind for kind in KINDS if argument in kind.defaults)


def _dest(option: str) -> str:
    return option.removeprefix("--").replace("-", "_")


def _defaults_text(worker_option: WorkerOption, kinds: tuple[Kind, ...]) -> str:
    """The default of each worker that takes the option: "60", or "4; --campaign: 8"."""
    texts = [_default_text(k.defaults[worker_option.argument], worker_option) for k in kinds]
    if len(set(texts)) == 1:
        return texts[0]
    return "; ".join(
        text if kind is BUFFER else f"--campaign: {text}"
        for kind, text in zip(kinds, texts, strict=True)
    )


def _default_text(default: object, worker_option: WorkerOption) -> str:
    if default is None:
        return worker_option.unset
    return options.seconds(default) if isinstance(default, timedelta) else str(default)


def _listen_url(text: str) -> str:
    try:
        database.check(text, "--listen")
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _check_listen(conn: psycopg.Connection[Any], listen: str) -> None:
    """--listen must reach the worker's own database (where NOTIFY runs), or the worker
    would never be woken: refused at the start, where a wrong URL is a user's mistake
    (later, an outage of either is waited out)."""
    try:
        with psycopg.connect(
            listen, autocommit=True, connect_timeout=config.connect_timeout(listen)
        ) as other:
            heard, reached = other.execute(sql.DATABASE_IDENTITY).fetchone(), config.where(other)
    except psycopg.Error as exc:
        raise CommandError(f"--listen: {database.cannot_connect(exc, listen)}") from exc
    if heard != conn.execute(sql.DATABASE_IDENTITY).fetchone():
        raise CommandError(
            f"--listen reaches {reached}, another database than the worker's"
            f" {config.where(conn)}: it would never hear of new work"
        )


def load_handler(spec: str, item: str = "batch") -> Callable[..., Any]:
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
    except SystemExit as exc:  # the module ends the program as it is imported
        raise CommandError(
            f"importing {shown(module_name)} exited (SystemExit: {exc.code!r}): a handler's "
            "module should define it, not run a program"
        ) from exc
    except Exception as exc:
        raise CommandError(
            f"cannot import {shown(module_name)}: {type(exc).__name__}: {one_line(exc)}"
            f"{_path_hint(module_name, attribute)}"
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
        raise CommandError(f"{spec} is not an async function (async def handler({item}))")
    handler: Callable[..., Any] = target
    return handler


def _path_hint(module_name: str, attribute: str) -> str:
    """When the module of HANDLER looks like a file path (h.py, ./h, /tmp/h.py), what
    HANDLER is, with the module name of that file: " (HANDLER is ..., e.g. 'h:reply')";
    else nothing."""
    if not (module_name.endswith(".py") or "/" in module_name or os.sep in module_name):
        return ""
    example = f"{Path(module_name).stem}:{attribute}"
    return (
        " (HANDLER is a module name importable from the current directory or PYTHONPATH, "
        f"e.g. {example!r})"
    )


def _log_to_stderr() -> None:
    """One line per item, with the time: INFO and up to stderr (unless the program
    has configured logging already)."""
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pgcoord").setLevel(logging.INFO)
    # the worker says in one line what each fault did; the pool's own reconnection
    # attempts (two lines each, several a second during an outage) only repeat it
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


COMMAND = Command(
    "work",
    "run a worker: call HANDLER once per batch (or per campaign message) until SIGTERM",
    add_arguments,
    run,
    description="Claim due conversations and call HANDLER, an async function taking "
    "a pgcoord.Batch, once per batch; with --campaign, claim due campaign messages and "
    "call HANDLER once per pgcoord.CampaignMessage, storing the dict it returns as the "
    "message's metrics (with handler_ms, the handler's time). SIGTERM or SIGINT stops "
    "claiming; items in flight get --grace seconds to finish, then are given back (a "
    "second signal gives them back at once).",
)
