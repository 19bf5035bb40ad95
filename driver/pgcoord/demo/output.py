"""How the demo speaks: the story and the checks as they happen (✓/✗, or ok/FAIL in
ascii mode or when the terminal cannot print them), the summary, a few number formats.
A reader that goes away (scripts/demo | head) stops the demo quietly, as it does every
pgcoord command (pgcoord.cli.main.guarded)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .checks import Check


class Report:
    """Prints the story and the checks as they happen, and keeps the checks."""

    def __init__(self, out: TextIO, ascii_only: bool = False) -> None:
        self.out = out
        self.checks: list[Check] = []
        self.good, self.bad = ("ok", "FAIL") if ascii_only else _marks(out)

    def heading(self, text: str) -> None:
        print(f"\n{text}", file=self.out)

    def line(self, text: str) -> None:
        print(f"   {text}", file=self.out)

    def add(self, check: Check) -> bool:
        self.checks.append(check)
        mark = self.good if check.held else self.bad
        detail = f"  ({check.detail})" if check.detail and not check.held else ""
        print(f"   {mark} {check.label}{detail}", file=self.out, flush=True)
        return check.held

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.held]


def _marks(out: TextIO) -> tuple[str, str]:
    try:
        "✓✗".encode(getattr(out, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "ok", "FAIL"
    return "✓", "✗"


def summary(checks: Sequence[Check], seconds: float) -> str:
    failed = [c for c in checks if not c.held]
    if not checks:
        return "no checks ran"
    if not failed:
        return f"{len(checks)} checks, all held ({seconds:.1f} s)"
    names = "".join(f"\n   - {c.label}" for c in failed)
    return f"{len(failed)} of {len(checks)} checks FAILED ({seconds:.1f} s):{names}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def spread(seconds: Sequence[float]) -> str:
    """median, p95 and max of some durations, in milliseconds."""
    if not seconds:
        return "none"
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"median {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"max {ordered[-1] * 1000:.0f} ms"
    )
