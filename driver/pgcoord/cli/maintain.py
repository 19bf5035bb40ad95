"""`pgcoord maintain`: the campaign queue's upkeep, once, for cron: mark skipped the
pending messages too old to send (pgcoord.campaign_skip_stale) and, when asked, delete
the runs that ended long enough ago (pgcoord.campaign_prune)."""

from __future__ import annotations

import argparse

from .. import campaigns
from ..config import PRUNE_LIMIT
from ..errors import NotInstalled
from . import database, options
from .campaigns import WHAT
from .command import Command

CRON_SQL = (
    "SELECT cron.schedule('pgcoord-maintain', '* * * * *', 'SELECT pgcoord.campaign_skip_stale()')"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--older-than",
        metavar="SECONDS",
        type=options.OLDER_THAN,
        help="skip the pending messages scheduled more than SECONDS ago (default: each "
        "run's stale_after, set by campaign_create)",
    )
    parser.add_argument(
        "--prune-ended",
        metavar="SECONDS",
        type=options.PRUNE_ENDED,
        help="also delete the runs finished or cancelled more than SECONDS ago, with their "
        "messages and outcomes (e.g. 1209600: 14 days; keep runs longer than their leases)",
    )
    database.add_option(parser)


def run(args: argparse.Namespace) -> int:
    with database.connect(args) as conn:
        try:
            skipped = campaigns.campaign_skip_stale(conn, args.older_than)
        except NotInstalled as exc:
            raise database.missing(conn, WHAT) from exc
        print(f"skipped {skipped} stale message{'' if skipped == 1 else 's'}", flush=True)
        if args.prune_ended is not None:
            pruned = 0
            while (count := campaigns.campaign_prune(conn, args.prune_ended)) >= PRUNE_LIMIT:
                pruned += count
            pruned += count
            print(f"pruned {pruned} message{'' if pruned == 1 else 's'} of ended runs")
    return 0


COMMAND = Command(
    "maintain",
    "mark too-old pending campaign messages skipped, prune ended runs, once (for cron)",
    add_arguments,
    run,
    description="Run the campaign queue's upkeep once: mark skipped the pending messages "
    "of running runs that are older than their run's stale_after (or --older-than), and "
    "print how many; with --prune-ended, also delete the runs that ended long enough ago "
    "(10,000 messages per transaction until none is left) and print how many messages "
    "went. Campaign workers skip stale messages every minute by themselves (pgcoord work "
    "--campaign --skip-stale-every); for a fleet without them, run this from cron, or "
    f"schedule it in the database with pg_cron: {CRON_SQL}",
)
