"""Medians and checks of the pickup bench, written as Markdown and JSON."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from .report import Target, setup_lines, targets_table, write_files

NOW = "now"
SCHEDULED = "scheduled"
NAMES = {"pgcoord": "campaign worker", "pgqueuer": "PgQueuer", "procrastinate": "Procrastinate"}


@dataclass(frozen=True, slots=True)
class Sample:
    system: str
    round: int
    mode: str  # NOW or SCHEDULED
    seconds: float | None  # from its due time until seen done; None: not within the timeout
    early: bool  # seen done before its due time


@dataclass(frozen=True, slots=True)
class Row:
    system: str
    now: list[float]  # ms, the messages due now that were sent
    scheduled: list[float]  # ms past the due time, the scheduled ones that were sent
    missed: int  # not sent within the timeout
    early: int  # sent before they were due


def summarise(samples: list[Sample]) -> list[Row]:
    rows = []
    for system in dict.fromkeys(s.system for s in samples):
        mine = [s for s in samples if s.system == system]
        rows.append(
            Row(
                system,
                [1000 * s.seconds for s in mine if s.mode == NOW and s.seconds is not None],
                [1000 * s.seconds for s in mine if s.mode == SCHEDULED and s.seconds is not None],
                sum(s.seconds is None for s in mine),
                sum(s.early for s in mine),
            )
        )
    return rows


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def checks(rows: list[Row], delay: float) -> list[Target]:
    early = sum(r.early for r in rows)
    missed = {r.system: r.missed for r in rows if r.missed}
    pgcoord = next((r for r in rows if r.system == "pgcoord"), None)
    late = max(pgcoord.scheduled, default=None) if pgcoord else None
    return [
        Target(
            f"no message sent before it was due (scheduled {delay:g} s ahead)",
            "none",
            f"{early} early",
            early == 0,
        ),
        Target(
            "every message sent within the bench's timeouts (10 s; 40 s past the due time)",
            "every one",
            ", ".join(f"{NAMES[s]}: {n} not" for s, n in missed.items()) or "every one",
            not missed,
        ),
        Target(
            f"the campaign worker sends a message scheduled {delay:g} s ahead within a second "
            "of its due time (an idle worker is woken and sleeps until it is due)",
            "<= 1,000 ms late",
            "not measured" if late is None else f"at most {late:,.1f} ms late",
            None if late is None else late <= 1000,
        ),
    ]


def summary_table(rows: list[Row], fmt: str) -> str:
    return tabulate(
        [
            [
                NAMES[r.system],
                len(r.now),
                ms(median(r.now)),
                ms(quantile(r.now, 0.95)),
                len(r.scheduled),
                ms(median(r.scheduled)),
                ms(max(r.scheduled, default=None)),
                r.missed,
                r.early,
            ]
            for r in rows
        ],
        headers=[
            "worker",
            "due now",
            "ms median",
            "ms p95",
            "scheduled",
            "ms late median",
            "ms late max",
            "not sent in time",
            "early",
        ],
        tablefmt=fmt,
        disable_numparse=True,
        colalign=("left",) + ("right",) * 8,
    )


def progress_line(system: str, round_no: int, rounds: int, samples: list[Sample]) -> str:
    row = summarise(samples)[0] if samples else Row(system, [], [], 0, 0)
    now = ms(median(row.now))
    late = ms(median(row.scheduled))
    return (
        f"round {round_no}/{rounds}  {system:<14} due now {now:>9} ms (median)"
        f"  scheduled {late:>9} ms late (median)  not sent {row.missed}  early {row.early}"
    )


def markdown(
    result: dict[str, Any], rows: list[Row], samples: list[Sample], found: list[Target]
) -> str:
    s = result["settings"]
    peers = result["peers"]
    lines = [
        "# Pickup: how soon an idle fleet sends a message once it is due",
        "",
        f"Written by `{result['command']}` on {result['date']}. {s['workers']} worker "
        "processes of each system wait on an empty queue, each with its defaults and "
        "LISTEN/NOTIFY on, started as the campaign bench starts them "
        "(bench/queue_worker.py: a no-op handler). One message at a time is enqueued "
        f"through the system's own API after a pause drawn from 20-200 ms: {s['samples']} "
        f"due now, then {s['scheduled']} due {s['delay']:g} s later, per round; "
        f"{s['rounds']} rounds, the systems in turn (reversed in even rounds), each "
        "round on a fresh fleet whose first two messages are not counted.",
        "",
        "- due now: from the enqueue call's return (committed) until the message is seen "
        f"done, looking every {s['poll_ms']:g} ms: the campaign worker's `campaign_outcomes`, "
        "PgQueuer's queue table emptied, Procrastinate's job `succeeded`;",
        f"- scheduled: from the instant it was due ({s['delay']:g} s after the enqueue "
        "call began) until seen done. The campaign worker is notified by an enqueue due "
        "within 5 s and sleeps until the message is due (`campaign_due_in`); a worker "
        "that is not woken sends it when it next looks on its own (Procrastinate every "
        "`fetch_job_polling_interval`, 5 s by default).",
        "",
        summary_table(rows, "github"),
        "",
        "## Checks",
        "",
        targets_table(found, "github"),
        "",
        "## Peers",
        "",
    ]
    for name, peer in peers.items():
        if peer["status"] == "ran":
            state = f"ran ({peer['version']})"
        else:
            state = f"not run ({peer['status']}): {peer['reason']}"
        lines.append(f"- {NAMES[name]}: {state}")
    lines += ["", "## Setup", "", *setup_lines(result), ""]
    return "\n".join(lines)


def write(
    stem: Path, result: dict[str, Any], rows: list[Row], samples: list[Sample], found: list[Target]
) -> tuple[Path, Path]:
    document = {
        **result,
        "summary": [
            {
                "system": r.system,
                "now_ms": {
                    "count": len(r.now),
                    "median": median(r.now),
                    "p95": quantile(r.now, 0.95),
                },
                "scheduled_late_ms": {
                    "count": len(r.scheduled),
                    "median": median(r.scheduled),
                    "max": max(r.scheduled, default=None),
                },
                "missed": r.missed,
                "early": r.early,
            }
            for r in rows
        ],
        "checks": [asdict(t) for t in found],
        "samples": [asdict(s) for s in samples],
    }
    return write_files(stem, markdown(result, rows, samples, found), document)
