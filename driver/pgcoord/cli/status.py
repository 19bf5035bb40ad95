"""`pgcoord status`: the held locks, the buffered conversations (dead batches first), the
campaign runs with their progress, and the rate keys, as tables. A section of a release
that the database does not have yet is one line saying so. While a run is running on a
server whose autovacuum visits the database less often than docs/vacuum.md recommends,
a last line says so."""

from __future__ import annotations

import argparse
import math
from typing import Any

import psycopg

from .. import campaigns, inbox, locks, migrations, rates, sql
from ..config import AUTOVACUUM_NAPTIME
from ..errors import NotInstalled
from ..types import BufferStatus, CampaignProgress, LockStatus, RateStatus
from . import database
from .command import Command
from .errors import CommandError
from .tables import count, table, time

# the columns of the views pgcoord.lock_status, buffer_status, campaign_progress and
# rate_status
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
RUN_COLUMNS = (
    "run_id",
    "name",
    "status",
    "pending",
    "processing",
    "sent",
    "failed",
    "skipped",
    "total",
)
RATE_COLUMNS = ("key", "tokens", "per_second", "burst", "paused_until", "updated_at")
NO_BUFFERS = "no buffered conversations"
NO_RUNS = "no campaign runs"
NO_RATES = "no rate keys"
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
        try:
            progress = campaigns.campaign_progress(conn)
            sections = [runs_table(progress), rates_table(rates.rate_status(conn))]
            if any(run.status == "running" for run in progress):
                hint = vacuum_hint(*autovacuum_settings(conn))
                sections += [hint] if hint else []
        except NotInstalled:  # a release before the campaign queue and the rate limits
            version = migrations.installed_version(conn)
            sections = [
                f"no campaign runs or rate keys: pgcoord {version} has no campaign queue "
                "(pgcoord migrate installs it)"
            ]
    print("\n\n".join([locks_table(held), buffers, *sections]))
    return 0


def autovacuum_settings(conn: psycopg.Connection[Any]) -> tuple[bool, int]:
    """Whether autovacuum runs on the server, and its naptime in seconds."""
    row = conn.execute(sql.AUTOVACUUM, prepare=False).fetchone()
    assert row is not None
    return bool(row[0]), int(row[1].total_seconds())


def vacuum_hint(autovacuum: bool, naptime: int) -> str | None:
    """What to change on the server for a busy campaign queue, when anything."""
    if not autovacuum:
        return (
            "autovacuum is off on this server: a busy campaign queue grows until something"
            f" vacuums it (docs/vacuum.md: autovacuum on, autovacuum_naptime"
            f" {AUTOVACUUM_NAPTIME}s)"
        )
    if naptime > AUTOVACUUM_NAPTIME:
        return (
            f"autovacuum_naptime is {naptime}s on this server: a busy campaign queue grows"
            " between autovacuum's visits (docs/vacuum.md recommends"
            f" {AUTOVACUUM_NAPTIME}s)"
        )
    return None


def locks_table(held: list[LockStatus]) -> str:
    if not held:
        return "no locks are held"
    rows = [
        (
            lock.key,
            lock.owner,
            lock.token,
            time(lock.acquired_at),
            time(lock.expires_at),
            "yes" if lock.expired else "no",
        )
        for lock in held
    ]
    return table(rows, LOCK_COLUMNS)


def buffers_table(buffers: list[BufferStatus]) -> str:
    """One row per buffered conversation and parked batch; dead batches say DEAD and
    are counted below the table."""
    if not buffers:
        return NO_BUFFERS
    rows = [
        (
            b.conversation_key,
            b.message_count,
            time(b.first_message_at),
            time(b.last_message_at),
            time(b.flush_at),
            b.claimed_by or "",
            time(b.claimed_until),
            b.attempt,
            "DEAD" if b.dead else "no",
            _short(b.last_error),
        )
        for b in buffers
    ]
    found = table(rows, BUFFER_COLUMNS)
    dead = sum(b.dead for b in buffers)
    if dead:
        found += (
            f"\n{dead} batch{'es' if dead > 1 else ''} parked as DEAD after repeated failures"
            " (kept for inspection; new messages of those conversations still flow;"
            " pgcoord revive CONVERSATION replays them)"
        )
    return found


def runs_table(runs: list[CampaignProgress]) -> str:
    """One row per campaign run, oldest first, its messages counted by state."""
    if not runs:
        return NO_RUNS
    rows = [
        (
            r.run_id,
            r.name,
            r.status,
            *(count(n) for n in (r.pending, r.processing, r.sent, r.failed, r.skipped, r.total)),
        )
        for r in runs
    ]
    return table(rows, RUN_COLUMNS)


def rates_table(keys: list[RateStatus]) -> str:
    """One row per rate key: its tokens now (rounded down: 0.996 is not a token), its
    rate, and the pause in force."""
    if not keys:
        return NO_RATES
    rows = [
        (
            k.key,
            "" if k.tokens is None else f"{math.floor(k.tokens * 100 + 1e-9) / 100:.2f}",
            "" if k.per_second is None else f"{k.per_second:g}",
            "" if k.burst is None else k.burst,
            time(k.paused_until),
            time(k.updated_at),
        )
        for k in keys
    ]
    return table(rows, RATE_COLUMNS)


def _short(text: str | None) -> str:
    """An error on one line, cut to LAST_ERROR_WIDTH characters."""
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= LAST_ERROR_WIDTH else line[: LAST_ERROR_WIDTH - 3] + "..."


COMMAND = Command(
    "status",
    "show the held locks, the buffered conversations, the campaign runs and the rate keys",
    add_arguments,
    run,
)
