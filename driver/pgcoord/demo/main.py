"""`pgcoord demo`: lease locks and the inbox at work on a real PostgreSQL server.

Locks (`locks_scene`): fifty webhooks for one chat session race for its lock; exactly
one processes it and the others are told who holds it. Only the owner can release. A
crashed holder's lease runs out, another takes over with a larger fencing token, and the
stale holder's late calls and writes are refused.

Inbox (`inbox_scene`): a WhatsApp-like storm answered by worker processes, one of them
SIGKILLed mid-batch; every message stored once and answered exactly once, every burst by
one reply, nothing stuck.

Every step is checked (`checks`); the exit status is 0 only when every check held.

The server is --database-url, else DATABASE_URL, else a throwaway embedded PostgreSQL.
On a given server pgcoord is installed when missing; the lock scenes use keys and a
schema of their own run, the storm a scratch database of its own, and all are removed at
the end.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Sequence

import psycopg

from pgcoord import PgcoordError
from pgcoord.cli import database
from pgcoord.cli.errors import CommandError
from pgcoord.cli.main import guarded
from pgcoord.cli.options import Integer, Parser

from .inbox_scene import InboxScenes, connections_needed
from .locks_scene import play_locks
from .output import Report, summary
from .server import CannotRun, connect, install, server, server_version
from .waiting import StormError

WEBHOOKS = 50
CONVERSATIONS = 120
STORM_WORKERS = 3
# each webhook and each worker process holds connections of its own
WEBHOOKS_RANGE = Integer(2, 1000)
CONVERSATIONS_RANGE = Integer(1, 100_000)
WORKERS_RANGE = Integer(1, 64)
PARTS = ("locks", "inbox")
TITLES = {"locks": "lease locks for webhook bursts", "inbox": "an inbox for message storms"}


def main(argv: list[str] | None = None) -> int:
    """Run the demo; the exit status is that of every pgcoord command, 1 also when a
    check failed."""
    return guarded("pgcoord demo: ", lambda: _play(build_parser().parse_args(argv)))


def _play(args: argparse.Namespace) -> int:
    parts = PARTS if args.only is None else (args.only,)
    report = Report(sys.stdout, ascii_only=args.ascii)
    url = database.given_url(args)
    print(f"pgcoord demo: {', '.join(TITLES[p] for p in parts)}", flush=True)
    where = "the server"
    start = time.perf_counter()
    try:
        with server(url) as (server_url, where):
            start = time.perf_counter()
            run(
                server_url,
                where,
                report,
                args.webhooks,
                parts=parts,
                conversations=args.conversations,
                workers=args.workers,
            )
    except (CannotRun, psycopg.Error, PgcoordError, StormError) as exc:
        raise CommandError(_stopped(exc, where, args)) from exc
    print(f"\n{summary(report.checks, time.perf_counter() - start)}", flush=True)
    return 0 if report.checks and not report.failed else 1


def run(
    url: str,
    where: str,
    report: Report,
    webhooks: int = WEBHOOKS,
    *,
    parts: Sequence[str] = PARTS,
    conversations: int = CONVERSATIONS,
    workers: int = STORM_WORKERS,
) -> None:
    """Install when needed, play every scene of `parts`, clean up. The checks land in
    `report`."""
    run_id = uuid.uuid4().hex[:8]
    with connect(url) as admin:
        report.line(f"server: PostgreSQL {server_version(admin)}, {where}")
        if "locks" in parts:
            report.line(install(admin))
            play_locks(url, admin, report, run_id, webhooks)
    if "inbox" in parts:
        number = 5 if "locks" in parts else 1
        InboxScenes(url, run_id, report, number).play(conversations, workers)


def _stopped(exc: Exception, where: str, args: argparse.Namespace) -> str:
    """What to say, on one line, when the demo could not run to its end."""
    if isinstance(exc, CannotRun):
        return str(exc)
    if isinstance(exc, StormError):
        return f"the storm stopped: {exc}"
    if isinstance(exc, psycopg.OperationalError):
        said = f"connection to {where} failed: {database.connection_cause(exc)}"
        if exc.sqlstate == "53300":  # too many connections
            said += (
                f"; the lock scenes open {args.webhooks + 3} connections at once, the storm "
                f"up to {connections_needed(args.workers)}: try fewer with --webhooks or "
                "--workers"
            )
        return said
    state = getattr(exc, "sqlstate", None)
    return f"stopped by an error ({state or '-'}): {exc}"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="pgcoord demo",
        description="Show pgcoord's lease locks and inbox at work on a real PostgreSQL "
        "server and check every step. Exits 0 only when every check held.",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="server to use (default: $DATABASE_URL, else a throwaway embedded PostgreSQL); "
        "pgcoord is installed there when missing",
    )
    parser.add_argument(
        "--webhooks",
        type=WEBHOOKS_RANGE,
        default=WEBHOOKS,
        help=f"concurrent webhooks in the burst, each with its own connection (default {WEBHOOKS})",
    )
    parser.add_argument(
        "--conversations",
        type=CONVERSATIONS_RANGE,
        default=CONVERSATIONS,
        help=f"conversations in the inbox storm (default {CONVERSATIONS})",
    )
    parser.add_argument(
        "--workers",
        type=WORKERS_RANGE,
        default=STORM_WORKERS,
        help=f"worker processes answering the storm, besides the one that is killed "
        f"(default {STORM_WORKERS})",
    )
    parser.add_argument(
        "--only", choices=PARTS, default=None, help="play only the lock scenes or the inbox storm"
    )
    parser.add_argument("--ascii", action="store_true", help="print ok/FAIL instead of ✓/✗")
    return parser
