"""How values read in the commands' output: tables, times, counts, rates, durations and
a run's progress."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from tabulate import tabulate


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    """Rows under their headers, every cell as given (no number parsing)."""
    return str(tabulate(list(rows), headers=list(headers), disable_numparse=True))


def time(value: datetime | None) -> str:
    """A timestamp to the millisecond, or nothing."""
    return "" if value is None else value.isoformat(sep=" ", timespec="milliseconds")


def count(value: int) -> str:
    """A count with thousands separated: 1,234,567."""
    return f"{value:,}"


def number(value: float | None) -> str:
    """A measured quantity to one decimal place (1,234.5), or nothing."""
    return "" if value is None else f"{value:,.1f}"


def percent(part: int, whole: int) -> str:
    """61.7%; 100.0% only when the part is the whole (never rounded up to it)."""
    if whole <= 0:
        return "-"
    share = 100 * part / whole
    if part < whole:
        share = min(share, 99.9)
    return f"{share:.1f}%"


def progress(done: int, total: int) -> str:
    """1,234/2,000 61.7%."""
    return f"{count(done)}/{count(total)} {percent(done, total)}"


def duration(seconds: float) -> str:
    """A duration to the second, in its two largest units: 45s, 2m27s, 1h02m, 3d04h."""
    whole = max(round(seconds), 0)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
