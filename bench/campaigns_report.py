"""Medians, ratios and targets of the campaign queue bench, written as Markdown and JSON."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from . import held_back
from .report import Target, format_us, setup_lines, targets_table, write_files

PLAIN = "plain"  # pgbench, plain SQL on a simple message table: the ceiling
# the same, unprepared: as the driver (and any client safe behind a transaction-mode
# pooler) sends every statement
UNPREPARED = "plain-unprepared"
FUNCTIONS = "functions"  # pgbench through pgcoord's SQL functions, no worker
PSYCOPG = "psycopg"  # the ceiling's plain SQL through psycopg processes: Python's ceiling
PGCOORD = "pgcoord"  # CampaignWorker processes, batch 15
TUNED = "pgcoord-tuned"  # the same, their batch tuned like PgQueuer's
PGQUEUER = "pgqueuer"
PROCRASTINATE = "procrastinate"
VARIANTS = (PLAIN, UNPREPARED, FUNCTIONS, PSYCOPG, PGCOORD, TUNED, PGQUEUER, PROCRASTINATE)
FLEETS = (PSYCOPG, PGCOORD, TUNED, PGQUEUER, PROCRASTINATE)  # worker processes
LABEL = {
    PLAIN: "plain SQL (c)",
    UNPREPARED: "plain SQL (c, unprepared)",
    FUNCTIONS: "functions",
    PSYCOPG: "plain SQL (psycopg)",
    PGCOORD: "campaign worker",
    TUNED: "campaign worker, batch tuned",
    PGQUEUER: "PgQueuer",
    PROCRASTINATE: "Procrastinate",
}

TARGET_WORKERS = 8
TARGET_CEILING = 0.6  # campaign worker / plain SQL (prepared, unprepared, through psycopg)
TARGET_PGQUEUER = 1.7  # campaign worker / PgQueuer (its batch tuned)
TARGET_PROCRASTINATE = 40.0  # campaign worker / Procrastinate
TARGET_ENQUEUE = 50_000  # messages/s, 100,000 in one call
TARGET_TRANSACTIONS = 0.25  # per message
TARGET_FLUSHES = 0.12
TARGET_WAL_BYTES = 1024  # 1 kB
TARGET_CLIENT_CPU_US = 100.0
TARGET_SIZE_GROWTH = 3.0
VACUUM_DOC = "docs/vacuum.md"  # the autovacuum settings for a busy campaign queue


@dataclass(frozen=True, slots=True)
class Run:
    variant: str
    workers: int
    round: int  # 0: a batch tried before the rounds
    per_second: float  # messages processed per second in the window
    messages: int  # messages processed in the window (pgbench: in the run)
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CostRun:
    """One drain of a backlog by the campaign workers (messages 0: their start and stop
    alone)."""

    messages: int
    seconds: float  # from the resume to the last message sent
    transactions: int  # the database's commits from before the start to after the exit
    flushes: int  # WAL flushes of the server over the same span
    wal_bytes: int  # WAL written from the resume to the last message sent
    client_cpu: float  # the workers' CPU seconds over the same span
    server_cpu: float | None  # the server's, when it runs on this machine
    bench_statements: int  # the bench's own statements, left out of transactions

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds if self.seconds else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "per_second": self.per_second}


@dataclass(frozen=True, slots=True)
class Costs:
    """Per message: the median over the drains, less the fleet's start and stop alone."""

    transactions: float
    flushes: float
    wal_bytes: float
    client_cpu_us: float
    server_cpu_us: float | None
    per_second: float
    drains: int


@dataclass(frozen=True, slots=True)
class Row:
    workers: int
    medians: dict[str, float]  # messages/s by variant

    def ratio(self, variant: str, to: str) -> float | None:
        if variant not in self.medians or to not in self.medians or not self.medians[to]:
            return None
        return self.medians[variant] / self.medians[to]


def summarise(runs: list[Run]) -> list[Row]:
    """One row per worker count: the median of each variant over the rounds."""
    rows = []
    for workers in sorted({run.workers for run in runs if run.round > 0}):
        mine = [run for run in runs if run.workers == workers and run.round > 0]
        medians = {
            variant: statistics.median(r.per_second for r in mine if r.variant == variant)
            for variant in VARIANTS
            if any(r.variant == variant for r in mine)
        }
        rows.append(Row(workers, medians))
    return rows


def costs(result: dict[str, Any]) -> Costs | None:
    drains = [CostRun(**_fields(c)) for c in result.get("costs", []) if c["messages"] > 0]
    alone = [CostRun(**_fields(c)) for c in result.get("costs", []) if c["messages"] == 0]
    if not drains:
        return None
    # the fleet's own transactions are known from its start and stop alone; its WAL
    # flushes there are a handful, and on a server shared with other sessions theirs
    # would swamp the difference, so flushes are not corrected
    base_xacts = alone[0].transactions if alone else 0

    def median(values: list[float]) -> float:
        return float(statistics.median(values))

    server = [c.server_cpu / c.messages for c in drains if c.server_cpu is not None]
    return Costs(
        transactions=median([(c.transactions - base_xacts) / c.messages for c in drains]),
        flushes=median([c.flushes / c.messages for c in drains]),
        wal_bytes=median([c.wal_bytes / c.messages for c in drains]),
        client_cpu_us=median([1e6 * c.client_cpu / c.messages for c in drains]),
        server_cpu_us=1e6 * median(server) if server else None,
        per_second=median([c.per_second for c in drains]),
        drains=len(drains),
    )


def _fields(found: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in found.items() if k != "per_second"}


def _ratio_target(
    row: Row | None,
    variant: str,
    wanted: float,
    peers: dict[str, dict[str, Any]],
    of: str = PGCOORD,
    name: str | None = None,
) -> Target:
    name = name or f"{LABEL[of]} / {LABEL[variant]} at {TARGET_WORKERS} workers"
    if variant in peers and peers[variant]["status"] != "ran":
        reason = peers[variant].get("reason", peers[variant]["status"])
        return Target(name, f">= {wanted:g}", f"not measured: {reason}", None)
    ratio = None if row is None else row.ratio(of, variant)
    if row is None or ratio is None:
        return Target(name, f">= {wanted:g}", "not measured", None)
    measured = f"{ratio:.2f} ({row.medians[of]:,.0f} / {row.medians[variant]:,.0f})"
    return Target(name, f">= {wanted:g}", measured, ratio >= wanted)


def targets(rows: list[Row], runs: list[Run], result: dict[str, Any]) -> list[Target]:
    """The issue's targets, then the check that every window had work to do."""
    peers = result["peers"]
    at = next((row for row in rows if row.workers == TARGET_WORKERS), None)
    found = [
        _ratio_target(at, PLAIN, TARGET_CEILING, peers),
        _ratio_target(
            at,
            UNPREPARED,
            TARGET_CEILING,
            peers,
            name=f"{LABEL[PGCOORD]} / the same plain SQL sent unprepared, as the driver "
            f"sends every statement, at {TARGET_WORKERS} workers",
        ),
        _ratio_target(
            at,
            PSYCOPG,
            TARGET_CEILING,
            peers,
            name=f"{LABEL[PGCOORD]} / the same plain SQL through psycopg, the ceiling of a "
            f"Python client, at {TARGET_WORKERS} workers",
        ),
        _ratio_target(at, PGQUEUER, TARGET_PGQUEUER, peers),
        tuned_target(at, result),
        _ratio_target(at, PROCRASTINATE, TARGET_PROCRASTINATE, peers),
    ]
    enqueue = result.get("enqueue") or []
    if enqueue:
        rate = statistics.median(e["per_second"] for e in enqueue)
        found.append(
            Target(
                f"enqueue of {enqueue[0]['messages']:,} messages in one call",
                f">= {TARGET_ENQUEUE:,} messages/s",
                f"{rate:,.0f} messages/s",
                rate >= TARGET_ENQUEUE if enqueue[0]["messages"] >= 100_000 else None,
            )
        )
    cost = costs(result)
    if cost is not None:
        found += [
            Target(
                "transactions per message, batch 15 (xact_commit)",
                f"<= {TARGET_TRANSACTIONS}",
                f"{cost.transactions:.3f}",
                cost.transactions <= TARGET_TRANSACTIONS,
            ),
            Target(
                "WAL flushes per message, batch 15",
                f"<= {TARGET_FLUSHES}",
                f"{cost.flushes:.3f}",
                cost.flushes <= TARGET_FLUSHES,
            ),
            Target(
                "WAL bytes per message, batch 15",
                f"<= {TARGET_WAL_BYTES} (1 kB)",
                f"{cost.wal_bytes:,.0f}",
                cost.wal_bytes <= TARGET_WAL_BYTES,
            ),
            Target(
                "client CPU per message, batch 15 (the workers)",
                f"<= {TARGET_CLIENT_CPU_US:.0f} µs",
                f"{cost.client_cpu_us:.0f} µs",
                cost.client_cpu_us <= TARGET_CLIENT_CPU_US,
            ),
        ]
    found.append(size_target(result))
    dry = [f"{r.variant} at {r.workers}" for r in runs if r.detail.get("dry") and r.round > 0]
    found.append(
        Target(
            "the backlog outlasted every measured window",
            "every run",
            "yes" if not dry else "ran dry: " + ", ".join(dry),
            not dry,
        )
    )
    return found


def tuned_target(row: Row | None, result: dict[str, Any]) -> Target:
    """The campaign worker at its best batch against PgQueuer at its best."""
    peers = result["peers"]
    found = _ratio_target(
        row,
        PGQUEUER,
        TARGET_PGQUEUER,
        peers,
        of=TUNED,
        name=f"campaign worker, batch tuned / PgQueuer, batch tuned, at {TARGET_WORKERS} workers",
    )
    ours, theirs = best_batch(result.get("pgcoord_tuning")), peers[PGQUEUER].get("batch")
    if found.met is None or ours is None or theirs is None:
        return found
    measured = found.measured.removesuffix(")") + f"; batch {ours} / batch {theirs})"
    return Target(found.name, found.wanted, measured, found.met)


def best_batch(tuning: list[dict[str, Any]] | None) -> int | None:
    """The batch that ran fastest while tuned."""
    if not tuning:
        return None
    return int(max(tuning, key=lambda t: float(t["per_second"]))["batch"])


def size_target(result: dict[str, Any]) -> Target:
    """The size target, judged on the run with the autovacuum_naptime docs/vacuum.md
    recommends; the run with the server's own setting beside it."""
    own, documented = result.get("size"), result.get("size_naptime")
    growth, napped = size_growth(own), size_growth(documented)
    wanted = f"<= {TARGET_SIZE_GROWTH:g}x"
    if growth is None and napped is None:
        return Target(
            "campaign_queue + indexes after 1,000,000 messages / after 100,000",
            wanted,
            "not measured (--size)",
            None,
        )
    messages = next(g for g in (napped, growth) if g is not None)[3]
    name = (
        f"campaign_queue + indexes, largest after the first chunk of {messages:,} messages "
        "/ first chunk"
    )
    if documented is None or napped is None:
        naptime = (documented or {}).get("autovacuum_naptime", "?")
        why = "not run" if documented is None else documented.get("skipped", "not run")
        measured = f"not measured with autovacuum_naptime = {naptime} ({why})"
    else:
        first, largest, ratio, _ = napped
        measured = (
            f"{ratio:.2f}x with autovacuum_naptime = {documented['autovacuum_naptime']}, "
            f"as {VACUUM_DOC} recommends ({largest / 1024:,.0f} kB / {first / 1024:,.0f} kB)"
        )
    if own is not None and growth is not None:
        measured += f"; {growth[2]:.2f}x with {server_setting(own, result)}"
    return Target(
        name, wanted, measured, None if napped is None else napped[2] <= TARGET_SIZE_GROWTH
    )


def server_setting(size: dict[str, Any], result: dict[str, Any]) -> str:
    """The server's own autovacuum setting during a size run, as the report names it."""
    server_side = (result.get("autovacuum") or {}).get("server", {})
    if size.get("autovacuum", server_side.get("autovacuum")) == "off":
        return "autovacuum off on this server"
    naptime = size.get("autovacuum_naptime")
    if naptime is None:  # results written before the size runs recorded it
        naptime = f"{server_side.get('autovacuum_naptime', '?')} s"
    return f"the server's autovacuum_naptime, {naptime}"


def size_growth(size: dict[str, Any] | None) -> tuple[int, int, float, int] | None:
    """campaign_queue's table + indexes during the first chunk and at its largest during
    any later one, each chunk read twice (the backlog enqueued, all of it processed): the
    largest, not the last, so that a vacuum that happens to truncate the emptied table
    just before the last reading does not flatter the figure."""
    if not size or not size.get("chunks"):
        return None
    chunks = size["chunks"]
    first, largest = queue_bytes(chunks[0]), max(map(queue_bytes, chunks[1:] or chunks))
    return first, largest, largest / first, int(chunks[-1]["sent"])


def queue_bytes(chunk: dict[str, Any]) -> int:
    """campaign_queue's table + indexes during a chunk of the size part, the larger of
    its two readings."""
    return max(
        int(chunk[state]["campaign_queue"]["table"] + chunk[state]["campaign_queue"]["indexes"])
        for state in ("with_backlog", "processed")
    )


RATIOS = (
    (PGCOORD, PLAIN),
    (PGCOORD, UNPREPARED),
    (PGCOORD, PSYCOPG),
    (PGCOORD, PGQUEUER),
    (TUNED, PGQUEUER),
    (PGCOORD, PROCRASTINATE),
)


def summary_table(rows: list[Row], fmt: str, tuned: int | None = None) -> str:
    """Messages/s by variant and worker count, and the campaign worker's ratios; `tuned`:
    the tuned variant's batch, for its label."""
    present = [v for v in VARIANTS if any(v in row.medians for row in rows)]
    ratios = [(a, b) for a, b in RATIOS if a in present and b in present]
    table = []
    for row in rows:
        cells: list[Any] = [row.workers]
        cells += [f"{row.medians[v]:,.0f}" if v in row.medians else "-" for v in present]
        for a, b in ratios:
            ratio = row.ratio(a, b)
            cells.append("-" if ratio is None else f"{ratio:.2f}")
        table.append(cells)
    label = {**LABEL, TUNED: LABEL[TUNED] if tuned is None else f"campaign worker (batch {tuned})"}
    worker = {PGCOORD: "worker", TUNED: "worker" if tuned is None else f"worker (batch {tuned})"}
    headers = ["workers", *(label[v] for v in present)]
    short = {PLAIN: "plain SQL", UNPREPARED: "plain SQL unprepared"}
    headers += [f"{worker[a]} / {short.get(b, LABEL[b])}" for a, b in ratios]
    return tabulate(
        table,
        headers=headers,
        tablefmt=fmt,
        disable_numparse=True,
        colalign=("right",) * len(headers),
    )


def markdown(result: dict[str, Any], rows: list[Row], runs: list[Run], found: list[Target]) -> str:
    settings = result["settings"]
    machine = result["machine"]
    server = result["server"]
    peers = result["peers"]
    lines = [
        "# Campaign send queue: messages per second, and what each message costs",
        "",
        f"Written by `scripts/bench campaigns` on {result['date']}. Median of "
        f"{settings['rounds']} round{'' if settings['rounds'] == 1 else 's'} per variant "
        f"and worker count, the variants interleaved (in the order below in odd rounds, "
        "reversed in even ones) so that drift on a shared machine hits all of them alike. "
        "Absolute figures move by a third from run to run; the ratios measured in the "
        "same run are the result.",
        "",
        f"- campaign worker: that many processes, each a `CampaignWorker` (batch "
        f"{settings['batch']}, concurrency {settings['concurrency']}, its other defaults) "
        "with a no-op handler returning `{}`, on uvloop as `pgcoord work` runs it, started "
        "on an empty queue; once every one is "
        "ready the backlog arrives in one transaction (a `campaign_enqueue` call per 100,000 "
        "messages), "
        f"and messages/s is counted over {settings['seconds']} s starting "
        f"{settings['warmup']:g} s after it has arrived (count of `campaign_outcomes`).",
        "- plain SQL (c), the ceiling: pgbench with that many connections running what a "
        "careful user writes on a simple message table (bench/pgbench/campaign_plain.sql): "
        "claim 15 due messages in one statement (`FOR UPDATE SKIP LOCKED` on a partial "
        "index of pending messages; status, claim token, worker and lease set; recipients "
        "and payloads returned), then mark them sent in one statement fenced by the token; "
        "prepared statements (`--protocol=prepared`: each statement parsed and planned once "
        f"per connection). The backlog is stored before the run; {settings['seconds']} s.",
        "- plain SQL (c, unprepared): the same, with `--protocol=extended`: each statement "
        "parsed and planned again on every call, as the driver sends every statement (it "
        "never prepares, so that it is safe on any connection, a transaction-mode pooler's "
        "included) and as the Python variants below send theirs.",
        "- plain SQL (psycopg), the ceiling of a Python client: that many processes, each "
        "running the same two statements (read from the pgbench script) through one async "
        "psycopg connection on uvloop, never prepared (as the unprepared ceiling), with "
        "nothing around them (no handlers, heartbeat or metrics); started, fed and counted "
        "like the campaign worker. What a worker written in Python pays for the round trips "
        "and rows alone, on the machine the workers share with the server.",
        "- functions: pgbench calling `campaign_claim` (limit 15) and "
        "`campaign_complete_many` (bench/pgbench/campaign_functions.sql): the SQL of the "
        "campaign queue without the worker.",
        "- PgQueuer: that many processes, each a `QueueManager` over one asyncpg connection "
        "(PgQueuer's own driver) with a no-op entrypoint, on uvloop as its command line "
        "runs it, its batch tuned (below); "
        "Procrastinate: that many processes, each its worker with concurrency "
        f"{settings['concurrency']} and a no-op task, its psycopg connector, LISTEN/NOTIFY "
        "on, on asyncio's loop as its command line runs it. Both run and are counted like "
        "the campaign worker, each in its own schema of "
        "the same database, with the same messages (recipient and payload).",
        *tuned_bullet(result.get("pgcoord_tuning")),
        "",
        summary_table(rows, "github", best_batch(result.get("pgcoord_tuning"))),
        "",
        "## Targets",
        "",
        targets_table(found, "github"),
        "",
    ]
    lines += tuning_lines(result.get("pgcoord_tuning") or [])
    lines += peer_lines(peers, result.get("pgqueuer_tuning") or [])
    lines += cost_lines(result)
    lines += enqueue_lines(result.get("enqueue") or [], runs)
    lines += size_lines(result)
    lines += held_back.lines(result.get("held_back"), held_back_labels(result))
    lines += [
        "## CPU per message",
        "",
        "Median µs per message: the client programs (the worker processes, read from "
        "/proc, over the window; pgbench over its run) and the server's processes (read "
        "from /proc when the server runs on this machine"
        + ("" if server["kind"] == "embedded" else "; includes any other sessions on it")
        + "). Both share the machine's cores, so when they are saturated messages/s is "
        "about cores / (client + server CPU per message). Transactions per message: "
        "pg_stat_database over the window (over the run for pgbench); a backend reports "
        "its figures at most once a second, so for the worker runs it is an estimate (the "
        "exact count is the cost section's).",
        "",
        cpu_table(runs, "github"),
        "",
        "## Every run",
        "",
        "Rows read per message: the rows the queue's tables and indexes gave to the run's "
        "scans (a table's sequential scans' rows, an index's entries; the bench's own counts "
        "left out), per message processed from the backlog's arrival to the workers' exit, "
        "and the three tables or indexes that gave the most. Longest snapshot: the "
        "snapshot held longest in the database from the backlog's arrival to the window's "
        "end, when held a second or more, and its holder (bench/horizon.py). A snapshot "
        "holds back the horizon of every table in the database, so that claims step over "
        "entries vacuum may not yet remove; a round that read many more rows per message "
        "than the others of its variant shows a plan or a horizon gone wrong.",
        "",
        runs_table(runs, "github"),
        "",
        "## Setup",
        "",
        *setup_lines(result),
        f"- machine: {machine['cores']} cores ({machine['cpu']}), shared by the workers "
        "or pgbench and the server",
        f"- rounds {settings['rounds']}, window {settings['seconds']} s, warm-up "
        f"{settings['warmup']:g} s, workers {', '.join(str(w) for w in settings['workers'])}"
        f"; each run's backlog {settings['backlog_margin']:g} times what it is expected to "
        "take in warm-up, window and a second, at a guess of its rate or the best "
        "measured so far when higher (doubled after a run whose backlog ran dry)",
        f"- autovacuum: {autovacuum_line(result)}",
        f"- command: `{result['command']}`",
        "",
    ]
    return "\n".join(lines)


def peer_lines(peers: dict[str, dict[str, Any]], tuning: list[dict[str, Any]]) -> list[str]:
    lines = ["## PgQueuer and Procrastinate", ""]
    for name in (PGQUEUER, PROCRASTINATE):
        peer = peers.get(name, {})
        if peer.get("status") == "ran":
            text = f"ran ({peer['version']})"
            if name == PGQUEUER and "batch" in peer:
                text += f", batch {peer['batch']} in the rounds"
        else:
            text = f"**{peer.get('status', 'not run')}**: {peer.get('reason', '')}"
        lines.append(f"- {LABEL[name]}: {text}")
    lines.append("")
    if tuning:
        lines += [
            "PgQueuer's batch (`QueueManager.run(batch_size=...)`), one run each at the "
            "largest worker count before the rounds; the best ran the rounds:",
            "",
            tuning_table(tuning),
            "",
        ]
    return lines


def tuned_bullet(tuning: list[dict[str, Any]] | None) -> list[str]:
    batch = best_batch(tuning)
    if batch is None:
        return []
    return [
        f"- campaign worker (batch {batch}): the campaign worker with the batch that ran "
        "fastest when each of a few was tried before the rounds (below), as PgQueuer's is."
    ]


def tuning_lines(tuning: list[dict[str, Any]]) -> list[str]:
    if not tuning:
        return []
    return [
        "## The campaign worker's batch",
        "",
        "`CampaignWorker(batch=...)`, one run each at the largest worker count before the "
        f"rounds; the best, {best_batch(tuning)}, ran the rounds as the tuned variant, "
        "beside batch 15. The ceiling and the cost per message stay at batch 15.",
        "",
        tuning_table(tuning),
        "",
    ]


def tuning_table(tuning: list[dict[str, Any]]) -> str:
    return tabulate(
        [[t["batch"], *_tried(t)] for t in tuning],
        headers=["batch", "messages/s", "ran dry"],
        tablefmt="github",
        disable_numparse=True,
        colalign=("right", "right", "left"),
    )


def _tried(t: dict[str, Any]) -> tuple[str, str]:
    """A tuning run's messages/s and whether it ran dry, or that it failed and why."""
    if "failed" in t:
        return "failed", t["failed"]
    return f"{t['per_second']:,.0f}", "yes" if t["dry"] else ""


def cost_lines(result: dict[str, Any]) -> list[str]:
    cost = costs(result)
    if cost is None:
        return []
    settings = result["settings"]
    runs = result["costs"]
    alone = next((c for c in runs if c["messages"] == 0), None)
    table = [
        [
            "fleet start and stop alone" if c["messages"] == 0 else f"{c['messages']:,}",
            f"{c['per_second']:,.0f}" if c["messages"] else "-",
            c["transactions"],
            c["flushes"],
            f"{c['wal_bytes']:,}",
            f"{c['client_cpu']:.3f}",
            "-" if c["server_cpu"] is None else f"{c['server_cpu']:.3f}",
        ]
        for c in runs
    ]
    return [
        f"## Per message at batch {settings['batch']}",
        "",
        f"{max(settings['workers'])} campaign workers drain a backlog of "
        f"{settings['cost_messages']:,} messages, enqueued into a paused run before they "
        "start and resumed once they are ready (median of "
        f"{cost.drains} drains; {cost.per_second:,.0f} messages/s while draining):",
        "",
        f"- transactions: {cost.transactions:.3f} per message, the database's "
        "`pg_stat_database.xact_commit` from before the workers start to after they have "
        "exited (a backend reports its last figures when it exits), less the bench's own "
        "statements (the resume and its polls) and less the fleet's start and stop alone "
        f"({alone['transactions'] if alone else 0} transactions: connections, LISTEN, the "
        "stale-skipping lease, the first claims);",
        f"- WAL flushes: {cost.flushes:.3f} per message, the server's "
        + (
            "`pg_stat_io` fsyncs of WAL (context normal; PostgreSQL 18 moved "
            "`pg_stat_wal.wal_sync` there)"
            if int(result["server"]["settings"].get("server_version", "0").split(".")[0]) >= 18
            else "`pg_stat_wal.wal_sync`"
        )
        + " over the same span, the fleet's start and stop included "
        f"({alone['flushes'] if alone else 0} alone): every fsync of WAL by any process (a "
        "commit whose WAL another backend or the WAL writer already flushed adds none); "
        "on a server shared with other sessions theirs count too;",
        f"- WAL bytes: {cost.wal_bytes:,.0f} per message, `pg_current_wal_lsn()` from the "
        "resume to the last message sent (autovacuum's share included; on a shared "
        "server, other sessions' WAL too);",
        f"- client CPU: {cost.client_cpu_us:.0f} µs per message, the worker processes' "
        "user + system time from /proc over the same span"
        + (f"; the server's: {cost.server_cpu_us:.0f} µs" if cost.server_cpu_us is not None else "")
        + ".",
        "",
        tabulate(
            table,
            headers=[
                "messages",
                "messages/s",
                "transactions",
                "WAL flushes",
                "WAL bytes",
                "workers' CPU s",
                "server CPU s",
            ],
            tablefmt="github",
            disable_numparse=True,
            colalign=("left",) + ("right",) * 6,
        ),
        "",
    ]


def enqueue_lines(enqueue: list[dict[str, Any]], runs: list[Run]) -> list[str]:
    if not enqueue:
        return []
    lines = [
        f"## Enqueue of {enqueue[0]['messages']:,} messages in one call",
        "",
        "`campaigns.campaign_enqueue` through the driver into an empty queue, timed from "
        "the call to its return (the driver building the JSON array, the statement, the "
        "commit); the client's CPU is the Python process's:",
        "",
        tabulate(
            [
                [
                    e["round"],
                    f"{e['seconds']:.3f}",
                    f"{e['per_second']:,.0f}",
                    f"{e['client_cpu_seconds']:.3f}",
                    f"{e['wal_bytes_per_message']:,.0f}",
                ]
                for e in enqueue
            ],
            headers=["round", "seconds", "messages/s", "client CPU s", "WAL bytes/message"],
            tablefmt="github",
            disable_numparse=True,
            colalign=("right",) * 5,
        ),
        "",
    ]
    loads = {
        v: [r.detail["backlog"] / r.detail["load_seconds"] for r in runs if r.variant == v]
        for v in FLEETS
    }
    loads = {v: rates for v, rates in loads.items() if rates}
    if loads:
        lines += [
            "Loading the worker runs' backlogs (each queue's own batch enqueue, up to "
            "100,000 messages a call, one transaction), median messages/s: "
            + ", ".join(f"{LABEL[v]} {statistics.median(r):,.0f}" for v, r in loads.items())
            + ".",
            "",
        ]
    return lines


def held_back_labels(result: dict[str, Any]) -> dict[str, str]:
    batch = best_batch(result.get("pgqueuer_tuning"))
    return {
        "pgcoord": "pgcoord: the SQL functions (pgbench, bench/pgbench/campaign_functions.sql)",
        "plain": "plain SQL, one row per message (pgbench, bench/pgbench/campaign_plain.sql)",
        "pgqueuer": f"PgQueuer (its workers, batch {batch})",
    }


def size_lines(result: dict[str, Any]) -> list[str]:
    own, documented = result.get("size"), result.get("size_naptime")
    done = [
        (size, growth)
        for size in (documented, own)
        if size is not None and (growth := size_growth(size))
    ]
    if not done:
        return [
            "## Size after 1,000,000 messages",
            "",
            "Not measured in this run (`scripts/bench campaigns --size`).",
            "",
        ]
    first, (_, _, _, messages) = done[0]
    lines = [
        f"## Size after {messages:,} messages",
        "",
        f"One running run; {first['chunk']:,} messages enqueued in one call, then all of "
        f"them processed ({first['processing']}), and again until {messages:,} were sent, "
        "with the tables' own autovacuum settings (Setup). What is compared is "
        "campaign_queue, the queue of open work, with its indexes, at its largest during "
        "a chunk (with its backlog or after processing it: an emptied table may be "
        "truncated by a vacuum in between): the first chunk against the largest of the "
        "later ones. "
        "campaign_messages and campaign_outcomes are the record of every message enqueued "
        "and how it ended: they grow with the messages by design (nothing prunes them).",
        "",
        "The part runs twice. The target's figure is the run with autovacuum_naptime = "
        f"{(documented or {}).get('autovacuum_naptime', '?')}, "
        f"the server setting {VACUUM_DOC} recommends for a database that holds a busy "
        "campaign queue: autovacuum's launcher visits each database once per naptime, "
        "whatever a table's own thresholds, and inserts reuse the space of deleted rows "
        "only once vacuum has recorded it: with the default of 1 min, a queue that "
        "turns over in less than that is not vacuumed in between, and grows with every "
        "enqueue. The bench sets it with ALTER SYSTEM for that run (for every database "
        "of the server) and puts it back after. The other run keeps the server's own "
        "setting.",
        "",
    ]
    if documented is not None and size_growth(documented) is None:
        lines += [
            f"Not measured with autovacuum_naptime = {documented['autovacuum_naptime']}: "
            f"{documented.get('skipped', 'not run')}.",
            "",
        ]
    for size, setting in (
        (documented, f"autovacuum_naptime = {(documented or {}).get('autovacuum_naptime')}"),
        (own, "the server's own setting" if own is None else server_setting(own, result)),
    ):
        growth = size_growth(size)
        if size is None or growth is None:
            continue
        low, high, ratio, _ = growth
        vacuums = queue_vacuums(size)
        by_chunk = ", ".join(f"{queue_bytes(c) / 1024:,.0f}" for c in size["chunks"])
        lines += [
            f"With {setting}: {low / 1024:,.0f} kB in the first chunk, "
            f"{high / 1024:,.0f} kB at its largest after it ({ratio:.2f}x; chunk by chunk, "
            f"kB: {by_chunk}); the {messages:,} messages "
            f"took {size['chunks'][-1]['elapsed']:,.0f} s, in which autovacuum vacuumed "
            f"campaign_queue {vacuums} time{'' if vacuums == 1 else 's'}.",
            "",
            size_table(size),
            "",
        ]
    return lines


def size_table(size: dict[str, Any]) -> str:
    """Each campaign table in the first chunk and in the last, with its backlog and
    processed."""
    chunks = size["chunks"]
    table = []
    for chunk in (chunks[0], chunks[-1]):
        for state in ("with_backlog", "processed"):
            for name, found in chunk[state].items():
                table.append(
                    [
                        f"{chunk['sent']:,}",
                        "backlog enqueued" if state == "with_backlog" else "processed",
                        name,
                        f"{found['table'] / 1024:,.0f}",
                        f"{found['indexes'] / 1024:,.0f}",
                        found["live"],
                        found["dead"],
                        found["autovacuums"],
                    ]
                )
    return tabulate(
        table,
        headers=["sent", "when", "table", "kB", "index kB", "live", "dead", "autovacuums"],
        tablefmt="github",
        disable_numparse=True,
        colalign=("right", "left", "left", "right", "right", "right", "right", "right"),
    )


def queue_vacuums(size: dict[str, Any]) -> int:
    """Autovacuum runs on campaign_queue during the size part."""
    chunks = size["chunks"]
    return int(
        chunks[-1]["processed"]["campaign_queue"]["autovacuums"]
        - chunks[0]["with_backlog"]["campaign_queue"]["autovacuums"]
    )


def autovacuum_line(result: dict[str, Any]) -> str:
    found = result.get("autovacuum") or {}
    server_side = ", ".join(f"{k} = {v}" for k, v in (found.get("server") or {}).items())
    tables = "; ".join(f"{k}: {v or 'defaults'}" for k, v in (found.get("tables") or {}).items())
    return f"{server_side}; {tables}"


def cpu_table(runs: list[Run], fmt: str) -> str:
    present = [v for v in VARIANTS if any(r.variant == v for r in runs)]
    table = []
    for workers in sorted({r.workers for r in runs}):
        cells: list[Any] = [workers]
        for variant in present:
            mine = [r for r in runs if r.workers == workers and r.variant == variant and r.round]
            for key, digits in (
                ("client_cpu_us", 0),
                ("server_cpu_us", 0),
                ("transactions_per_message", 3),
            ):
                values = [r.detail[key] for r in mine if key in r.detail]
                cells.append(f"{statistics.median(values):.{digits}f}" if values else "-")
        table.append(cells)
    headers = ["workers"]
    for variant in present:
        headers += [f"{variant} client", f"{variant} server", f"{variant} xacts"]
    return tabulate(
        table,
        headers=headers,
        tablefmt=fmt,
        disable_numparse=True,
        colalign=("right",) * len(headers),
    )


def runs_table(runs: list[Run], fmt: str) -> str:
    return tabulate(
        [
            [
                run.round,
                run.workers,
                run.variant + (f" (batch {run.detail['batch']})" if "batch" in run.detail else ""),
                f"{run.per_second:,.0f}",
                run.messages,
                run.detail["backlog"],
                "yes" if run.detail.get("dry") else "",
                f"{run.detail.get('transactions_per_message', float('nan')):.3f}",
                format_us(run.detail.get("client_cpu_us")),
                format_us(run.detail.get("server_cpu_us")),
                f"{run.detail.get('rows_read_per_message', float('nan')):.1f}",
                read_most(run.detail),
                snapshot(run.detail),
            ]
            for run in runs
        ],
        headers=[
            "round",
            "workers",
            "variant",
            "messages/s",
            "messages",
            "backlog",
            "ran dry",
            "xacts/message",
            "client CPU µs",
            "server CPU µs",
            "rows read/message",
            "read most",
            "longest snapshot",
        ],
        tablefmt=fmt,
        disable_numparse=True,
        colalign=("right", "right", "left") + ("right",) * 8 + ("left", "left"),
    )


def read_most(detail: dict[str, Any]) -> str:
    """The tables and indexes that gave a run the most rows, each with its rows per message."""
    return ", ".join(f"{name} {n:g}" for name, n in detail.get("rows_read_by", {}).items())


def snapshot(detail: dict[str, Any]) -> str:
    """The snapshot held longest during a run, when it was held a second or more: its
    seconds and its holder (the kind of process and its statement, shortened)."""
    held = detail.get("longest_snapshot_s", 0)
    if held < 1:
        return ""
    holder = " ".join(str(detail.get("snapshot_holder", "")).split())
    return f"{held:g} s: {holder[:60]}"


def write(
    stem: Path, result: dict[str, Any], rows: list[Row], runs: list[Run], found: list[Target]
) -> tuple[Path, Path]:
    """Write <stem>.md and <stem>.json and return their paths."""
    cost = costs(result)
    document = {
        **result,
        "summary": [
            {
                "workers": row.workers,
                "messages_per_second": row.medians,
                "ratios": {
                    f"{a}/{b}": row.ratio(a, b)
                    for a, b in ((PGCOORD, FUNCTIONS), *RATIOS)
                    if row.ratio(a, b) is not None
                },
            }
            for row in rows
        ],
        "per_message": None if cost is None else asdict(cost),
        "targets": [asdict(t) for t in found],
        "runs": [asdict(run) for run in runs],
    }
    return write_files(stem, markdown(result, rows, runs, found), document)
