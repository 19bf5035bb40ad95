"""Lease-lock throughput: acquire + release pairs per second at several connection counts,
(a) through the SQL functions driven by pgbench, (b) through the Python driver, and (c) the
ceiling, pgbench running the equivalent plain SQL, all in the same run and interleaved.

    python -m bench.locks [--seconds 5] [--rounds 3] [--clients 1,4,16] [--driver both]

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
from typing import Any

from . import driver, pgbench_run, report
from .database import ScratchDatabase, scratch_database, server

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = os.environ.get("DATABASE_URL") or None
    with server(url) as server_url, scratch_database(server_url) as db:
        result = describe(db, args, "DATABASE_URL" if url else "embedded")
        runs = measure(db, args)
        round_trips = driver.round_trips_per_pair(db.url)
        if args.profile:
            result["profile"] = profile(db, args.seconds)
    rows = report.summarise(runs)
    found = report.targets(rows, round_trips)
    result["round_trips_per_pair"] = round_trips
    md, js = report.write(args.output, result, rows, runs, found)

    report.print_outcome(report.summary_table(rows, "simple"), found, md, js, ROOT)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench locks", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=int, default=5, help="length of each run (5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every variant (3)")
    parser.add_argument(
        "--clients",
        type=report.integers,
        default=[1, 4, 16],
        help="connection counts, comma-separated (1,4,16)",
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="driver warm-up before counting, s (1)"
    )
    parser.add_argument(
        "--driver",
        choices=["threads", "async", "both"],
        default="both",
        help="how the Python variant runs its connections: threads (pgcoord.locks), async "
        "(pgcoord.locks_async) or both, reporting the better (both)",
    )
    parser.add_argument(
        "--no-profile",
        dest="profile",
        action="store_false",
        help="skip the one-client per-statement latency profile",
    )
    report.add_output(parser, "locks")
    args = parser.parse_args(argv)
    if args.seconds < 1 or args.rounds < 1 or min(args.clients) < 1:
        parser.error("--seconds, --rounds and --clients must be at least 1")
    args.drivers = ["threads", "async"] if args.driver == "both" else [args.driver]
    args.command = " ".join(["scripts/bench locks", *map(shlex.quote, argv or sys.argv[1:])])
    return args


def measure(db: ScratchDatabase, args: argparse.Namespace) -> list[report.Run]:
    """Every round runs every connection count, and at each count the variants in turn:
    c, a, b."""
    variants = [report.PLAIN, report.FUNCTIONS, *(f"driver-{d}" for d in args.drivers)]
    runs = []
    for round_no in range(1, args.rounds + 1):
        for clients in args.clients:
            for variant in variants:
                run = one_run(db, variant, clients, round_no, args)
                runs.append(run)
                print(
                    f"round {round_no}/{args.rounds}  clients {clients:>3}  {variant:<15}"
                    f" {run.pairs_per_second:>9,.0f} pairs/s"
                    f"  {run.transactions_per_pair:.3f} xacts/pair",
                    file=sys.stderr,
                    flush=True,
                )
    return runs


def one_run(
    db: ScratchDatabase, variant: str, clients: int, round_no: int, args: argparse.Namespace
) -> report.Run:
    db.reset()
    before = db.committed_transactions()
    cpu_before = db.server_cpu_seconds()
    detail: dict[str, Any]
    if variant in (report.PLAIN, report.FUNCTIONS):
        result = pgbench_run.run_script(db.url, variant, clients, args.seconds)
        rate, pairs = result.tps, result.transactions
        detail = {
            "latency_ms": result.latency_ms,
            "client_cpu_us_per_pair": round(1e6 * result.client_cpu / max(pairs, 1), 1),
        }
    else:
        runner = driver.RUNNERS[variant.removeprefix("driver-")]
        outcome = runner(db.url, clients, args.seconds, args.warmup)
        rate, pairs = outcome.pairs_per_second, outcome.pairs
        detail = {
            "granted": outcome.granted,
            "python_cpu": round(outcome.python_cpu, 3),
            "client_cpu_us_per_pair": round(1e6 * outcome.cpu_per_pair, 1),
        }
    db.wait_until_idle()
    transactions = db.committed_transactions() - before
    cpu_after = db.server_cpu_seconds()
    if cpu_before is not None and cpu_after is not None:
        detail["server_cpu_us_per_pair"] = round(1e6 * (cpu_after - cpu_before) / max(pairs, 1), 1)
    return report.Run(variant, clients, round_no, rate, pairs, transactions, detail)


def profile(db: ScratchDatabase, seconds: int) -> dict[str, Any]:
    """Per-statement latency at one connection, with the configured commit and without
    waiting for the WAL flush."""
    found: dict[str, Any] = {}
    for label, options in (
        ("as configured", None),
        ("synchronous_commit=off", "-c synchronous_commit=off"),
    ):
        found[label] = {}
        for variant in (report.PLAIN, report.FUNCTIONS):
            db.reset()
            result = pgbench_run.run_script(
                db.url, variant, 1, seconds, per_statement=True, options=options
            )
            found[label][variant] = [list(s) for s in result.statement_latencies_ms]
    return found


def describe(db: ScratchDatabase, args: argparse.Namespace, kind: str) -> dict[str, Any]:
    return {
        **report.environment(db, "locks", args.command, kind),
        "pgbench": pgbench_run.pgbench_version(),
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "clients": args.clients,
            "warmup": args.warmup,
            "drivers": args.drivers,
            "keys": driver.KEYS,
        },
    }


if __name__ == "__main__":
    sys.exit(main())
