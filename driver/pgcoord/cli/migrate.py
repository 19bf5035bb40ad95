"""`pgcoord migrate`: install pgcoord, or upgrade it to the newest (or given) release."""

from __future__ import annotations

import argparse

from .. import config, migrations, releases
from ..errors import PgcoordError
from . import database
from .command import Command
from .errors import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    database.add_option(parser)
    parser.add_argument(
        "--to",
        metavar="VERSION",
        choices=releases.versions(),
        help="release to install or upgrade to (default: the newest, %(default)s)",
        default=releases.latest(),
    )


def run(args: argparse.Namespace) -> int:
    with database.connect(args) as conn:
        try:
            before, after = migrations.migrate(conn, args.to)
        except PgcoordError as exc:
            raise CommandError(f"{exc} ({exc.hint})" if exc.hint else str(exc)) from exc
        where = config.where(conn)
    if before is None:
        print(f"installed pgcoord {after} in {where}")
    elif before == after:
        print(f"pgcoord {after} is already installed in {where}: nothing to do")
    else:
        print(f"upgraded pgcoord {before} -> {after} in {where}")
    return 0


COMMAND = Command(
    "migrate",
    "install pgcoord, or upgrade it to the newest (or given) release",
    add_arguments,
    run,
)
