"""Medians, ratios and targets of a lease-lock bench, written as Markdown and JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from tabulate import tabulate

if TYPE_CHECKING:
    from .database import ScratchDatabase

PLAIN = "plain"
FUNCTIONS = "functions"
DRIVERS = ("driver-threads", "driver-async")

TARGET_CLIENTS = 16
TARGET_FUNCTIONS = 0.9  # (a)/(c)
XACTS_PER_PAIR = 2.0
XACTS_TOLERANCE = 0.05  # monitoring, autovacuum and statement preparation add a few


@dataclass(frozen=True, slots=True)
class Run:
    variant: str
    clients: int
    round: int
    pairs_per_second: float
    pairs: int  # pairs completed in the run (warm-up included for the driver)
    transactions: int  # pg_stat_database.xact_commit delta over the run
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def transactions_per_pair(self) -> float:
        return self.transactions / self.pairs if self.pairs else float("nan")


@dataclass(frozen=True, slots=True)
class Row:
    clients: int
    plain: float
    functions: float
    driver: float
    driver_variant: str
    transactions_per_pair: dict[str, float]

    @property
    def functions_ratio(self) -> float:
        return self.functions / self.plain

    @property
    def driver_ratio(self) -> float:
        return self.driver / self.plain


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    wanted: str
    measured: str
    met: bool | None  # None: not measured in this run


def integers(text: str) -> list[int]:
    """A comma-separated list of integers (an option's value: "1,8")."""
    return [int(part) for part in text.split(",")]


def summarise(runs: list[Run]) -> list[Row]:
    """One row per connection count: the median of each variant over the rounds; (b) is
    the better of the driver variants that ran."""
    rows = []
    for clients in sorted({run.clients for run in runs}):
        mine = [run for run in runs if run.clients == clients]
        medians = {
            variant: statistics.median(r.pairs_per_second for r in mine if r.variant == variant)
            for variant in sorted({r.variant for r in mine})
        }
        driver_variant = max((v for v in medians if v in DRIVERS), key=medians.__getitem__)
        per_pair = {}
        for variant in medians:
            of_variant = [r for r in mine if r.variant == variant]
            pairs = sum(r.pairs for r in of_variant)
            per_pair[variant] = sum(r.transactions for r in of_variant) / pairs
        rows.append(
            Row(
                clients=clients,
                plain=medians[PLAIN],
                functions=medians[FUNCTIONS],
                driver=medians[driver_variant],
                driver_variant=driver_variant,
                transactions_per_pair=per_pair,
            )
        )
    return rows


def targets(rows: list[Row], round_trips_per_pair: float) -> list[Target]:
    at = next((row for row in rows if row.clients == TARGET_CLIENTS), None)
    found = [
        Target(
            f"(a)/(c) at {TARGET_CLIENTS} clients",
            f">= {TARGET_FUNCTIONS}",
            "not measured" if at is None else f"{at.functions_ratio:.2f}",
            None if at is None else at.functions_ratio >= TARGET_FUNCTIONS,
        ),
        Target(
            "round trips per pair, driver (libpq trace)",
            "2 (one per call)",
            f"{round_trips_per_pair:.2f}",
            round_trips_per_pair == XACTS_PER_PAIR,
        ),
    ]
    worst = max(
        (v for row in rows for v in row.transactions_per_pair.values()),
        key=lambda v: abs(v - XACTS_PER_PAIR),
    )
    found.append(
        Target(
            "transactions per pair, every variant (xact_commit delta)",
            f"{XACTS_PER_PAIR} ± {XACTS_TOLERANCE}",
            f"{worst:.3f} (furthest from 2)",
            abs(worst - XACTS_PER_PAIR) <= XACTS_TOLERANCE,
        )
    )
    return found


def verdict(target: Target) -> str:
    return {True: "met", False: "NOT MET", None: "not measured"}[target.met]


def summary_table(rows: list[Row], fmt: str) -> str:
    return tabulate(
        [
            [
                row.clients,
                f"{row.plain:,.0f}",
                f"{row.functions:,.0f}",
                f"{row.driver:,.0f} ({row.driver_variant.removeprefix('driver-')})",
                f"{row.functions_ratio:.2f}",
                f"{row.driver_ratio:.2f}",
            ]
            for row in rows
        ],
        headers=["clients", "plain SQL (c)", "functions (a)", "driver (b)", "a/c", "b/c"],
        tablefmt=fmt,
        disable_numparse=True,
        colalign=("right",) * 6,
    )


def targets_table(found: list[Target], fmt: str) -> str:
    return tabulate(
        [[t.name, t.wanted, t.measured, verdict(t)] for t in found],
        headers=["target", "wanted", "measured", "result"],
        tablefmt=fmt,
        disable_numparse=True,
    )


def markdown(result: dict[str, Any], rows: list[Row], runs: list[Run], found: list[Target]) -> str:
    settings = result["settings"]
    machine = result["machine"]
    server = result["server"]
    profile = result.get("profile") or {}
    drivers = settings["drivers"]
    driver_note = (
        "threads with `pgcoord.locks` and asyncio tasks with `pgcoord.locks_async` both ran; "
        "(b) is the better of the two at each connection count, named in brackets"
        if len(drivers) > 1
        else f"{drivers[0]} only"
    )
    lines = [
        "# Lease locks: acquire + release pairs per second",
        "",
        f"Written by `scripts/bench locks` on {result['date']}. Median of {settings['rounds']} "
        f"round{'' if settings['rounds'] == 1 else 's'} of {settings['seconds']} s per "
        "variant and connection count, the variants "
        "interleaved (c, a, b, c, a, b, ...) so that drift on a shared machine hits all of "
        "them alike. Absolute figures move by a third from run to run; the ratios to the "
        "ceiling (c), measured in the same run, are the result.",
        "",
        "- (c) plain SQL: pgbench running the equivalent plain `INSERT ... ON CONFLICT` and "
        "`DELETE` on `pgcoord.locks` (bench/pgbench/plain.sql): the ceiling.",
        "- (a) functions: pgbench calling `pgcoord.lock_acquire` and `pgcoord.lock_release` "
        "(bench/pgbench/functions.sql).",
        "- (b) driver: `lock_acquire` / `lock_release` from one Python process, one "
        f"connection per client ({driver_note}).",
        "",
        "All of them: autocommit, each statement its own transaction, random keys out of "
        "1,000,000, one owner per connection, prepared statements.",
        "",
        "b/c has no target: it weighs Python against C. What the driver itself costs, "
        "client CPU per call beside bare psycopg sending the same statement, is measured by "
        "`scripts/bench overhead`.",
        "",
        summary_table(rows, "github"),
        "",
        "## Targets",
        "",
        targets_table(found, "github"),
        "",
        "Transactions per pair (pg_stat_database.xact_commit delta over pairs, all rounds):",
        "",
        tabulate(
            [
                [
                    row.clients,
                    *(
                        f"{row.transactions_per_pair.get(v, float('nan')):.3f}"
                        for v in variants(runs)
                    ),
                ]
                for row in rows
            ],
            headers=["clients", *variants(runs)],
            tablefmt="github",
            disable_numparse=True,
            colalign=("right",) * (1 + len(variants(runs))),
        ),
        "",
    ]
    lines += [
        "CPU time per pair, µs (median): the server's processes (read from /proc, when the "
        "server runs on this machine"
        + ("" if server["kind"] == "embedded" else "; includes any other sessions on it")
        + ") and the client program (pgbench for (c) and (a), the Python process for (b)). "
        "Where client and server share the cores, what the client spends is taken from the "
        "server; and when the cores are saturated, pairs/s is about cores / (server + "
        "client CPU per pair):",
        "",
        cpu_table(runs, "github"),
        "",
        *python_load(runs),
    ]
    lines += profile_section(profile)
    lines += [
        "## Every run",
        "",
        runs_table(runs, "github"),
        "",
        "## Setup",
        "",
        *setup_lines(result),
        f"- machine: {machine['cores']} cores ({machine['cpu']}), shared by pgbench or Python "
        "and the server",
        f"- rounds {settings['rounds']}, {settings['seconds']} s per run, driver warm-up "
        f"{settings['warmup']} s, clients {', '.join(str(c) for c in settings['clients'])}",
        f"- command: `{result['command']}`",
        "",
    ]
    return "\n".join(lines)


def python_load(runs: list[Run]) -> list[str]:
    """How busy the Python process was at the largest connection count: one core is all
    that threads holding the GIL can use."""
    top = max(run.clients for run in runs)
    found = []
    for variant in DRIVERS:
        values = [r.detail["python_cpu"] for r in runs if r.clients == top and r.variant == variant]
        if values:
            found.append(f"{variant.removeprefix('driver-')} {statistics.median(values):.2f}")
    if not found:
        return []
    return [
        f"CPU of the Python process at {top} clients, in cores (median): "
        + ", ".join(found)
        + ". Near 1.0 it would be bound by the GIL (one core at a time).",
        "",
    ]


def cpu_table(runs: list[Run], fmt: str) -> str:
    """Median CPU time per pair of the server and of the client program."""
    names = variants(runs)
    table = []
    for clients in sorted({run.clients for run in runs}):
        cells: list[Any] = [clients]
        for variant in names:
            mine = [r for r in runs if r.clients == clients and r.variant == variant]
            for side in ("server_cpu_us_per_pair", "client_cpu_us_per_pair"):
                values = [r.detail[side] for r in mine if side in r.detail]
                cells.append(f"{statistics.median(values):.0f}" if values else "-")
        table.append(cells)
    headers = ["clients"]
    for variant in names:
        headers += [f"{variant} server", f"{variant} client"]
    return tabulate(
        table,
        headers=headers,
        tablefmt=fmt,
        disable_numparse=True,
        colalign=("right",) * len(headers),
    )


def variants(runs: list[Run]) -> list[str]:
    order = [PLAIN, FUNCTIONS, *DRIVERS]
    present = {run.variant for run in runs}
    return [v for v in order if v in present]


def runs_table(runs: list[Run], fmt: str) -> str:
    return tabulate(
        [
            [
                run.round,
                run.clients,
                run.variant,
                f"{run.pairs_per_second:,.0f}",
                run.pairs,
                f"{run.transactions_per_pair:.3f}",
                format_us(run.detail.get("server_cpu_us_per_pair")),
                format_us(run.detail.get("client_cpu_us_per_pair")),
            ]
            for run in runs
        ],
        headers=[
            "round",
            "clients",
            "variant",
            "pairs/s",
            "pairs",
            "xacts/pair",
            "server CPU µs/pair",
            "client CPU µs/pair",
        ],
        tablefmt=fmt,
        disable_numparse=True,
        colalign=("right", "right", "left", "right", "right", "right", "right", "right"),
    )


def format_us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def profile_section(profile: dict[str, Any] | None) -> list[str]:
    """The Markdown section of the one-client, per-statement profile (none without one)."""
    if not profile:
        return []
    return [
        "## Where the time goes: one client, per statement",
        "",
        "pgbench `--report-per-command` at 1 connection, average latency of each "
        "statement in ms; once as configured and once with `synchronous_commit = off` "
        "(no wait for the WAL flush, so what is left is the work of the statement).",
        "",
        profile_table(profile, "github"),
        "",
    ]


def environment(db: ScratchDatabase, bench: str, command: str, kind: str) -> dict[str, Any]:
    """What a results file records of its run: when, how it was started, the server and
    its settings, the Python side and the machine."""
    return {
        "bench": bench,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "server": {"kind": kind, "settings": db.settings()},
        "python": platform.python_version(),
        "psycopg": f"{psycopg.__version__} ({psycopg.pq.__impl__})",
        "machine": {"cores": os.cpu_count(), "cpu": cpu_model()},
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def setup_lines(result: dict[str, Any]) -> list[str]:
    """The server, its settings and the programs, for a results file's Setup section."""
    server = result["server"]
    settings = server["settings"]
    programs = f"Python {result['python']}, psycopg {result['psycopg']}"
    if "pgbench" in result:
        programs = f"{result['pgbench']}; {programs}"
    return [
        f"- server: {server['kind']}, PostgreSQL {settings.get('server_version', '?')}",
        "- settings: "
        + ", ".join(f"{k} = {v}" for k, v in settings.items() if k != "server_version"),
        f"- {programs}",
    ]


def print_outcome(summary: str, found: list[Target], md: Path, js: Path, root: Path) -> None:
    """The end of a bench's console output: its summary, the targets, what was written."""
    print()
    print(summary)
    print()
    print(targets_table(found, "simple"))
    missed = [t.name for t in found if t.met is False]
    print()
    if missed:
        print("TARGETS MISSED: " + "; ".join(missed))
    else:
        print("all measured targets met")
    print(f"written: {md.relative_to(root) if md.is_relative_to(root) else md}, {js.name}")


def write_files(stem: Path, markdown_text: str, document: dict[str, Any]) -> tuple[Path, Path]:
    """Write <stem>.md and <stem>.json and return their paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    md, js = stem.with_suffix(".md"), stem.with_suffix(".json")
    md.write_text(markdown_text)
    js.write_text(json.dumps(document, indent=2) + "\n")
    return md, js


def profile_table(profile: dict[str, Any], fmt: str) -> str:
    table = []
    for label, by_variant in profile.items():
        for variant, statements in by_variant.items():
            for statement, ms in statements:
                if not statement.startswith("\\"):  # leave out \set
                    table.append([label, variant, f"{ms:.3f}", statement])
    return tabulate(
        table,
        headers=["commit", "variant", "ms", "statement"],
        tablefmt=fmt,
        disable_numparse=True,
        colalign=("left", "left", "right", "left"),
    )


def write(
    stem: Path, result: dict[str, Any], rows: list[Row], runs: list[Run], found: list[Target]
) -> tuple[Path, Path]:
    """Write <stem>.md and <stem>.json and return their paths."""
    document = {
        **result,
        "summary": [
            {
                "clients": row.clients,
                "plain": row.plain,
                "functions": row.functions,
                "driver": row.driver,
                "driver_variant": row.driver_variant,
                "functions_ratio": row.functions_ratio,
                "driver_ratio": row.driver_ratio,
                "transactions_per_pair": row.transactions_per_pair,
            }
            for row in rows
        ],
        "targets": [asdict(t) for t in found],
        "runs": [
            {**asdict(run), "transactions_per_pair": run.transactions_per_pair} for run in runs
        ],
    }
    return write_files(stem, markdown(result, rows, runs, found), document)


RESULTS = Path(__file__).resolve().parent / "results"


def add_output(parser: argparse.ArgumentParser, name: str) -> None:
    """The --output option of every bench: where it writes <output>.md and .json."""
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS / name,
        help=f"path of the results without suffix (bench/results/{name})",
    )
