"""Inbox throughput: ingest calls per second with 30% repeats, and claim + complete pairs
of 1-message bursts per second, each (a) through the SQL functions and (c) as the
equivalent plain SQL, the ceiling; pgbench drives both, in the same run and interleaved.
Also the round trips of one ingest through the Python driver.

    python -m bench.inbox [--seconds 5] [--rounds 3] [--ingest-clients 16] [--claim-workers 8]

The server is DATABASE_URL when set, else an embedded PostgreSQL. The bench works in a
scratch database of its own, drops it at the end, and writes <output>.md and .json.
It measures; it exits 0 whether or not the targets are met.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, LiteralString

import psycopg

from pgcoord import config, inbox

from . import driver, inbox_report, pgbench_run, report
from .database import ScratchDatabase, scratch_database, server
from .inbox_report import CLAIM, INGEST, Run

ROOT = Path(__file__).resolve().parent.parent

# variant: (workload, bench/pgbench script); a round runs them in this order or reversed
VARIANTS: dict[str, tuple[str, str]] = {
    "ingest-plain": (INGEST, "ingest_plain"),
    "ingest-functions": (INGEST, "ingest_functions"),
    "claim-plain": (CLAIM, "claim_plain"),
    "claim-functions": (CLAIM, "claim_functions"),
}

# as in bench/pgbench/ingest_*.sql: the repeats draw from m1 .. m10000, stored before
# every ingest run in the conversations c1 .. c5000 (two messages each)
STORED = 10_000
CONVERSATIONS = 5_000
# a claim run starts with a backlog of due 1-message buffers this many times the pairs
# it is expected to take (the best rate measured so far, or the guess before any)
BACKLOG_MARGIN = 2
BACKLOG_GUESS = 5_000  # pairs per second

STORE_REPEATS_POOL: LiteralString = """
SELECT count(*) FROM (
    SELECT pgcoord.message_ingest(
        p_provider => 'bench', p_provider_message_id => 'm' || n,
        p_conversation_key => 'c' || (n %% %(conversations)s + 1), p_body => 'body of m' || n
    )
    FROM generate_series(1, %(stored)s) AS n
) AS s
"""

# what message_ingest(..., p_debounce => 0) leaves for a message in a conversation of its
# own, in bulk: one waiting message and its buffer row, due at once
STORE_BACKLOG: LiteralString = """
INSERT INTO pgcoord.messages (
    provider, provider_message_id, conversation_key, body, payload, received_at
)
SELECT
    'bench', 'q' || n, 'q' || n, 'body of q' || n, '{}',
    clock_timestamp() - interval '1 hour'
FROM generate_series(1, %(backlog)s) AS n
"""
BUFFER_BACKLOG: LiteralString = """
INSERT INTO pgcoord.buffers (
    conversation_key, waiting, waiting_first_at, waiting_last_at, flush_at, due_at
)
SELECT m.conversation_key, 1, m.received_at, m.received_at, m.received_at, m.received_at
FROM pgcoord.messages AS m
"""

# after an ingest run: the messages stored, and whether every buffer row counts exactly
# the waiting messages of its conversation
INGEST_OUTCOME: LiteralString = """
SELECT
    (SELECT count(*) FROM pgcoord.messages),
    NOT EXISTS (
        SELECT
        FROM pgcoord.buffers AS b
        FULL JOIN (
            SELECT m.conversation_key, count(*) AS waiting
            FROM pgcoord.messages AS m
            WHERE m.state = 'waiting'
            GROUP BY m.conversation_key
        ) AS w ON w.conversation_key = b.conversation_key
        WHERE b.waiting IS DISTINCT FROM w.waiting::integer OR b.batch_size <> 0 OR b.dead
    )
"""

# after a claim run: the messages done, and whether every claim completed and the rest
# of the backlog is untouched (one waiting message per buffer row, nothing claimed)
CLAIM_OUTCOME: LiteralString = """
SELECT
    (SELECT count(*) FROM pgcoord.messages WHERE state = 'done'),
    NOT EXISTS (SELECT FROM pgcoord.messages WHERE state NOT IN ('waiting', 'done'))
    AND NOT EXISTS (
        SELECT FROM pgcoord.buffers
        WHERE waiting <> 1 OR batch_size <> 0 OR claimed_by IS NOT NULL OR dead
    )
    AND (SELECT count(*) FROM pgcoord.buffers)
    = (SELECT count(*) FROM pgcoord.messages WHERE state = 'waiting')
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = os.environ.get("DATABASE_URL") or None
    with server(url) as server_url, scratch_database(server_url) as db:
        result = describe(db, args, "DATABASE_URL" if url else "embedded")
        runs = measure(db, args)
        result["round_trips"] = round_trips(db)
        if args.profile:
            result["profile"] = profile(db, args)
    rows = inbox_report.summarise(runs)
    found = inbox_report.targets(rows, runs, result["round_trips"])
    md, js = inbox_report.write(args.output, result, rows, runs, found)

    report.print_outcome(inbox_report.summary_table(rows, "simple"), found, md, js, ROOT)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench inbox", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=int, default=5, help="length of each run (5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every variant (3)")
    parser.add_argument(
        "--ingest-clients", type=int, default=16, help="connections calling ingest (16)"
    )
    parser.add_argument(
        "--claim-workers", type=int, default=8, help="connections claiming and completing (8)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="an uncounted run of every variant before the first round, s, rounded up; 0: none (1)",
    )
    parser.add_argument(
        "--no-profile",
        dest="profile",
        action="store_false",
        help="skip the one-client per-statement latency profile",
    )
    report.add_output(parser, "inbox")
    args = parser.parse_args(argv)
    if min(args.seconds, args.rounds, args.ingest_clients, args.claim_workers) < 1:
        parser.error("--seconds, --rounds, --ingest-clients and --claim-workers must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    args.command = " ".join(["scripts/bench inbox", *map(shlex.quote, argv or sys.argv[1:])])
    return args


def clients_of(variant: str, args: argparse.Namespace) -> int:
    workload, _ = VARIANTS[variant]
    return int(args.ingest_clients if workload == INGEST else args.claim_workers)


def measure(db: ScratchDatabase, args: argparse.Namespace) -> list[Run]:
    """A warm-up run of every variant, then every round runs every variant: plain before
    functions in odd rounds, functions first in even ones. Both claim variants of a round
    start from a backlog of the same size."""
    best_claims = 0.0
    if args.warmup > 0:
        seconds = math.ceil(args.warmup)
        backlog = backlog_for(seconds, best_claims)
        for variant in VARIANTS:
            run = one_run(db, variant, 0, seconds, args, backlog)
            if run.workload == CLAIM:
                best_claims = max(best_claims, run.per_second)
            report_progress(run, "warm-up")
    runs = []
    for round_no in range(1, args.rounds + 1):
        order = list(VARIANTS)
        if round_no % 2 == 0:
            order = [order[1], order[0], order[3], order[2]]
        backlog = backlog_for(args.seconds, best_claims)
        for variant in order:
            run = one_run(db, variant, round_no, args.seconds, args, backlog)
            runs.append(run)
            report_progress(run, f"round {round_no}/{args.rounds}")
        best_claims = max([best_claims, *(r.per_second for r in runs if r.workload == CLAIM)])
    return runs


def report_progress(run: Run, label: str) -> None:
    print(
        f"{label:<11}  clients {run.clients:>3}  {run.variant:<16}"
        f" {run.per_second:>9,.0f} {inbox_report.UNITS[run.workload]}/s"
        f"  {run.transactions_per_op:.3f} xacts/{inbox_report.UNIT[run.workload]}",
        file=sys.stderr,
        flush=True,
    )


def backlog_for(seconds: int, best_claims: float) -> int:
    return math.ceil(seconds * BACKLOG_MARGIN * max(BACKLOG_GUESS, best_claims))


def prepare(db: ScratchDatabase, workload: str, backlog: int) -> None:
    """Empty the inbox tables and store what the workload starts from: the repeats' pool
    for ingest, the backlog of due buffers for claims. Vacuumed and analysed, and no
    client left connected, so every run starts from the same state."""
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("TRUNCATE pgcoord.messages, pgcoord.buffers")
        if workload == INGEST:
            conn.execute(STORE_REPEATS_POOL, {"stored": STORED, "conversations": CONVERSATIONS})
        else:
            with conn.transaction():
                conn.execute(STORE_BACKLOG, {"backlog": backlog})
                conn.execute(BUFFER_BACKLOG)
        conn.execute("VACUUM ANALYZE pgcoord.messages, pgcoord.buffers")
    db.wait_until_idle()


def one_run(
    db: ScratchDatabase,
    variant: str,
    round_no: int,
    seconds: int,
    args: argparse.Namespace,
    backlog: int,
) -> Run:
    workload, script = VARIANTS[variant]
    clients = clients_of(variant, args)
    prepare(db, workload, backlog)
    before = db.committed_transactions()
    cpu_before = db.server_cpu_seconds()
    result = pgbench_run.run_script(db.url, script, clients, seconds)
    db.wait_until_idle()
    transactions = db.committed_transactions() - before
    cpu_after = db.server_cpu_seconds()

    with psycopg.connect(db.url, autocommit=True) as conn:
        row = conn.execute(INGEST_OUTCOME if workload == INGEST else CLAIM_OUTCOME).fetchone()
    assert row is not None
    count, consistent = int(row[0]), bool(row[1])
    detail: dict[str, Any] = {"latency_ms": result.latency_ms, "consistent": consistent}
    if workload == INGEST:
        ops, rate = result.transactions, result.tps
        detail["repeat_share"] = round(1 - (count - STORED) / max(ops, 1), 4)
    else:
        # a script run is one claim and, unless the claim came back empty, one complete
        ops, rate = count, result.tps * count / max(result.transactions, 1)
        detail["backlog"] = backlog
        detail["empty_claims"] = result.transactions - count
    detail["client_cpu_us_per_op"] = round(1e6 * result.client_cpu / max(ops, 1), 1)
    if cpu_before is not None and cpu_after is not None:
        detail["server_cpu_us_per_op"] = round(1e6 * (cpu_after - cpu_before) / max(ops, 1), 1)
    return Run(variant, workload, clients, round_no, rate, ops, transactions, detail)


def round_trips(db: ScratchDatabase, calls: int = 50, warmup: int = 10) -> dict[str, float]:
    """Round trips through the Python driver on one connection with the pools' options
    (config.CONNECTION_OPTIONS), counted in libpq's protocol trace after a warm-up: per
    ingest of a new message, per repeated ingest, and per claim + complete pair."""
    debounce = timedelta(0)  # due at once, for the claims

    def ingest(prefix: str, n: int) -> None:
        for i in range(n):
            inbox.message_ingest(conn, "rt", f"{prefix}{i}", f"rt-{prefix}{i}", "hello")

    def claim_and_complete(n: int) -> None:
        for _ in range(n):
            (burst,) = inbox.buffer_claim(conn, "rt-worker", limit=1)
            assert inbox.buffer_complete(conn, burst.conversation_key, burst.claim_token)

    with psycopg.connect(db.url, **config.CONNECTION_OPTIONS) as conn:
        conn.execute("TRUNCATE pgcoord.messages, pgcoord.buffers")
        ingest("warmup", warmup)
        new = driver.round_trips(conn, lambda: ingest("new", calls)) / calls
        repeated = driver.round_trips(conn, lambda: ingest("new", calls)) / calls
        for i in range(warmup + calls):
            inbox.message_ingest(conn, "rt", f"due{i}", f"rt-due{i}", "hello", debounce=debounce)
        claim_and_complete(warmup)
        pair = driver.round_trips(conn, lambda: claim_and_complete(calls)) / calls
    return {"ingest_new": new, "ingest_repeat": repeated, "claim_complete_pair": pair}


def profile(db: ScratchDatabase, args: argparse.Namespace) -> dict[str, Any]:
    """Per-statement latency at one connection, with the configured commit and without
    waiting for the WAL flush."""
    found: dict[str, Any] = {}
    for label, options in (
        ("as configured", None),
        ("synchronous_commit=off", "-c synchronous_commit=off"),
    ):
        found[label] = {}
        for variant, (workload, script) in VARIANTS.items():
            prepare(db, workload, backlog_for(args.seconds, BACKLOG_GUESS))
            result = pgbench_run.run_script(
                db.url, script, 1, args.seconds, per_statement=True, options=options
            )
            found[label][variant] = [list(s) for s in result.statement_latencies_ms]
    db.wait_until_idle()
    return found


def describe(db: ScratchDatabase, args: argparse.Namespace, kind: str) -> dict[str, Any]:
    return {
        **report.environment(db, "inbox", args.command, kind),
        "pgbench": pgbench_run.pgbench_version(),
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "warmup": math.ceil(args.warmup),
            "ingest_clients": args.ingest_clients,
            "claim_workers": args.claim_workers,
            "stored_messages": STORED,
            "conversations": CONVERSATIONS,
            "backlog_margin": BACKLOG_MARGIN,
        },
    }


if __name__ == "__main__":
    sys.exit(main())
