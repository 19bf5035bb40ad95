"""`pgcoord demo`: lease locks and the inbox at work on a real PostgreSQL server.

Locks (`locks_scene`): fifty webhooks for one chat session race for its lock; exactly
one processes it and the others are told who holds it. Only the owner can release. A
crashed holder's lease runs out, another takes over with a larger fencing token, and the
stale holder's late calls and writes are refused.

Inbox (`inbox_scene`): a WhatsApp-like storm answered by worker processes, one of them
SIGKILLed mid-batch; every message stored once and answered exactly once, every burst by
one reply, nothing stuck.

Campaign (`campaign_scene`): a few thousand WhatsApp messages sent by worker processes
through a local fake provider that is slow, fails some calls, answers 429 and enforces
a rate limit, one worker SIGKILLed mid-batch; every message sent once or failed after
its retries with its error kept, none lost or stuck, the gateway's limit never exceeded,
and the throughput beside the old sender's.

Every step is checked (`checks`); the exit status is 0 only when every check held.

The server is --database-url, else DATABASE_URL, else a throwaway embedded PostgreSQL.
On a given server pgcoord is installed when missing; the lock scenes use keys and a
schema of their own run, the storm and the campaign each a scratch database of its own,
and all are removed at the end.
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
from .waiting import SceneError

WEBHOOKS = 50
CONVERSATIONS = 120
STORM_WORKERS = 3
MESSAGES = 2000
# each webhook and each worker process holds connections of its own
WEBHOOKS_RANGE = Integer(2, 1000)
CONVERSATIONS_RANGE = Integer(1, 100_000)
WORKERS_RANGE = Integer(1, 64)
MESSAGES_RANGE = Integer(1, 1_000_000)
PARTS = ("locks", "inbox", "campaign")
TITLES = {
    "locks": "lease locks for webhook bursts",
    "inbox": "an inbox for message storms",
    "campaign": "a campaign send queue with a shared rate limit",
}


def main(argv: list[str] | None = None) -> int:
    """Run the demo; the exit status is that of every pgcoord command, 1 also when a
    check failed."""
    return guarded("pgcoord demo: error: ", lambda: _play(build_parser().parse_args(argv)))


def _play(args: argparse.Namespace) -> int:
    parts = PARTS if args.only is None else (args.only,)
    report = Report(sys.stdout, ascii_only=args.ascii)
    url = database.given_url(args)
    print(f"pgcoord demo: {', '.join(TITLES[p] for p in parts)}", flush=True)
    where = "the server"
    start = time.perf_counter()
    try:
        if "campaign" in parts:
            _campaign_needs()
        with server(url) as (server_url, where):
            start = time.perf_counter()
            run(
                server_url,
                where,
                report,
                args.webhooks,
                parts=parts,
                conversations=args.conversations,
                messages=args.messages,
                workers=args.workers,
            )
    except (CannotRun, psycopg.Error, PgcoordError, SceneError) as exc:
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
    messages: int = MESSAGES,
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
    number = 5 if "locks" in parts else 1
    if "inbox" in parts:
        InboxScenes(url, run_id, report, number).play(conversations, workers)
        number += 2
    if "campaign" in parts:
        from .campaign_scene import CampaignScene  # needs the demo extra (httpx, aiohttp)

        CampaignScene(url, run_id, report, number).play(messages, workers)


def _campaign_needs() -> None:
    """CannotRun when the campaign scene's packages (the demo extra) are missing."""
    try:
        from . import campaign_scene  # noqa: F401
    except ModuleNotFoundError as exc:
        raise CannotRun(
            f"the campaign scene needs the demo extra ({exc.name}): pip install "
            "'pgcoord[demo]', or play the other scenes with --only"
        ) from exc


def _stopped(exc: Exception, where: str, args: argparse.Namespace) -> str:
    """What to say, on one line, when the demo could not run to its end."""
    if isinstance(exc, CannotRun):
        return str(exc)
    if isinstance(exc, SceneError):
        return f"the scene stopped: {exc}"
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
        description="Show pgcoord's lease locks, inbox and campaign send queue at work on a "
        "real PostgreSQL server and check every step. Exits 0 only when every check held.",
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
        help=f"worker processes of the storm and of the campaign, besides the one that "
        f"is killed (default {STORM_WORKERS})",
    )
    parser.add_argument(
        "--messages",
        type=MESSAGES_RANGE,
        default=MESSAGES,
        help=f"messages in the campaign (default {MESSAGES:,})",
    )
    parser.add_argument(
        "--only",
        choices=PARTS,
        default=None,
        help="play only the lock scenes, the inbox storm or the campaign",
    )
    parser.add_argument("--ascii", action="store_true", help="print ok/FAIL instead of ✓/✗")
    return parser
