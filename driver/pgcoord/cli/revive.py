"""`pgcoord revive CONVERSATION`: replay a conversation's dead batches."""

from __future__ import annotations

import argparse

from .. import inbox
from ..errors import NotInstalled, PgcoordError
from . import database, options
from .command import Command
from .errors import CommandError

WHAT = "inbox"  # what a release before 0.2.0 lacks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "conversation", metavar="CONVERSATION", type=options.NAME, help="the conversation key"
    )
    database.add_option(parser)


def run(args: argparse.Namespace) -> int:
    with database.connect(args) as conn:
        try:
            count = inbox.buffer_revive(conn, args.conversation)
        except NotInstalled as exc:
            raise database.missing(conn, WHAT) from exc
        except PgcoordError as exc:
            raise CommandError(str(exc)) from exc
    if count == 0:
        print(f"no dead batch of {args.conversation!r}: nothing to revive")
    else:
        plural = "" if count == 1 else "s"
        print(f"revived {count} message{plural} of {args.conversation!r}: due now")
    return 0


COMMAND = Command(
    "revive",
    "replay a conversation's dead batches: their messages are due again",
    add_arguments,
    run,
)
