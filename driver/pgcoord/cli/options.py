"""How the commands take their options: a parser whose errors are one line, and option
types that refuse a value outside the range of the SQL argument it becomes, before
anything is sent: NaN, infinities, negatives, values over the maximum, text that is not
a number. A refused value is a usage error (exit status 2) naming the option:

    pgcoord work: error: argument --lease: must be a number of seconds from 0.001 to
    86400 (1 day), got 'inf'

The ranges are those of the SQL functions (their COMMENTs, API.md "Edge cases"); a
command taking another SQL argument adds its range here, next to these.
"""

from __future__ import annotations

import argparse
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


@dataclass(frozen=True, slots=True)
class Seconds:
    """A duration given as a number of seconds, from `least` to `most`: a timedelta."""

    least: float
    most: float

    def __call__(self, text: str) -> timedelta:
        value = _within(float, text, self.least, self.most)
        if value is None:
            raise argparse.ArgumentTypeError(
                f"must be a number of seconds from {_number(self.least)} to "
                f"{_number(self.most)} ({_duration(self.most)}), got {shown(text)}"
            )
        return timedelta(seconds=value)


@dataclass(frozen=True, slots=True)
class Integer:
    """A whole number from `least` to `most`."""

    least: int
    most: int

    def __call__(self, text: str) -> int:
        value = _within(int, text, self.least, self.most)
        if value is None:
            raise argparse.ArgumentTypeError(
                f"must be a whole number from {self.least} to {self.most}, got {shown(text)}"
            )
        return value


@dataclass(frozen=True, slots=True)
class Text:
    """A text of `least` to `most` bytes (UTF-8)."""

    least: int
    most: int

    def __call__(self, text: str) -> str:
        size = len(text.encode("utf-8", "surrogateescape"))
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
# buffer_claim: p_limit
CLAIM_LIMIT = Integer(1, 10_000)
# keys, owners, workers, names, recipients
NAME = Text(1, 1024)
# durations of the worker process itself, not sent to the server: a handler's timeout,
# the grace on SIGTERM
WORKER_TIMEOUT = Seconds(SHORTEST, DAY)
WORKER_GRACE = Seconds(0, DAY)


def seconds(value: timedelta) -> str:
    """A duration as the options take it, for the defaults in --help: 60, 0.5."""
    return _number(value.total_seconds())


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
    for unit, name in ((DAY, "day"), (HOUR, "hour"), (MINUTE, "minute")):
        if value >= unit and value % unit == 0:
            count = int(value // unit)
            return f"{count} {name}{'' if count == 1 else 's'}"
    return f"{_number(value)} s"
