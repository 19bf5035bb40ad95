"""How the commands take their options: a parser whose errors are one line, and option
types that refuse a value outside the range of the SQL argument it becomes, before
anything is sent: NaN, infinities, negatives, values over the maximum, text that is not
a number. A refused value is a usage error (exit status 2) naming the option:

    pgcoord work: error: argument --lease: must be a number of seconds from 0.001 to
    86400 (1 day), got 'inf'

The ranges are those of the SQL functions (their COMMENTs, API.md "Edge cases"); a
command taking another SQL argument adds its range here, next to these. A file that a
command writes (`output_file`) is checked the same way, before the command starts, not
when it is written at the end of the run.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, NoReturn, TypeVar

from .errors import USAGE, shown

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

N = TypeVar("N", int, float)

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR
YEAR = 360 * DAY  # as PostgreSQL compares intervals: '100 years' = '36000 days'
SHORTEST = 0.001  # seconds: the shortest duration an option accepts where zero is refused


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, `PROG: error: MESSAGE`, with exit
    status 2 (argparse would print the usage above it; `PROG --help` shows that)."""

    def print_help(self, file: SupportsWrite[str] | None = None) -> None:
        """As argparse's, but a reader that went away is not ignored: BrokenPipeError
        reaches the command's guard, which stops quietly (exit status 1)."""
        (file or sys.stdout).write(self.format_help())

    def error(self, message: str) -> NoReturn:
        line = message.replace("\r", "\\r").replace("\n", "\\n")
        self.exit(USAGE, f"{self.prog}: error: {line}\n")


class CommandsFormatter(argparse.HelpFormatter):
    """argparse's help layout, counting the indentation of the commands listed under a
    subparsers action in the width of the names column (Python 3.11 leaves it out, and
    the help of the longest command name wraps onto a line of its own)."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        subactions = getattr(action, "_get_subactions", None)
        if action.help is argparse.SUPPRESS or subactions is None:
            return
        names = [len(self._format_action_invocation(sub)) for sub in subactions()]
        if names:
            width = max(names) + self._current_indent + self._indent_increment
            self._action_max_length = max(self._action_max_length, width)


@dataclass(frozen=True, slots=True)
class Seconds:
    """A duration given as a number of seconds, from `least` to `most`: a timedelta."""

    least: float
    most: float

    def __call__(self, text: str) -> timedelta:
        unit = f"number of seconds from {{}} to {{}} ({_duration(self.most)})"
        return timedelta(seconds=_checked(float, text, self.least, self.most, unit))


@dataclass(frozen=True, slots=True)
class Integer:
    """A whole number from `least` to `most`."""

    least: int
    most: int

    def __call__(self, text: str) -> int:
        return _checked(int, text, self.least, self.most, "whole number from {} to {}")


@dataclass(frozen=True, slots=True)
class PerSecond:
    """A rate: a number of events per second from `least` to `most`."""

    least: float
    most: float

    def __call__(self, text: str) -> float:
        return _checked(float, text, self.least, self.most, "number per second from {} to {}")


@dataclass(frozen=True, slots=True)
class Text:
    """A text of `least` to `most` bytes (UTF-8)."""

    least: int
    most: int

    def __call__(self, text: str) -> str:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:  # bytes the locale could not decode
            raise argparse.ArgumentTypeError(
                f"must be UTF-8 text, got bytes that are not: {shown(text)}"
            ) from None
        if not self.least <= size <= self.most:
            raise argparse.ArgumentTypeError(
                f"must be a text of {self.least} to {self.most} bytes, "
                f"got {size} bytes: {shown(text)}"
            )
        return text


# buffer_claim, buffer_extend (and the campaign claims): p_lease
LEASE = Seconds(SHORTEST, DAY)
# buffer_fail: p_retry_in (and p_retry_after, the snooze's p_delay)
RETRY_IN = Seconds(0, 30 * DAY)
# buffer_claim, campaign_claim: p_limit
CLAIM_LIMIT = Integer(1, 10_000)
# keys, owners, workers, names, recipients, conversation keys
NAME = Text(1, 1024)
# a campaign run's id (bigint): campaign_claim, campaign_stats... p_run_id
RUN_ID = Integer(1, 2**63 - 1)
# rate_acquire: p_per_second (any positive number: the command's least is one event in
# 1000 seconds) and p_burst
RATE = PerSecond(0.001, 1_000_000)
BURST = Integer(1, 1_000_000)
# campaign_skip_stale: p_older_than
OLDER_THAN = Seconds(0, 100 * YEAR)
# campaign_prune: p_older_than
PRUNE_ENDED = Seconds(SHORTEST, 100 * YEAR)
# lock_acquire: p_ttl, the period of the campaign worker's stale-message check (0, its
# "never", is never sent)
SKIP_STALE_EVERY = Seconds(0, DAY)
# durations of the worker process itself, not sent to the server: a handler's timeout,
# the grace on SIGTERM
WORKER_TIMEOUT = Seconds(SHORTEST, DAY)
WORKER_GRACE = Seconds(0, DAY)
# how often pgcoord watch looks again
WATCH_INTERVAL = Seconds(0.1, HOUR)


def output_file(text: str) -> str:
    """A file the command will write (metavar FILE): a path that is not a folder, in a
    folder that exists, where the command may write."""
    folder = os.path.dirname(text) or os.curdir
    if not text:
        problem = "must be a file path"
    elif os.path.isdir(text):
        problem = "must be a file, not a folder"
    elif not os.path.isdir(folder):
        problem = "must be a file in an existing folder"
    elif not os.access(text if os.path.exists(text) else folder, os.W_OK):
        problem = "must be a file you can write"
    else:
        return text
    raise argparse.ArgumentTypeError(f"{problem}, got {shown(text)}")


def seconds(value: timedelta) -> str:
    """A duration as the options take it, for the defaults in --help: 60, 0.5."""
    return _number(value.total_seconds())


def _checked(kind: Callable[[str], N], text: str, least: N, most: N, what: str) -> N:
    """`text` read as `kind`, from `least` to `most`; else ArgumentTypeError saying it
    must be "a " + `what` with the bounds in its two {}."""
    value = _within(kind, text, least, most)
    if value is None:
        bounds = what.format(_number(least), _number(most))
        raise argparse.ArgumentTypeError(f"must be a {bounds}, got {shown(text)}")
    return value


def _within(kind: Callable[[str], N], text: str, least: N, most: N) -> N | None:
    """`text` read as `kind` when it is from `least` to `most` (NaN never is), else None."""
    try:
        value = kind(text)
    except ValueError:
        return None
    return value if least <= value <= most else None


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def _duration(value: float) -> str:
    """The maximum of a range in words: 1 day, 30 days, 1 hour."""
    for unit, name in ((YEAR, "year"), (DAY, "day"), (HOUR, "hour"), (MINUTE, "minute")):
        if value >= unit and value % unit == 0:
            count = int(value // unit)
            return f"{count} {name}{'' if count == 1 else 's'}"
    return f"{_number(value)} s"
