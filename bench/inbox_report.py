"""Medians, ratios and targets of the inbox bench, written as Markdown and JSON."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from .report import Target, format_us, profile_section, setup_lines, targets_table, write_files

INGEST = "ingest"
CLAIM = "claim"
WORKLOADS = (INGEST, CLAIM)
UNIT = {INGEST: "call", CLAIM: "pair"}
UNITS = {INGEST: "calls", CLAIM: "pairs"}
TITLE = {
    INGEST: "ingest calls/s, 30% repeats",
    CLAIM: "claim + complete pairs/s, 1-message bursts",
}

TARGET_INGEST_CLIENTS = 16
TARGET_INGEST_RATIO = 0.7  # (a)/(c)
ROUND_TRIPS_PER_INGEST = 1.0
ROUND_TRIPS_PER_PAIR = 2.0  # one per claim, one per complete
XACTS_PER_OP = {INGEST: 1.0, CLAIM: 2.0}
XACTS_TOLERANCE = 0.05  # monitoring, autovacuum and statement preparation add a few
REPEAT_SHARE = 0.30
REPEAT_TOLERANCE = 0.03


@dataclass(frozen=True, slots=True)
class Run:
    variant: str  # <workload>-plain or <workload>-functions
    workload: str
    clients: int
    round: int  # 0: the warm-up
    per_second: float  # ingest calls, or claim + complete pairs, per second
    ops: int  # calls or pairs completed in the run
    transactions: int  # pg_stat_database.xact_commit delta over the run
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def transactions_per_op(self) -> float:
        return self.transactions / self.ops if self.ops else float("nan")

    @property
    def kind(self) -> str:
        return self.variant.removeprefix(self.workload + "-")


@dataclass(frozen=True, slots=True)
class Row:
    workload: str
    clients: int
    plain: float
    functions: float
    transactions_per_op: dict[str, float]  # by kind, over all rounds

    @property
    def ratio(self) -> float:
        return self.functions / self.plain


def summarise(runs: list[Run]) -> list[Row]:
    """One row per workload: the median of each variant over the rounds."""
    rows = []
    for workload in WORKLOADS:
        mine = [run for run in runs if run.workload == workload]
        if not mine:
            continue
        medians, per_op = {}, {}
        for kind in ("plain", "functions"):
            of_kind = [run for run in mine if run.kind == kind]
            medians[kind] = statistics.median(run.per_second for run in of_kind)
            ops = sum(run.ops for run in of_kind)
            per_op[kind] = sum(run.transactions for run in of_kind) / ops if ops else float("nan")
        rows.append(Row(workload, mine[0].clients, medians["plain"], medians["functions"], per_op))
    return rows


def targets(rows: list[Row], runs: list[Run], round_trips: dict[str, float]) -> list[Target]:
    """The issue's targets, then the checks that the figures mean what they say."""
    ingest = next(row for row in rows if row.workload == INGEST)
    at_target = ingest.clients == TARGET_INGEST_CLIENTS
    found = [
        Target(
            f"ingest (a)/(c) at {TARGET_INGEST_CLIENTS} clients",
            f">= {TARGET_INGEST_RATIO}",
            f"{ingest.ratio:.2f}"
            if at_target
            else f"not measured ({ingest.ratio:.2f} at {ingest.clients})",
            ingest.ratio >= TARGET_INGEST_RATIO if at_target else None,
        ),
        Target(
            "round trips per ingest, driver (libpq trace)",
            "1",
            f"{round_trips['ingest_new']:.2f} new, {round_trips['ingest_repeat']:.2f} repeat",
            round_trips["ingest_new"] == round_trips["ingest_repeat"] == ROUND_TRIPS_PER_INGEST,
        ),
        Target(
            "round trips per claim + complete pair, driver",
            "2 (one per call)",
            f"{round_trips['claim_complete_pair']:.2f}",
            round_trips["claim_complete_pair"] == ROUND_TRIPS_PER_PAIR,
        ),
    ]
    deviations = [
        (row.workload, value, abs(value - XACTS_PER_OP[row.workload]))
        for row in rows
        for value in row.transactions_per_op.values()
    ]
    workload, worst, off = max(deviations, key=lambda d: d[2])
    found.append(
        Target(
            "transactions per call / pair, every variant (xact_commit delta)",
            f"1 / 2 ± {XACTS_TOLERANCE}",
            f"{worst:.3f} per {UNIT[workload]} (furthest off)",
            off <= XACTS_TOLERANCE,
        )
    )
    shares = [run.detail["repeat_share"] for run in runs if run.workload == INGEST]
    found.append(
        Target(
            "repeats among ingest calls, every run",
            f"{REPEAT_SHARE:.0%} ± {REPEAT_TOLERANCE * 100:.0f} points",
            f"{min(shares):.1%} to {max(shares):.1%}",
            all(abs(share - REPEAT_SHARE) <= REPEAT_TOLERANCE for share in shares),
        )
    )
    empty = sum(run.detail["empty_claims"] for run in runs if run.workload == CLAIM)
    found.append(
        Target(
            "empty claims (the backlog ran dry), all runs",
            "0",
            str(empty),
            empty == 0,
        )
    )
    inconsistent = sum(1 for run in runs if not run.detail["consistent"])
    found.append(
        Target(
            "buffers match their messages after every run",
            "every run",
            f"{len(runs) - inconsistent} of {len(runs)} runs",
            inconsistent == 0,
        )
    )
    return found


def summary_table(rows: list[Row], fmt: str) -> str:
    return tabulate(
        [
            [
                TITLE[row.workload],
                row.clients,
                f"{row.plain:,.0f}",
                f"{row.functions:,.0f}",
                f"{row.ratio:.2f}",
            ]
            for row in rows
        ],
        headers=["workload", "clients", "plain SQL (c)", "functions (a)", "a/c"],
        tablefmt=fmt,
        disable_numparse=True,
        colalign=("left", "right", "right", "right", "right"),
    )


def markdown(result: dict[str, Any], rows: list[Row], runs: list[Run], found: list[Target]) -> str:
    settings = result["settings"]
    machine = result["machine"]
    server = result["server"]
    profile = result.get("profile") or {}
    trips = result["round_trips"]
    lines = [
        "# Inbox: ingest calls and claim + complete pairs per second",
        "",
        f"Written by `scripts/bench inbox` on {result['date']}. Median of "
        f"{settings['rounds']} round{'' if settings['rounds'] == 1 else 's'} of "
        f"{settings['seconds']} s per variant, "
        + (
            f"after an uncounted warm-up run of each ({settings['warmup']} s). "
            if settings["warmup"]
            else "without a warm-up. "
        )
        + "The variants are interleaved (plain SQL first in odd "
        "rounds, the functions first in even ones) so that drift on a shared machine hits "
        "all of them alike; every run starts from the same freshly stored, vacuumed state. "
        "Absolute figures move by a third from run to run; the ratios to the ceiling (c), "
        "measured in the same run, are the result.",
        "",
        f"- ingest, {settings['ingest_clients']} connections: 30% of the calls repeat one "
        f"of {settings['stored_messages']:,} messages stored before the run (true "
        "duplicates: same conversation and body), the rest are new messages spread over "
        f"{settings['conversations']:,} conversations; default debounce (10 s), so no "
        "call sends a NOTIFY. (a) `pgcoord.message_ingest` in named notation "
        "(bench/pgbench/ingest_functions.sql); (c) one plain statement doing the same on "
        "the same tables: `INSERT ... ON CONFLICT DO NOTHING RETURNING` into "
        "`pgcoord.messages`, the buffer upsert with the same flush arithmetic, the "
        "stored row for a repeat (bench/pgbench/ingest_plain.sql).",
        f"- claim + complete, {settings['claim_workers']} workers: each claims one due "
        "conversation (limit 1) and completes it, from a backlog of due 1-message buffers "
        f"stored before the run ({settings['backlog_margin']} times what the run is "
        "expected to take). (a) `pgcoord.buffer_claim` then `pgcoord.buffer_complete` "
        "(bench/pgbench/claim_functions.sql); (c) one plain statement for each: `FOR "
        "UPDATE SKIP LOCKED LIMIT 1` on the due index, messages marked claimed, claim "
        "columns set; then the buffer row dropped and the messages marked done "
        "(bench/pgbench/claim_plain.sql).",
        "",
        "All of them: pgbench, autocommit, each statement its own transaction, prepared "
        "statements. The claim ratio has no target; it is reported.",
        "",
        summary_table(rows, "github"),
        "",
        "## Targets",
        "",
        targets_table(found, "github"),
        "",
        f"Round trips through the driver (`pgcoord.inbox` on one connection with "
        f"`config.CONNECTION_OPTIONS`, counted as ReadyForQuery messages in libpq's trace "
        f"after a warm-up): {trips['ingest_new']:.2f} per ingest of a new message, "
        f"{trips['ingest_repeat']:.2f} per repeated ingest, "
        f"{trips['claim_complete_pair']:.2f} per claim + complete pair.",
        "",
        "Transactions per call or pair (pg_stat_database.xact_commit delta, all rounds): "
        + "; ".join(
            f"{row.workload} plain {row.transactions_per_op['plain']:.3f}, functions "
            f"{row.transactions_per_op['functions']:.3f}"
            for row in rows
        )
        + ".",
        "",
        "CPU time per call or pair, µs (median): the server's processes (read from /proc, "
        "when the server runs on this machine"
        + ("" if server["kind"] == "embedded" else "; includes any other sessions on it")
        + ") and pgbench. Client and server share the cores, so when they are saturated "
        "the rate is about cores / (server + client CPU per call or pair):",
        "",
        cpu_table(runs, "github"),
        "",
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
        f"- machine: {machine['cores']} cores ({machine['cpu']}), shared by pgbench and the server",
        f"- rounds {settings['rounds']}, {settings['seconds']} s per run, warm-up "
        f"{settings['warmup']} s per variant",
        f"- command: `{result['command']}`",
        "",
    ]
    return "\n".join(lines)


def cpu_table(runs: list[Run], fmt: str) -> str:
    """Median CPU time per call or pair of the server and of pgbench."""
    table = []
    for workload in WORKLOADS:
        cells: list[Any] = [UNIT[workload]]
        for kind in ("plain", "functions"):
            mine = [r for r in runs if r.workload == workload and r.kind == kind]
            for side in ("server_cpu_us_per_op", "client_cpu_us_per_op"):
                values = [r.detail[side] for r in mine if side in r.detail]
                cells.append(f"{statistics.median(values):.0f}" if values else "-")
        table.append(cells)
    headers = ["per", "plain server", "plain client", "functions server", "functions client"]
    return tabulate(
        table,
        headers=headers,
        tablefmt=fmt,
        disable_numparse=True,
        colalign=("left", "right", "right", "right", "right"),
    )


def runs_table(runs: list[Run], fmt: str) -> str:
    return tabulate(
        [
            [
                run.round,
                run.clients,
                run.variant,
                f"{run.per_second:,.0f}",
                run.ops,
                f"{run.transactions_per_op:.3f}",
                _checks(run),
                format_us(run.detail.get("server_cpu_us_per_op")),
                format_us(run.detail.get("client_cpu_us_per_op")),
            ]
            for run in runs
        ],
        headers=[
            "round",
            "clients",
            "variant",
            "per s",
            "calls / pairs",
            "xacts each",
            "repeats / empty claims",
            "server CPU µs each",
            "client CPU µs each",
        ],
        tablefmt=fmt,
        disable_numparse=True,
        colalign=("right", "right", "left", "right", "right", "right", "right", "right", "right"),
    )


def _checks(run: Run) -> str:
    if run.workload == INGEST:
        return f"{run.detail['repeat_share']:.1%}"
    return str(run.detail["empty_claims"])


def write(
    stem: Path, result: dict[str, Any], rows: list[Row], runs: list[Run], found: list[Target]
) -> tuple[Path, Path]:
    """Write <stem>.md and <stem>.json and return their paths."""
    document = {
        **result,
        "summary": [
            {
                "workload": row.workload,
                "unit": UNITS[row.workload],
                "clients": row.clients,
                "plain": row.plain,
                "functions": row.functions,
                "ratio": row.ratio,
                "transactions_per_op": row.transactions_per_op,
            }
            for row in rows
        ],
        "targets": [asdict(t) for t in found],
        "runs": [{**asdict(run), "transactions_per_op": run.transactions_per_op} for run in runs],
    }
    return write_files(stem, markdown(result, rows, runs, found), document)
