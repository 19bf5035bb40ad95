"""Messages enqueued one per call: a producer at a fixed pace (pgbench --rate) sending
one message per statement, beside consumers claiming 15 at a time and completing them as
fast as they can; first with nothing else running ("clean"), then while one transaction
holds its snapshot (REPEATABLE READ) and so holds back vacuum ("held"). The shape of a
queue fed by webhooks, and of public queue benchmarks whose producer sends one message
per statement. Two queues, each with its own statements: pgcoord's functions
(campaign_enqueue of one item; campaign_claim and campaign_complete_many) and the plain
row-per-message table of the campaign bench (one INSERT; its ceiling's claim and
completion). A third phase ("backlog, held") drains a backlog so enqueued: --backlog
messages stored one per call beforehand (pgcoord: one campaign_enqueue call each, from a
server-side loop; plain: the same rows), then --drainers consumers work it off while the
snapshot is held, as a queue benchmark at a fixed backlog does.

    python -m bench.trickle [--seconds 30] [--rate 1000] [--consumers 4]
                            [--backlog 30000] [--drainers 8]

Per queue and phase: the enqueues and completions per second, the messages processed
per second in the phase's last fifth, the backlog left, the consumers' claims per second
and their average time, and (held) the dead tuples VACUUM could not remove, per message
enqueued. The server is DATABASE_URL when set, else an embedded PostgreSQL; the bench
works in a scratch database of its own and writes <output>.md and .json. It measures and
has no target: it exits 0.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg import IsolationLevel, sql
from tabulate import tabulate

from . import held_back, pgbench_run, queues, report
from .database import ScratchDatabase, scratch_database, server

ROOT = Path(__file__).resolve().parent.parent

# per queue: the producer's script and the consumers' (bench/pgbench/)
SCRIPTS = {
    queues.PGCOORD.name: ("trickle_functions", "campaign_functions"),
    queues.PLAIN.name: ("trickle_plain", "campaign_plain"),
}
LABELS = {queues.PGCOORD.name: "pgcoord functions", queues.PLAIN.name: "plain table"}
PHASES = ("clean", "held", "backlog, held")

# the backlog of the third phase, enqueued one message per call into a paused run
SINGLES: LiteralString = """
DO $$
BEGIN
    FOR n IN 1..{count} LOOP
        PERFORM pgcoord.campaign_enqueue(
            {run_id}, jsonb_build_array(jsonb_build_object('recipient', '+1555' || n))
        );
    END LOOP;
END;
$$
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = os.environ.get("DATABASE_URL") or None
    with server(url) as server_url, scratch_database(server_url) as db:
        queues.PLAIN.install(db.url)
        db.wait_until_idle()
        result = {
            **report.environment(
                db, "trickle", args.command, "DATABASE_URL" if url else "embedded"
            ),
            "pgbench": pgbench_run.pgbench_version(),
            "settings": {
                "seconds": args.seconds,
                "rate": args.rate,
                "consumers": args.consumers,
                "backlog": args.backlog,
                "drainers": args.drainers,
            },
        }
        runs = [
            (one_run if phase in ("clean", "held") else backlog_run)(db, queue, phase, args)
            for phase in PHASES
            for queue in (queues.PGCOORD, queues.PLAIN)
        ]
    md, js = report.write_files(args.output, markdown(result, runs), {**result, "runs": runs})
    print()
    print(table(runs, "simple"))
    print(f"written: {md.relative_to(ROOT) if md.is_relative_to(ROOT) else md}, {js.name}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench trickle", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=int, default=30, help="length of each phase (30)")
    parser.add_argument("--rate", type=int, default=1000, help="enqueues per second (1000)")
    parser.add_argument("--consumers", type=int, default=4, help="consumer connections (4)")
    parser.add_argument(
        "--backlog", type=int, default=30_000, help="messages of the backlog phase (30000)"
    )
    parser.add_argument(
        "--drainers", type=int, default=8, help="consumer connections draining it (8)"
    )
    report.add_output(parser, "trickle")
    args = parser.parse_args(argv)
    if min(args.seconds, args.rate, args.consumers, args.drainers) < 1:
        parser.error("--seconds, --rate, --consumers and --drainers must be at least 1")
    if args.backlog < 15 * args.drainers:
        parser.error("--backlog must be at least 15 per drainer")
    args.command = " ".join(["scripts/bench trickle", *map(shlex.quote, argv or sys.argv[1:])])
    return args


def one_run(
    db: ScratchDatabase, queue: queues.Queue, phase: str, args: argparse.Namespace
) -> dict[str, Any]:
    """The queue emptied and vacuumed; the producer and the consumers for --seconds (with
    a transaction holding its snapshot throughout in the held phase); then the counts."""
    queue.reset(db.url)
    variables = {}
    if queue is queues.PGCOORD:
        variables["run_id"] = str(queues.pgcoord_load(db.url, 0))
    db.wait_until_idle()
    before = held_back.vacuumed(db, queue.schema)
    producer, consumer = SCRIPTS[queue.name]
    with psycopg.connect(db.url) as holder, ThreadPoolExecutor(2) as pool:
        if phase == "held":
            holder.isolation_level = IsolationLevel.REPEATABLE_READ
            holder.execute("SELECT 1")  # the snapshot, held until the rollback
        started = time.perf_counter()
        marks = [(0.0, processed(db, queue))]  # none: the queue was emptied
        produced = pool.submit(
            pgbench_run.run_script,
            db.url,
            producer,
            1,
            args.seconds,
            variables=variables,
            rate=args.rate,
        )
        consumed = pool.submit(
            pgbench_run.run_script, db.url, consumer, args.consumers, args.seconds
        )
        time.sleep(args.seconds * 0.8)
        marks.append((time.perf_counter() - started, processed(db, queue)))
        enqueues, claims = produced.result(), consumed.result()
        marks.append((time.perf_counter() - started, processed(db, queue)))
        held = held_back.vacuumed(db, queue.schema)
        holder.rollback()
    enqueued = enqueues.transactions
    (_, at_start), (late_at, late), (end_at, at_end) = marks
    done = at_end - at_start
    return {
        **figures(queue, phase, end_at, enqueued, enqueues.tps, done, claims),
        "processed_per_second_last_fifth": round((at_end - late) / (end_at - late_at), 1),
        **dead_tuples(before, held, enqueued),
    }


def backlog_run(
    db: ScratchDatabase, queue: queues.Queue, phase: str, args: argparse.Namespace
) -> dict[str, Any]:
    """--backlog messages stored one per call, then drained by --drainers consumers (each
    claiming as many times as its share of the backlog takes at 15 a claim) while a
    transaction holds its snapshot; then the counts."""
    queue.reset(db.url)
    started = time.perf_counter()
    if queue is queues.PGCOORD:
        run_id = queues.pgcoord_load(db.url, 0, status="paused")
        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute(sql.SQL(SINGLES).format(count=args.backlog, run_id=run_id))
            conn.execute("SELECT pgcoord.campaign_set_status(%s, 'running')", (run_id,))
    else:
        queue.load(db.url, args.backlog)
    loaded = time.perf_counter() - started
    db.wait_until_idle()
    before = held_back.vacuumed(db, queue.schema)
    _, consumer = SCRIPTS[queue.name]
    with psycopg.connect(db.url) as holder:
        holder.isolation_level = IsolationLevel.REPEATABLE_READ
        holder.execute("SELECT 1")  # the snapshot, held until the rollback
        started = time.perf_counter()
        claims = pgbench_run.run_script(
            db.url,
            consumer,
            args.drainers,
            None,
            transactions=-(-args.backlog // (15 * args.drainers)),
        )
        seconds = time.perf_counter() - started
        done = processed(db, queue)
        held = held_back.vacuumed(db, queue.schema)
        holder.rollback()
    return {
        **figures(queue, phase, seconds, args.backlog, args.backlog / loaded, done, claims),
        "processed_per_second_last_fifth": None,
        **dead_tuples(before, held, done),
    }


def figures(
    queue: queues.Queue,
    phase: str,
    seconds: float,
    enqueued: int,
    enqueues_per_second: float,
    done: int,
    claims: pgbench_run.PgbenchResult,
) -> dict[str, Any]:
    """A run's counts and rates."""
    return {
        "queue": queue.name,
        "phase": phase,
        "seconds": round(seconds, 2),
        "enqueued": enqueued,
        "enqueues_per_second": round(enqueues_per_second, 1),
        "processed": done,
        "processed_per_second": round(done / seconds, 1),
        "backlog": enqueued - done,
        "claims_per_second": round(claims.tps, 1),
        "claim_ms": claims.latency_ms,
    }


def dead_tuples(
    before: dict[str, dict[str, int]], held: dict[str, dict[str, int]], messages: int
) -> dict[str, Any]:
    """What VACUUM could not remove at the end of a run, in all and per message."""
    dead = held_back.dead(held) - held_back.dead(before)
    return {
        "dead_tuples": dead,
        "dead_per_message": round(dead / max(messages, 1), 3),
        "tables": held,
    }


def processed(db: ScratchDatabase, queue: queues.Queue) -> int:
    with psycopg.connect(db.url, autocommit=True) as conn:
        return queue.done(conn, 0)


def table(runs: list[dict[str, Any]], fmt: str) -> str:
    rows = [
        [
            LABELS[r["queue"]],
            r["phase"],
            f"{r['enqueues_per_second']:,.0f}",
            f"{r['processed_per_second']:,.0f}",
            "-"
            if r["processed_per_second_last_fifth"] is None
            else f"{r['processed_per_second_last_fifth']:,.0f}",
            f"{r['backlog']:,}",
            f"{r['claims_per_second']:,.0f}",
            f"{r['claim_ms']:.2f}",
            f"{r['dead_per_message']:.3f}",
        ]
        for r in runs
    ]
    return tabulate(
        rows,
        headers=[
            "queue",
            "phase",
            "enqueues/s",
            "processed/s",
            "processed/s, last fifth",
            "backlog left",
            "claims/s",
            "ms per claim",
            "dead tuples per message",
        ],
        tablefmt=fmt,
        colalign=("left", "left", *("right",) * 7),
        disable_numparse=True,
    )


def markdown(result: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    settings = result["settings"]
    lines = [
        "# Messages enqueued one per call",
        "",
        f"{result['date']}, `{result['command']}`",
        "",
        f"One producer connection at {settings['rate']:,} enqueues/s (pgbench --rate), one "
        f"message per statement, beside {settings['consumers']} consumer connections "
        "claiming up to 15 and completing them, as fast as they can, for "
        f"{settings['seconds']} s per phase: clean, then while a REPEATABLE READ "
        "transaction holds its snapshot (held). Processed: completed in the phase; the "
        "last fifth shows where a queue was heading. Dead tuples: what VACUUM could not "
        "remove at the end of the phase, per message enqueued (clean: what was left "
        "since the last autovacuum). Backlog, held: "
        f"{settings['backlog']:,} messages enqueued one per call beforehand (enqueues/s: "
        "how fast they were stored), drained by "
        f"{settings['drainers']} consumers while the snapshot is held; processed/s is "
        "the drain's, dead tuples are per message processed.",
        "",
        table(runs, "github"),
        "",
        "## Setup",
        "",
        *report.setup_lines(result),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
