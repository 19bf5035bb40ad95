"""`pgcoord watch RUN_ID`: follow a campaign run live until it has nothing pending or
processing, or is cancelled or marked finished: a progress bar (sent, failed and skipped
of the total), an estimate of the time left, the last minute's sends. On a terminal the
line is redrawn in place, with as many of its parts as the width takes (the most useful
first); otherwise one line per --interval. Then one summary line, and exit status 0;
Ctrl-C stops it quietly (130). A connection lost while watching (a server restart, a
killed backend) is made again, every --interval, until it answers."""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg

from .. import campaigns, config
from ..errors import NotInstalled
from ..types import CampaignProgress, CampaignStats
from . import database, options
from .campaigns import WHAT, done
from .command import Command
from .errors import INTERRUPTED, CommandError
from .tables import count, duration, number, percent, progress

INTERVAL = timedelta(seconds=1)
BAR_WIDTH = 20
# the throughput behind the estimate: what this watch saw over the last minute (at its
# first look, the run's sends of the last minute)
WINDOW = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_id", metavar="RUN_ID", type=options.RUN_ID, help="the run")
    parser.add_argument(
        "--interval",
        metavar="SECONDS",
        type=options.WATCH_INTERVAL,
        default=INTERVAL,
        help=f"how often to look again (default: {options.seconds(INTERVAL)})",
    )
    database.add_option(parser)


@dataclass
class Throughput:
    """Messages through per second, from what was seen over the last WINDOW seconds."""

    samples: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)

    def add(self, at: float, through: int) -> None:
        self.samples.append((at, through))
        while len(self.samples) > 2 and at - self.samples[1][0] >= WINDOW:
            self.samples.popleft()

    def per_second(self, stats: CampaignStats) -> float:
        (first, before), (last, now) = self.samples[0], self.samples[-1]
        # until the watch has seen a message through (or a whole window without one),
        # the run's sends of the last minute: a slow run has an estimate from the start
        if last > first and (now > before or last - first >= WINDOW):
            return (now - before) / (last - first)
        return stats.sent_last_minute / 60


def run(args: argparse.Namespace) -> int:
    tty = sys.stdout.isatty()
    line = Line(tty)
    interval = args.interval.total_seconds()
    started = time.monotonic()
    throughput = Throughput()
    connected = False  # once: a connection lost later is made again
    try:
        while True:
            try:
                with database.connect(args) as conn:
                    connected = True
                    return follow(conn, args.run_id, interval, line, started, throughput)
            except CommandError as exc:
                if not (connected and isinstance(exc.__cause__, psycopg.OperationalError)):
                    raise
                line.show([f"run {args.run_id}: {exc}; connecting again"])
            time.sleep(interval)
    except KeyboardInterrupt:
        line.end()
        return INTERRUPTED
    finally:
        line.end()


def follow(
    conn: psycopg.Connection[Any],
    run_id: int,
    interval: float,
    line: Line,
    started: float,
    throughput: Throughput,
) -> int:
    while True:
        try:
            found = campaigns.campaign_progress(conn, run_id)
            if not found:
                raise CommandError(f"no campaign run {run_id} in {config.where(conn)}")
            [stats] = campaigns.campaign_stats(conn, run_id)
        except NotInstalled as exc:
            raise database.missing(conn, WHAT) from exc
        [run] = found
        now = time.monotonic()
        throughput.add(now, done(run))
        over = run.pending + run.processing == 0 or run.ended
        line.show(status_line(run, stats, None if over else throughput.per_second(stats)))
        if over:
            line.end()
            print(summary(run, now - started), flush=True)
            return 0
        time.sleep(interval)


def status_line(run: CampaignProgress, stats: CampaignStats, per_second: float | None) -> list[str]:
    """The parts of the status line, the most useful first."""
    through = done(run)
    filled = BAR_WIDTH * through // run.total if run.total else 0
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    # the status only when it is not the usual one: the line fits 80 columns with its ETA
    # and throughput
    status = "" if run.status == "running" else f" {run.status}"
    parts = [f"run {run.run_id}{status} [{bar}] {progress(through, run.total)}"]
    if per_second is not None:
        left = run.pending + run.processing
        eta = duration(left / per_second) if per_second > 0 else "-"
        parts.append(f"ETA {eta}" if run.status == "running" else f"ETA - ({run.status})")
    parts += [
        f"{count(stats.sent_last_minute)} msgs/min",
        f"sent {count(run.sent)} failed {count(run.failed)} skipped {count(run.skipped)}",
        f"retries {count(stats.retries)} snoozes {count(stats.snoozes)}",
    ]
    if stats.handler_p50_ms is not None:
        parts.append(f"p50 {number(stats.handler_p50_ms)} ms p95 {number(stats.handler_p95_ms)} ms")
    return parts


def summary(run: CampaignProgress, watched: float) -> str:
    if run.status == "cancelled":
        state = "was cancelled"
    elif run.status == "finished":
        state = "was marked finished"
    else:
        state = "is done"
    left = run.pending + run.processing
    rest = f", {count(left)} left" if left else ""
    return (
        f"run {run.run_id} {run.name!r} {state}: {count(run.sent)} sent, "
        f"{count(run.failed)} failed, {count(run.skipped)} skipped of {count(run.total)} "
        f"({percent(done(run), run.total)}){rest}; watched for {duration(watched)}"
    )


SEPARATOR = "  "


class Line:
    """The status line: redrawn in place on a terminal, with the parts that fit its width
    (the first one cut to it, should even that be too wide), else printed whole once per
    look."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.open = False  # a line drawn in place, not yet ended

    def show(self, parts: list[str]) -> None:
        if not self.tty:
            print(SEPARATOR.join(parts), flush=True)
            return
        width = shutil.get_terminal_size().columns - 1
        text = parts[0][:width]
        for part in parts[1:]:
            if len(text) + len(SEPARATOR) + len(part) > width:
                break
            text += SEPARATOR + part
        sys.stdout.write(f"\r{text}\x1b[K")
        sys.stdout.flush()
        self.open = True

    def end(self) -> None:
        """End the line drawn in place, if any, so what follows starts on a line of its own."""
        if self.open:
            self.open = False
            sys.stdout.write("\n")
            sys.stdout.flush()


COMMAND = Command(
    "watch",
    "follow a campaign run live: progress bar, throughput, ETA, until it is done",
    add_arguments,
    run,
    description="Follow campaign run RUN_ID until nothing of it is pending or processing, "
    "or it is cancelled or marked finished: its progress (sent, failed and skipped of its "
    "total), its messages by state, msgs/min (sent in the last minute), retries, snoozes, "
    "the handler's p50/p95, and the time left at the throughput of the last minute. On a "
    "terminal the line is redrawn in place, otherwise printed every --interval. Ends with "
    "a summary line (exit status 0); an unknown run is an error (1); Ctrl-C stops (130).",
)
