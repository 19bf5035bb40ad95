"""`pgcoord status`: the held locks, then the buffered conversations (dead batches
first), as tables."""

from __future__ import annotations

import argparse
from datetime import datetime

from tabulate import tabulate

from .. import inbox, locks, migrations
from ..errors import NotInstalled
from ..types import BufferStatus, LockStatus
from . import database
from .command import Command
from .errors import CommandError

# the columns of the views pgcoord.lock_status and pgcoord.buffer_status
LOCK_COLUMNS = ("key", "owner", "token", "acquired_at", "expires_at", "expired")
BUFFER_COLUMNS = (
    "conversation_key",
    "message_count",
    "first_message_at",
    "last_message_at",
    "flush_at",
    "claimed_by",
    "claimed_until",
    "attempt",
    "dead",
    "last_error",
)
NO_BUFFERS = "no buffered conversations"
LAST_ERROR_WIDTH = 60  # characters of buffer_status.last_error shown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    database.add_option(parser)


def run(args: argparse.Namespace) -> int:
    with database.connect(args) as conn:
        try:
            held = locks.lock_status(conn)
        except NotInstalled as exc:
            raise CommandError(database.not_installed(conn)) from exc
        try:
            buffers = buffers_table(inbox.buffer_status(conn))
        except NotInstalled:  # a release before the inbox has no view buffer_status
            version = migrations.installed_version(conn)
            buffers = f"no buffers: pgcoord {version} has no inbox (pgcoord migrate installs it)"
    print(locks_table(held))
    print()
    print(buffers)
    return 0


def locks_table(held: list[LockStatus]) -> str:
    if not held:
        return "no locks are held"
    rows = [
        (
            lock.key,
            lock.owner,
            lock.token,
            _time(lock.acquired_at),
            _time(lock.expires_at),
            "yes" if lock.expired else "no",
        )
        for lock in held
    ]
    return tabulate(rows, headers=LOCK_COLUMNS, disable_numparse=True)


def buffers_table(buffers: list[BufferStatus]) -> str:
    """One row per buffered conversation and parked batch; dead batches say DEAD and
    are counted below the table."""
    if not buffers:
        return NO_BUFFERS
    rows = [
        (
            b.conversation_key,
            b.message_count,
            _time(b.first_message_at),
            _time(b.last_message_at),
            _time(b.flush_at),
            b.claimed_by or "",
            _time(b.claimed_until),
            b.attempt,
            "DEAD" if b.dead else "no",
            _short(b.last_error),
        )
        for b in buffers
    ]
    table = tabulate(rows, headers=BUFFER_COLUMNS, disable_numparse=True)
    dead = sum(b.dead for b in buffers)
    if dead:
        table += (
            f"\n{dead} batch{'es' if dead > 1 else ''} parked as DEAD after repeated failures"
            " (kept for inspection; new messages of those conversations still flow;"
            " pgcoord revive CONVERSATION replays them)"
        )
    return table


def _time(value: datetime | None) -> str:
    return "" if value is None else value.isoformat(sep=" ", timespec="milliseconds")


def _short(text: str | None) -> str:
    """An error on one line, cut to LAST_ERROR_WIDTH characters."""
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= LAST_ERROR_WIDTH else line[: LAST_ERROR_WIDTH - 3] + "..."


COMMAND = Command(
    "status", "show the held locks and the buffered conversations", add_arguments, run
)
