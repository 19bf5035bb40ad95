"""Medians, ratios and the target of the driver-overhead bench, written as Markdown and
JSON."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from .report import Target, setup_lines, targets_table, write_files

TARGET_RATIO = 1.15  # driver / bare, client CPU per call
PROFILE_ROWS = 10  # functions shown per call, by what the driver adds

WHAT = {
    "lock_acquire": (
        "`pgcoord.locks.lock_acquire(conn, key, owner, ttl)`, a `Lock`",
        "`conn.execute(pgcoord.sql.LOCK_ACQUIRE, {key, owner, ttl, wait}).fetchone()`",
    ),
    "lock_release": (
        "`pgcoord.locks.lock_release(conn, key, owner)`, a `bool`",
        "`conn.execute(pgcoord.sql.LOCK_RELEASE, {key, owner}).fetchone()`",
    ),
    "message_ingest": (
        "`pgcoord.inbox.message_ingest(conn, provider, id, conversation_key, body, "
        "payload, debounce=, max_wait=)`, an `Ingested`",
        "`conn.execute(pgcoord.sql.MESSAGE_INGEST, {..., payload: Jsonb(payload), "
        "...}).fetchone()`",
    ),
    "campaign_complete_many": (
        "`pgcoord.campaigns.campaign_complete_many(conn, ids, tokens, metrics)`, an `int` "
        "(15 messages, each with a no-op handler's metrics, as a campaign worker completes "
        "them; the ids and tokens sent as the text of a bigint[], `pgcoord.arrays`)",
        "`conn.execute(pgcoord.sql.CAMPAIGN_COMPLETE_MANY, {message_ids: ids, "
        "claim_tokens: tokens, metrics: Jsonb(metrics)}).fetchone()`, the ids and tokens "
        "as Python lists (psycopg's list dumper), the JSON written without spaces as the "
        "driver writes it",
    ),
}


@dataclass(slots=True)
class Samples:
    """Client CPU and wall time of every call of one side, ns."""

    cpu: list[int] = field(default_factory=list)
    wall: list[int] = field(default_factory=list)


def median_us(values: list[int]) -> float:
    return statistics.median(values) / 1000


@dataclass(frozen=True, slots=True)
class Round:
    round: int
    call: str
    first: str  # the side that went first in each alternation
    calls: int  # per side
    driver_cpu_us: float  # median per call
    bare_cpu_us: float
    driver_cpu_mean_us: float
    bare_cpu_mean_us: float
    driver_wall_us: float  # median per call
    bare_wall_us: float
    same_work: bool  # each side: acquires granted, releases freed, ingests new, messages sent
    server_work: dict[str, dict[str, int]]

    @property
    def ratio(self) -> float:
        return self.driver_cpu_us / self.bare_cpu_us

    @classmethod
    def of(
        cls,
        round_no: int,
        call: str,
        first: str,
        samples: dict[str, Samples],
        same_work: bool,
        server_work: dict[str, dict[str, int]],
    ) -> Round:
        driver, bare = samples["driver"], samples["bare"]
        return cls(
            round=round_no,
            call=call,
            first=first,
            calls=len(driver.cpu),
            driver_cpu_us=median_us(driver.cpu),
            bare_cpu_us=median_us(bare.cpu),
            driver_cpu_mean_us=statistics.fmean(driver.cpu) / 1000,
            bare_cpu_mean_us=statistics.fmean(bare.cpu) / 1000,
            driver_wall_us=median_us(driver.wall),
            bare_wall_us=median_us(bare.wall),
            same_work=same_work,
            server_work=server_work,
        )


@dataclass(frozen=True, slots=True)
class Row:
    call: str
    driver_cpu_us: float  # median over every call of every round
    bare_cpu_us: float
    lowest_round_ratio: float
    highest_round_ratio: float
    driver_wall_us: float
    bare_wall_us: float

    @property
    def ratio(self) -> float:
        return self.driver_cpu_us / self.bare_cpu_us

    @property
    def extra_us(self) -> float:
        return self.driver_cpu_us - self.bare_cpu_us


def summarise(rounds: list[Round], pooled: dict[str, dict[str, Samples]]) -> list[Row]:
    """One row per call: the medians over every call of every round, and the spread of
    the rounds' ratios."""
    rows = []
    for call, by_side in pooled.items():
        ratios = [r.ratio for r in rounds if r.call == call]
        rows.append(
            Row(
                call=call,
                driver_cpu_us=median_us(by_side["driver"].cpu),
                bare_cpu_us=median_us(by_side["bare"].cpu),
                lowest_round_ratio=min(ratios),
                highest_round_ratio=max(ratios),
                driver_wall_us=median_us(by_side["driver"].wall),
                bare_wall_us=median_us(by_side["bare"].wall),
            )
        )
    return rows


def targets(rows: list[Row], rounds: list[Round], protocol: dict[str, Any]) -> list[Target]:
    found = [
        Target(
            f"{row.call}: driver / bare, client CPU per call",
            f"<= {TARGET_RATIO}",
            f"{row.ratio:.3f}",
            row.ratio <= TARGET_RATIO,
        )
        for row in rows
    ]
    differ = [call for call, check in protocol.items() if not check["same_messages"]]
    found.append(
        Target(
            "messages sent per call, driver and bare (libpq trace, key masked)",
            "identical",
            "identical" if not differ else "differ: " + ", ".join(differ),
            not differ,
        )
    )
    trips = sorted({n for check in protocol.values() for n in check["round_trips"].values()})
    found.append(
        Target(
            "round trips per call, each side (libpq trace)",
            "1",
            ", ".join(str(n) for n in trips),
            trips == [1],
        )
    )
    unlike = sorted({r.round for r in rounds if not r.same_work})
    found.append(
        Target(
            "same server work, each side and round",
            "every acquire granted, every release freed, every ingest stored, "
            "every completion's 15 messages sent",
            "yes" if not unlike else "no, rounds " + ", ".join(map(str, unlike)),
            not unlike,
        )
    )
    return found


def summary_table(rows: list[Row], fmt: str) -> str:
    return tabulate(
        [
            [
                row.call,
                f"{row.driver_cpu_us:.1f}",
                f"{row.bare_cpu_us:.1f}",
                f"{row.extra_us:+.1f}",
                f"{row.ratio:.2f}",
                f"{row.lowest_round_ratio:.2f} to {row.highest_round_ratio:.2f}",
                f"{row.driver_wall_us:.0f}",
                f"{row.bare_wall_us:.0f}",
            ]
            for row in rows
        ],
        headers=[
            "call",
            "driver CPU µs",
            "bare CPU µs",
            "extra µs",
            "driver/bare",
            "rounds' ratios",
            "driver wall µs",
            "bare wall µs",
        ],
        tablefmt=fmt,
        disable_numparse=True,
        colalign=("left", *("right",) * 7),
    )


def profile_rows(entries: list[list[Any]]) -> list[list[Any]]:
    """The functions that add most to the driver's side, then the rest and the total:
    [function, calls driver, calls bare, self µs driver, self µs bare, difference]."""
    table = sorted(
        ([name, dc, bc, ds, bs, ds - bs] for name, dc, ds, bc, bs in entries),
        key=lambda row: row[5],
        reverse=True,
    )
    shown, rest = table[:PROFILE_ROWS], table[PROFILE_ROWS:]

    def total(label: str, rows: list[list[Any]]) -> list[Any]:
        sums = [sum(row[i] for row in rows) for i in range(1, 6)]
        return [label, *sums]

    return [*shown, total("everything else", rest), total("total", table)]


def profile_section(profile: dict[str, list[list[Any]]] | None) -> list[str]:
    if not profile:
        return []
    lines = [
        "## Where the driver's extra CPU goes",
        "",
        "cProfile on a CPU clock (`time.process_time_ns`), one pass of each side of each "
        "call. Per function, its calls and its self CPU per call of the bench, µs; the "
        f"{PROFILE_ROWS} functions that add most on the driver's side, then the rest. "
        "The profiler reads the clock at every function entry and exit, so small "
        "functions look dearer than they are: read this table for where the time goes, "
        "the first for how much. Bare psycopg's own call (`conn.execute`) and the bench's "
        "wrapper of each side are in it too; `<string>:2(__init__)` is a dataclass's "
        "generated `__init__`.",
        "",
    ]
    for call, entries in profile.items():
        lines += [
            f"### {call}",
            "",
            tabulate(
                [
                    [
                        f"`{name}`",
                        f"{dc:.0f} / {bc:.0f}",
                        f"{ds:.2f}",
                        f"{bs:.2f}",
                        f"{diff:+.2f}",
                    ]
                    for name, dc, bc, ds, bs, diff in profile_rows(entries)
                ],
                headers=["function", "calls driver / bare", "driver µs", "bare µs", "difference"],
                tablefmt="github",
                disable_numparse=True,
                colalign=("left", "right", "right", "right", "right"),
            ),
            "",
        ]
    return lines


def rounds_table(rounds: list[Round], fmt: str) -> str:
    return tabulate(
        [
            [
                r.round,
                r.call,
                r.first,
                f"{r.driver_cpu_us:.1f}",
                f"{r.bare_cpu_us:.1f}",
                f"{r.ratio:.3f}",
                f"{r.driver_cpu_mean_us:.1f}",
                f"{r.bare_cpu_mean_us:.1f}",
                f"{r.driver_wall_us:.0f}",
                f"{r.bare_wall_us:.0f}",
                "yes" if r.same_work else "NO",
            ]
            for r in rounds
        ],
        headers=[
            "round",
            "call",
            "first",
            "driver CPU µs",
            "bare CPU µs",
            "ratio",
            "driver mean",
            "bare mean",
            "driver wall µs",
            "bare wall µs",
            "same work",
        ],
        tablefmt=fmt,
        disable_numparse=True,
        colalign=("right", "left", "left", *("right",) * 7, "left"),
    )


def markdown(
    result: dict[str, Any], rows: list[Row], rounds: list[Round], found: list[Target]
) -> str:
    settings = result["settings"]
    machine = result["machine"]
    options = ", ".join(f"{k}={v}" for k, v in result["connection_options"].items())
    lines = [
        "# Driver overhead: client CPU per call, the driver beside bare psycopg",
        "",
        f"Written by `scripts/bench overhead` on {result['date']}. One process, one "
        f"connection with the clients' options ({options}: each call its own transaction, "
        "nothing prepared on the server). "
        + (
            f"An uncounted warm-up round of {settings['warmup_calls']:,} calls per side, then "
            if settings["warmup_calls"]
            else ""
        )
        + f"{settings['rounds']} round{'' if settings['rounds'] == 1 else 's'} of "
        f"{settings['calls']:,} calls per side and call. Within a round the two sides "
        "alternate call by call (bare first in odd rounds, the driver first in even ones), "
        "so that drift on a shared machine hits both alike. Every call is timed with "
        "`time.process_time_ns()`: the CPU of this process, user and system, libpq's "
        "included; the wait for the server costs none. The figures are medians over every "
        "call of every round; the rounds' ratios show their spread. Wall time per call "
        "(median, server included) is there for context.",
        "",
        "Both sides send the same statement (the text in `pgcoord.sql`) with the same "
        "parameters, on distinct keys of the same length, so the server does the same "
        "work for each: every acquire takes a free key, every release frees a key its "
        "side holds, every ingest stores a new message in a conversation of its own "
        "(debounce 10 s: no NOTIFY), every completion completes 15 campaign messages its "
        "side claimed before the round (the same bytes on the wire: the ids travel as the "
        "same text either way, and the trace masks their types).",
        "",
        f"CPU placement: {result['placement']}. Where client and server share a core, "
        "the server's work between two calls evicts the client's code and data from that "
        "core's caches; every call then costs the client more, and the driver, which "
        "touches more, more than bare psycopg (`--placement shared` shows it). Split, "
        "as with a server on another machine, the figures are the client's own.",
        "",
        *(f"- {call}: driver {driver}; bare {bare}" for call, (driver, bare) in WHAT.items()),
        "- bare psycopg returns the row as a tuple (psycopg's default row factory); the "
        "driver returns its typed result.",
        "",
        summary_table(rows, "github"),
        "",
        "## Targets",
        "",
        targets_table(found, "github"),
        "",
    ]
    lines += profile_section(result.get("profile"))
    lines += [
        "## Every round",
        "",
        "Medians and means of client CPU per call, µs, and median wall time per call; "
        "`first` is the side that went first in each alternation.",
        "",
        rounds_table(rounds, "github"),
        "",
        "## Setup",
        "",
        *setup_lines(result),
        f"- machine: {machine['cores']} cores ({machine['cpu']}), shared by Python and the server",
        f"- rounds {settings['rounds']}, {settings['calls']:,} calls per side and call, "
        f"warm-up {settings['warmup_calls']:,} calls; reading the CPU clock costs "
        f"{settings['clock_read_ns']:.0f} ns, counted in every call of both sides alike",
        f"- command: `{result['command']}`",
        "",
    ]
    return "\n".join(lines)


def write(
    stem: Path, result: dict[str, Any], rows: list[Row], rounds: list[Round], found: list[Target]
) -> tuple[Path, Path]:
    """Write <stem>.md and <stem>.json and return their paths."""
    document = {
        **result,
        "summary": [{**asdict(row), "ratio": row.ratio, "extra_us": row.extra_us} for row in rows],
        "targets": [asdict(t) for t in found],
        "rounds": [{**asdict(r), "ratio": r.ratio} for r in rounds],
    }
    return write_files(stem, markdown(result, rows, rounds, found), document)
