"""`pgcoord campaigns [--run RUN_ID]`: the campaign runs as one table: their progress,
their messages by state, what they sent in the last minute, their retries and snoozes so
far, and the handler's median and 95th percentile time (pgcoord.campaign_progress and
pgcoord.campaign_stats)."""

from __future__ import annotations

import argparse

from .. import campaigns, config
from ..errors import NotInstalled
from ..types import CampaignProgress, CampaignStats
from . import database, options
from .command import Command
from .errors import CommandError
from .tables import count, number, progress, table

WHAT = "campaign queue"  # what a release before 0.3.0 lacks
COLUMNS = (
    "run",
    "name",
    "status",
    "progress",
    "sent",
    "failed",
    "skipped",
    "pending",
    "processing",
    "msgs/min",
    "retries",
    "snoozes",
    "p50 ms",
    "p95 ms",
)
NO_RUNS = "no campaign runs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run",
        metavar="RUN_ID",
        dest="run_id",  # args.run is the command's to run
        type=options.RUN_ID,
        help="this run only (default: every run)",
    )
    database.add_option(parser)


def run(args: argparse.Namespace) -> int:
    with database.connect(args) as conn:
        try:
            runs = campaigns.campaign_progress(conn, args.run_id)
            if args.run_id is not None and not runs:
                raise CommandError(f"no campaign run {args.run_id} in {config.where(conn)}")
            stats = {s.run_id: s for s in campaigns.campaign_stats(conn, args.run_id)}
        except NotInstalled as exc:
            raise database.missing(conn, WHAT) from exc
    print(runs_table(runs, stats))
    return 0


def done(run: CampaignProgress) -> int:
    """The run's messages that are through: sent, failed for good, or skipped."""
    return run.sent + run.failed + run.skipped


def runs_table(runs: list[CampaignProgress], stats: dict[int, CampaignStats]) -> str:
    if not runs:
        return NO_RUNS
    rows = []
    for r in runs:
        s = stats.get(r.run_id)  # None: created between the two reads
        rows.append(
            (
                r.run_id,
                r.name,
                r.status,
                progress(done(r), r.total),
                *(count(n) for n in (r.sent, r.failed, r.skipped, r.pending, r.processing)),
                *(
                    ("", "", "", "", "")
                    if s is None
                    else (
                        count(s.sent_last_minute),
                        count(s.retries),
                        count(s.snoozes),
                        number(s.handler_p50_ms),
                        number(s.handler_p95_ms),
                    )
                ),
            )
        )
    return table(rows, COLUMNS)


COMMAND = Command(
    "campaigns",
    "show the campaign runs: progress, messages by state, throughput, retries, handler times",
    add_arguments,
    run,
    description="One row per campaign run: its progress (sent, failed and skipped of its "
    "total), its messages by state, msgs/min (sent in the last minute), retries (failed "
    "tries so far, lost leases included), snoozes (put back for the provider's rate limit), "
    "and the median and 95th percentile of the handler's time over its last 1000 sent "
    "messages (the metrics key handler_ms, stored by the campaign worker).",
)
