"""Many producers: enqueues of one message per call at 16 connections (pgbench, one
statement per transaction, synchronous_commit as the server has it), the shape of
webhooks handing messages over as they come. pgcoord's campaign_enqueue into a running
run whose workers are busy (a connection marked by campaign_busy, as a busy
CampaignWorker's LISTEN connection is, and none idle: no NOTIFY), into a running run
with one worker idle (a connection marked by campaign_idle: every enqueue notifies, as
it does when no worker has marked itself at all), and into a paused run; beside the
same producer on a plain row-per-message table (one INSERT), the ceiling. Interleaved,
in the order below in odd rounds and reversed in even ones.

    python -m bench.producers [--seconds 5] [--rounds 3] [--clients 16]

The server is DATABASE_URL when set, else an embedded PostgreSQL; the bench works in a
scratch database of its own and writes <output>.md and .json. It measures and has no
target: it exits 0.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from tabulate import tabulate

from pgcoord import campaigns

from . import pgbench_run, queues, report
from .database import ScratchDatabase, scratch_database, server

ROOT = Path(__file__).resolve().parent.parent

PLAIN = "plain INSERT"
BUSY = "pgcoord, running run, workers busy"
IDLE = "pgcoord, running run, a worker idle"
PAUSED = "pgcoord, paused run"
VARIANTS = (PLAIN, BUSY, IDLE, PAUSED)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = os.environ.get("DATABASE_URL") or None
    with server(url) as server_url, scratch_database(server_url) as db:
        queues.PLAIN.install(db.url)
        with psycopg.connect(db.url, autocommit=True) as conn:
            running = campaigns.campaign_create(conn, "producers")
            paused = campaigns.campaign_create(conn, "producers, paused")
            campaigns.campaign_set_status(conn, paused, "paused")
            sync = conn.execute("SHOW synchronous_commit").fetchone()
        db.wait_until_idle()
        result = {
            **report.environment(
                db, "producers", args.command, "DATABASE_URL" if url else "embedded"
            ),
            "pgbench": pgbench_run.pgbench_version(),
            "settings": {
                "seconds": args.seconds,
                "rounds": args.rounds,
                "clients": args.clients,
                "synchronous_commit": sync[0] if sync else None,
            },
        }
        runs = []
        for round_no in range(1, args.rounds + 1):
            order = VARIANTS if round_no % 2 else tuple(reversed(VARIANTS))
            for variant in order:
                run = one_run(db, variant, running, paused, args)
                run["round"] = round_no
                runs.append(run)
                print(
                    f"round {round_no}/{args.rounds}  {variant:<38}"
                    f" {run['calls_per_second']:>9,.0f} calls/s",
                    file=sys.stderr,
                    flush=True,
                )
    rows = summarise(runs)
    md, js = report.write_files(
        args.output, markdown(result, rows, runs), {**result, "summary": rows, "runs": runs}
    )
    print()
    print(table(rows, "simple"))
    print(f"written: {md.relative_to(ROOT) if md.is_relative_to(ROOT) else md}, {js.name}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench producers", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=int, default=5, help="length of each run (5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every variant (3)")
    parser.add_argument("--clients", type=int, default=16, help="connections (16)")
    report.add_output(parser, "producers")
    args = parser.parse_args(argv)
    if min(args.seconds, args.rounds, args.clients) < 1:
        parser.error("--seconds, --rounds and --clients must be at least 1")
    args.command = " ".join(["scripts/bench producers", *map(shlex.quote, argv or sys.argv[1:])])
    return args


def one_run(
    db: ScratchDatabase, variant: str, running: int, paused: int, args: argparse.Namespace
) -> dict[str, Any]:
    """pgbench for --seconds; for the idle variant, with a worker's connection marked idle
    throughout, reading the notifications as they come. The notifications that connection
    heard are counted."""
    script = "trickle_plain" if variant == PLAIN else "trickle_functions"
    run_id = paused if variant == PAUSED else running
    db.wait_until_idle()
    mark = {BUSY: "busy", IDLE: "idle"}.get(variant)
    with listening_worker(db.url, run_id, mark) as heard:
        result = pgbench_run.run_script(
            db.url, script, args.clients, args.seconds, variables={"run_id": str(run_id)}
        )
    return {
        "variant": variant,
        "calls_per_second": round(result.tps, 1),
        "calls": result.transactions,
        "latency_ms": result.latency_ms,
        "notifications": heard[0],
    }


@contextmanager
def listening_worker(url: str, run_id: int, mark: str | None) -> Iterator[list[int]]:
    """A connection that LISTENs pgcoord_campaigns, marked "idle" or "busy" for the run
    (campaign_idle, campaign_busy, as a CampaignWorker's LISTEN connection is), counting
    the notifications it hears until the block ends."""
    heard = [0]
    stop = threading.Event()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("LISTEN pgcoord_campaigns")
        if mark == "idle":
            campaigns.campaign_idle(conn, run_id)
        elif mark == "busy":
            assert campaigns.campaign_busy(conn, run_id)

        def read() -> None:
            while not stop.is_set():
                heard[0] += sum(1 for _ in conn.notifies(timeout=0.2))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            yield heard
        finally:
            stop.set()
            reader.join()


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant, the median calls/s and its ratio to the plain INSERT's median."""
    medians = {
        variant: statistics.median(r["calls_per_second"] for r in runs if r["variant"] == variant)
        for variant in VARIANTS
    }
    return [
        {
            "variant": variant,
            "calls_per_second": round(medians[variant], 1),
            "of_plain": round(medians[variant] / medians[PLAIN], 2),
            "notifications": sum(r["notifications"] for r in runs if r["variant"] == variant),
            "calls": sum(r["calls"] for r in runs if r["variant"] == variant),
        }
        for variant in VARIANTS
    ]


def table(rows: list[dict[str, Any]], fmt: str) -> str:
    return tabulate(
        [
            [
                r["variant"],
                f"{r['calls_per_second']:,.0f}",
                f"{r['of_plain']:.2f}",
                f"{r['calls']:,}",
                f"{r['notifications']:,}",
            ]
            for r in rows
        ],
        headers=["producer", "calls/s (median)", "of plain", "calls", "notifications heard"],
        tablefmt=fmt,
        colalign=("left", "right", "right", "right", "right"),
        disable_numparse=True,
    )


def markdown(result: dict[str, Any], rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> str:
    settings = result["settings"]
    lines = [
        "# Many producers: one message per call",
        "",
        f"{result['date']}, `{result['command']}`",
        "",
        f"{settings['clients']} pgbench connections, each sending one message per "
        f"statement and transaction, {settings['seconds']} s per run, {settings['rounds']} "
        "rounds interleaved (the order below in odd rounds, reversed in even ones), "
        f"synchronous_commit {settings['synchronous_commit']}. pgcoord: "
        "`campaign_enqueue` of one item (bench/pgbench/trickle_functions.sql); plain: one "
        "INSERT into a row-per-message table (trickle_plain.sql). An enqueue into a running "
        "run skips its NOTIFY while a worker of the run says it is busy (`campaign_busy`, "
        "which a CampaignWorker whose claims come back full holds on its LISTEN "
        "connection) and none is idle (`campaign_idle`); PostgreSQL commits notifying "
        "transactions one at a time. Notifications heard: by the worker's connection, "
        "LISTENing throughout each run (with the workers busy, those of enqueues that "
        "took another's test of the idle mark, an instant's exclusive lock, for a mark).",
        "",
        table(rows, "github"),
        "",
        "## Every run",
        "",
        tabulate(
            [
                [r["round"], r["variant"], f"{r['calls_per_second']:,.0f}", r["latency_ms"]]
                for r in runs
            ],
            headers=["round", "producer", "calls/s", "latency ms"],
            tablefmt="github",
            disable_numparse=True,
        ),
        "",
        "## Setup",
        "",
        *report.setup_lines(result),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
