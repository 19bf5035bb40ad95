"""`pgcoord maintain`: the campaign queue's upkeep, once, for cron: mark skipped the
pending messages too old to send (pgcoord.campaign_skip_stale)."""

from __future__ import annotations

import argparse

from .. import campaigns
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
    database.add_option(parser)


def run(args: argparse.Namespace) -> int:
    with database.connect(args) as conn:
        try:
            skipped = campaigns.campaign_skip_stale(conn, args.older_than)
        except NotInstalled as exc:
            raise database.missing(conn, WHAT) from exc
    print(f"skipped {skipped} stale message{'' if skipped == 1 else 's'}")
    return 0


COMMAND = Command(
    "maintain",
    "mark too-old pending campaign messages skipped, once (for cron)",
    add_arguments,
    run,
    description="Run the campaign queue's upkeep once: mark skipped the pending messages "
    "of running runs that are older than their run's stale_after (or --older-than), and "
    "print how many. Campaign workers do this every minute by themselves (pgcoord work "
    "--campaign --skip-stale-every); for a fleet without them, run this from cron, or "
    f"schedule it in the database with pg_cron: {CRON_SQL}",
)
