"""Shared rate limits: rate_acquire calls per second on one hot key at 16 connections, (a)
through pgcoord.rate_acquire and (c) as the same token bucket written as one plain UPDATE
on a one-row table, the ceiling; once with a budget so large that every call is granted
and once with one grant a second, so that nearly every call is refused. pgbench drives
both, in the same run and interleaved.

    python -m bench.rates [--seconds 5] [--rounds 3] [--clients 16]

The server is DATABASE_URL when set, else an embedded PostgreSQL. The bench works in a
scratch database of its own, drops it at the end, and writes <output>.md and .json.
It measures; it exits 0 whether or not the targets are met.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any, LiteralString

import psycopg

from . import pgbench_run, rates_report, report
from .database import ScratchDatabase, scratch_database, server
from .rates_report import FUNCTIONS, MODES, PLAIN, Run

ROOT = Path(__file__).resolve().parent.parent

SCRIPTS = {PLAIN: "rate_plain", FUNCTIONS: "rate_functions"}

PLAIN_SCHEMA: LiteralString = """
CREATE SCHEMA bench_rates;
CREATE TABLE bench_rates.buckets (
    key text PRIMARY KEY,
    tokens double precision NOT NULL,
    tokens_at timestamptz NOT NULL
) WITH (fillfactor = 50);
"""
# a full bucket for the plain variant, no bucket yet for rate_acquire (its first call
# makes it, full)
EMPTY: LiteralString = "TRUNCATE pgcoord.rates, bench_rates.buckets"
FULL: LiteralString = """
INSERT INTO bench_rates.buckets (key, tokens, tokens_at)
VALUES ('hot', %(burst)s, clock_timestamp())
"""
# rows written so far: a grant updates the bucket (rate_acquire's first call inserts it)
WRITES: LiteralString = """
SELECT coalesce(sum(n_tup_ins + n_tup_upd), 0)
FROM pg_catalog.pg_stat_user_tables
WHERE schemaname = %(schema)s AND relname = %(table)s
"""
TABLES = {PLAIN: ("bench_rates", "buckets"), FUNCTIONS: ("pgcoord", "rates")}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = os.environ.get("DATABASE_URL") or None
    with server(url) as server_url, scratch_database(server_url) as db:
        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute(PLAIN_SCHEMA)
        db.wait_until_idle()
        result = describe(db, args, "DATABASE_URL" if url else "embedded")
        runs = measure(db, args)
    rows = rates_report.summarise(runs)
    found = rates_report.targets(rows, runs)
    md, js = rates_report.write(args.output, result, rows, runs, found)

    report.print_outcome(rates_report.summary_table(rows, "simple"), found, md, js, ROOT)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench rates", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=int, default=5, help="length of each run (5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every variant (3)")
    parser.add_argument("--clients", type=int, default=16, help="connections (16)")
    report.add_output(parser, "rates")
    args = parser.parse_args(argv)
    if min(args.seconds, args.rounds, args.clients) < 1:
        parser.error("--seconds, --rounds and --clients must be at least 1")
    args.command = " ".join(["scripts/bench rates", *map(shlex.quote, argv or sys.argv[1:])])
    return args


def measure(db: ScratchDatabase, args: argparse.Namespace) -> list[Run]:
    """Every round runs both modes, plain before the function in odd rounds and after it
    in even ones."""
    runs = []
    for round_no in range(1, args.rounds + 1):
        for mode in MODES:
            kinds = [PLAIN, FUNCTIONS] if round_no % 2 else [FUNCTIONS, PLAIN]
            for kind in kinds:
                run = one_run(db, mode, kind, round_no, args)
                runs.append(run)
                print(
                    f"round {round_no}/{args.rounds}  {mode:<8} {kind:<9}"
                    f" {run.per_second:>9,.0f} calls/s  {run.granted_share:6.1%} granted",
                    file=sys.stderr,
                    flush=True,
                )
    return runs


def one_run(
    db: ScratchDatabase, mode: str, kind: str, round_no: int, args: argparse.Namespace
) -> Run:
    per_second, burst = rates_report.BUDGETS[mode]
    schema, table = TABLES[kind]
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(EMPTY)
        conn.execute(FULL, {"burst": burst})
    db.wait_until_idle()
    with psycopg.connect(db.url, autocommit=True) as conn:
        writes = written(conn, schema, table)
    db.wait_until_idle()
    before, cpu_before = db.committed_transactions(), db.server_cpu_seconds()
    result = pgbench_run.run_script(
        db.url,
        SCRIPTS[kind],
        args.clients,
        args.seconds,
        variables={"per_second": str(per_second), "burst": str(burst)},
    )
    db.wait_until_idle()
    transactions, cpu_after = db.committed_transactions() - before, db.server_cpu_seconds()
    with psycopg.connect(db.url, autocommit=True) as conn:
        granted = written(conn, schema, table) - writes
    calls = result.transactions
    detail: dict[str, Any] = {
        "latency_ms": result.latency_ms,
        "client_cpu_us_per_call": round(1e6 * result.client_cpu / max(calls, 1), 1),
    }
    if cpu_before is not None and cpu_after is not None:
        detail["server_cpu_us_per_call"] = round(1e6 * (cpu_after - cpu_before) / max(calls, 1), 1)
    return Run(mode, kind, args.clients, round_no, result.tps, calls, granted, transactions, detail)


def written(conn: psycopg.Connection[Any], schema: str, table: str) -> int:
    row = conn.execute(WRITES, {"schema": schema, "table": table}).fetchone()
    return int(row[0]) if row else 0


def describe(db: ScratchDatabase, args: argparse.Namespace, kind: str) -> dict[str, Any]:
    return {
        **report.environment(db, "rates", args.command, kind),
        "pgbench": pgbench_run.pgbench_version(),
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "clients": args.clients,
            "budgets": {
                mode: {"per_second": per_second, "burst": burst}
                for mode, (per_second, burst) in rates_report.BUDGETS.items()
            },
        },
    }


if __name__ == "__main__":
    sys.exit(main())
