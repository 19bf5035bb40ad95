"""Medians, ratios and checks of the rate-limit bench, written as Markdown and JSON."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from .report import Target, format_us, setup_lines, targets_table, write_files

PLAIN = "plain"
FUNCTIONS = "functions"
GRANTS = "grants"
REFUSALS = "refusals"
MODES = (GRANTS, REFUSALS)
# per mode: the rate and burst of every call; the bucket starts full
BUDGETS = {GRANTS: (1_000_000, 1_000_000), REFUSALS: (1, 1)}
TITLE = {
    GRANTS: "grants (1,000,000/s, burst 1,000,000)",
    REFUSALS: "refusals (1/s, burst 1)",
}
GRANTED_AT_LEAST = 0.999  # of the calls, in the grants mode
GRANTED_AT_MOST = 0.01  # in the refusals mode
XACTS_TOLERANCE = 0.05


@dataclass(frozen=True, slots=True)
class Run:
    mode: str
    kind: str  # plain or functions
    clients: int
    round: int
    per_second: float  # calls
    calls: int
    granted: int  # rows written: each grant writes the bucket
    transactions: int  # pg_stat_database.xact_commit delta over the run
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def granted_share(self) -> float:
        return self.granted / self.calls if self.calls else float("nan")

    @property
    def transactions_per_call(self) -> float:
        return self.transactions / self.calls if self.calls else float("nan")


@dataclass(frozen=True, slots=True)
class Row:
    mode: str
    clients: int
    plain: float
    functions: float
    granted: dict[str, float]  # share of the calls granted, by kind, all rounds

    @property
    def ratio(self) -> float:
        return self.functions / self.plain


def summarise(runs: list[Run]) -> list[Row]:
    rows = []
    for mode in MODES:
        mine = [run for run in runs if run.mode == mode]
        if not mine:
            continue
        medians, granted = {}, {}
        for kind in (PLAIN, FUNCTIONS):
            of_kind = [run for run in mine if run.kind == kind]
            medians[kind] = statistics.median(run.per_second for run in of_kind)
            granted[kind] = sum(r.granted for r in of_kind) / max(sum(r.calls for r in of_kind), 1)
        rows.append(Row(mode, mine[0].clients, medians[PLAIN], medians[FUNCTIONS], granted))
    return rows


def targets(rows: list[Row], runs: list[Run]) -> list[Target]:
    """No figure is a target here (the ratios are reported): these check that each mode
    did what it says, and one transaction per call."""
    found = []
    for row in rows:
        lowest = min(row.granted.values())
        highest = max(row.granted.values())
        if row.mode == GRANTS:
            found.append(
                Target(
                    "granted calls, grants mode, both kinds",
                    f">= {GRANTED_AT_LEAST:.1%}",
                    f"{lowest:.2%}",
                    lowest >= GRANTED_AT_LEAST,
                )
            )
        else:
            found.append(
                Target(
                    "granted calls, refusals mode, both kinds",
                    f"<= {GRANTED_AT_MOST:.0%}",
                    f"{highest:.3%}",
                    highest <= GRANTED_AT_MOST,
                )
            )
    worst = max((r.transactions_per_call for r in runs), key=lambda v: abs(v - 1))
    found.append(
        Target(
            "transactions per call, every run (xact_commit delta)",
            f"1 ± {XACTS_TOLERANCE}",
            f"{worst:.3f} (furthest from 1)",
            abs(worst - 1) <= XACTS_TOLERANCE,
        )
    )
    return found


def summary_table(rows: list[Row], fmt: str) -> str:
    return tabulate(
        [
            [
                TITLE[row.mode],
                row.clients,
                f"{row.plain:,.0f}",
                f"{row.functions:,.0f}",
                f"{row.ratio:.2f}",
                f"{row.granted[PLAIN]:.1%} / {row.granted[FUNCTIONS]:.1%}",
            ]
            for row in rows
        ],
        headers=[
            "calls on one hot key",
            "clients",
            "plain UPDATE (c)",
            "rate_acquire (a)",
            "a/c",
            "granted c / a",
        ],
        tablefmt=fmt,
        disable_numparse=True,
        colalign=("left", "right", "right", "right", "right", "right"),
    )


def markdown(result: dict[str, Any], rows: list[Row], runs: list[Run], found: list[Target]) -> str:
    settings = result["settings"]
    machine = result["machine"]
    server = result["server"]
    lines = [
        "# Shared rate limits: rate_acquire calls per second on one hot key",
        "",
        f"Written by `scripts/bench rates` on {result['date']}. Median of "
        f"{settings['rounds']} round{'' if settings['rounds'] == 1 else 's'} of "
        f"{settings['seconds']} s per variant, the variants interleaved (the plain UPDATE "
        "first in odd rounds, the function first in even ones); every run starts from a "
        "full bucket. Absolute figures move by a third from run to run; the ratios to the "
        "ceiling (c), measured in the same run, are the result.",
        "",
        f"- {settings['clients']} pgbench connections, every call on the same key, one "
        "statement and one transaction per call, prepared statements.",
        "- (a) `pgcoord.rate_acquire(p_key => 'hot', p_per_second, p_burst)` "
        "(bench/pgbench/rate_functions.sql): a grant updates the key's row, a refusal "
        "reads it without a lock and writes nothing.",
        "- (c) the same token bucket as one plain `UPDATE` of a one-row table "
        "(bench/pgbench/rate_plain.sql): it updates the row when the refilled tokens "
        "cover the call, and otherwise matches nothing (no write, no lock); it does not "
        "say how long to wait, nor handle pauses or a key's first call.",
        "- grants: a budget of 1,000,000 a second (burst 1,000,000), so every call is "
        "granted and every call writes the one row: the calls queue on its row lock, "
        "each holding it until its commit is flushed. refusals: one grant a second "
        "(burst 1), so nearly every call is refused and reads only.",
        "",
        "The issue sets no figure for these; the ratios are reported. Granted calls are "
        "counted as the rows written (pg_stat_user_tables).",
        "",
        summary_table(rows, "github"),
        "",
        "## Checks",
        "",
        targets_table(found, "github"),
        "",
        "CPU time per call, µs (median): the server's processes (read from /proc, when "
        "the server runs on this machine"
        + ("" if server["kind"] == "embedded" else "; includes any other sessions on it")
        + ") and pgbench:",
        "",
        cpu_table(runs, "github"),
        "",
        "## Every run",
        "",
        runs_table(runs, "github"),
        "",
        "## Setup",
        "",
        *setup_lines(result),
        f"- machine: {machine['cores']} cores ({machine['cpu']}), shared by pgbench and the server",
        f"- rounds {settings['rounds']}, {settings['seconds']} s per run, "
        f"{settings['clients']} connections",
        f"- command: `{result['command']}`",
        "",
    ]
    return "\n".join(lines)


def cpu_table(runs: list[Run], fmt: str) -> str:
    table = []
    for mode in MODES:
        cells: list[Any] = [mode]
        for kind in (PLAIN, FUNCTIONS):
            mine = [r for r in runs if r.mode == mode and r.kind == kind]
            for side in ("server_cpu_us_per_call", "client_cpu_us_per_call"):
                values = [r.detail[side] for r in mine if side in r.detail]
                cells.append(f"{statistics.median(values):.0f}" if values else "-")
        table.append(cells)
    return tabulate(
        table,
        headers=["mode", "plain server", "plain client", "function server", "function client"],
        tablefmt=fmt,
        disable_numparse=True,
        colalign=("left", "right", "right", "right", "right"),
    )


def runs_table(runs: list[Run], fmt: str) -> str:
    return tabulate(
        [
            [
                run.round,
                run.mode,
                run.kind,
                f"{run.per_second:,.0f}",
                run.calls,
                f"{run.granted_share:.2%}",
                f"{run.transactions_per_call:.3f}",
                f"{run.detail['latency_ms']:.2f}",
                format_us(run.detail.get("server_cpu_us_per_call")),
                format_us(run.detail.get("client_cpu_us_per_call")),
            ]
            for run in runs
        ],
        headers=[
            "round",
            "mode",
            "variant",
            "calls/s",
            "calls",
            "granted",
            "xacts/call",
            "latency ms",
            "server CPU µs/call",
            "client CPU µs/call",
        ],
        tablefmt=fmt,
        disable_numparse=True,
        colalign=("right", "left", "left") + ("right",) * 7,
    )


def write(
    stem: Path, result: dict[str, Any], rows: list[Row], runs: list[Run], found: list[Target]
) -> tuple[Path, Path]:
    document = {
        **result,
        "summary": [
            {
                "mode": row.mode,
                "clients": row.clients,
                "plain": row.plain,
                "functions": row.functions,
                "ratio": row.ratio,
                "granted": row.granted,
            }
            for row in rows
        ],
        "targets": [asdict(t) for t in found],
        "runs": [
            {
                **asdict(run),
                "granted_share": run.granted_share,
                "transactions_per_call": run.transactions_per_call,
            }
            for run in runs
        ],
    }
    return write_files(stem, markdown(result, rows, runs, found), document)
