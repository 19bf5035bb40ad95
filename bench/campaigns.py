"""Campaign send queue: messages per second through CampaignWorker processes with a no-op
handler (batch 15, and again with its batch tuned), beside the plain-SQL ceiling (pgbench
claiming 15 with SKIP LOCKED and completing them, with prepared statements and again
unprepared, as the driver sends every statement), the SQL functions alone (pgbench),
PgQueuer (its batch tuned) and Procrastinate, at 1 and 8 workers, interleaved in one run.
Also: enqueue of 100,000 messages in one call; per message at batch 15 (8 workers, a
drained backlog): transactions, WAL flushes, WAL bytes and the workers' CPU; the dead
tuples left while a long transaction holds back vacuum (bench/held_back.py); with --size,
the queue's size at its largest after the first 100,000 of 1,000,000 messages against its
size during them, with the server's autovacuum_naptime and with the 2 s docs/vacuum.md
recommends (the target's).

    python -m bench.campaigns [--seconds 4] [--rounds 3] [--workers 1,8] [--no-peers] [--size]

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
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from pgcoord import campaigns, config

from . import campaigns_report, held_back, pgbench_run, queues, report
from .campaigns_report import (
    FUNCTIONS,
    PGCOORD,
    PGQUEUER,
    PLAIN,
    PROCRASTINATE,
    PSYCOPG,
    TUNED,
    UNPREPARED,
    CostRun,
    Run,
    best_batch,
)
from .database import ScratchDatabase, scratch_database, server
from .fleet import Fleet
from .horizon import HorizonWatch

ROOT = Path(__file__).resolve().parent.parent

BATCH = 15  # the campaign worker's claim and the ceiling's
CONCURRENCY = 8  # handlers at once per worker process (CampaignWorker's default)
QUEUES = {
    PLAIN: queues.PLAIN,
    UNPREPARED: queues.PLAIN,
    FUNCTIONS: queues.PGCOORD,
    PSYCOPG: queues.PLAIN,
    PGCOORD: queues.PGCOORD,
    TUNED: queues.PGCOORD,
    PGQUEUER: queues.PGQUEUER,
    PROCRASTINATE: queues.PROCRASTINATE,
}
SCRIPTS = {PLAIN: "campaign_plain", UNPREPARED: "campaign_plain", FUNCTIONS: "campaign_functions"}
PROTOCOLS = {UNPREPARED: "extended"}  # pgbench's --protocol; prepared otherwise
# the worker each fleet runs (bench/queue_worker.py)
SYSTEMS = {
    PSYCOPG: "psycopg",
    PGCOORD: "pgcoord",
    TUNED: "pgcoord",
    PGQUEUER: "pgqueuer",
    PROCRASTINATE: "procrastinate",
}

# a run's backlog: BACKLOG_MARGIN times what it is expected to take in warm-up + window +
# a second, at the rate expected for the variant and worker count: this guess (messages/s)
# or the best measured so far when higher, doubled after a run whose backlog ran dry
BACKLOG_MARGIN = 2.0
GUESS = {
    PLAIN: 35_000,
    UNPREPARED: 25_000,
    FUNCTIONS: 40_000,
    PSYCOPG: 20_000,
    PGCOORD: 15_000,
    TUNED: 30_000,
    PGQUEUER: 15_000,
    PROCRASTINATE: 1_000,
}

DRAIN_TIMEOUT = 300.0  # the most a backlog processed to its end may take, s
# the size part runs again with the autovacuum_naptime docs/vacuum.md recommends for a
# database that holds a busy campaign queue: the target's measurement
SIZE_NAPTIME = f"{config.AUTOVACUUM_NAPTIME}s"  # as SHOW prints it
# a value of autovacuum_naptime set by an earlier ALTER SYSTEM, to put back after
AUTO_CONF_NAPTIME: LiteralString = """
SELECT setting FROM pg_catalog.pg_file_settings
WHERE name = 'autovacuum_naptime' AND sourcefile LIKE '%postgresql.auto.conf'
ORDER BY seqno DESC
LIMIT 1
"""
PGCOORD_SIZES: LiteralString = """
SELECT
    c.relname,
    pg_catalog.pg_table_size(c.oid),
    pg_catalog.pg_indexes_size(c.oid),
    s.n_live_tup,
    s.n_dead_tup,
    s.autovacuum_count,
    s.autoanalyze_count
FROM pg_catalog.pg_class AS c
INNER JOIN pg_catalog.pg_stat_user_tables AS s ON c.oid = s.relid
WHERE s.schemaname = 'pgcoord' AND c.relname LIKE 'campaign%%'
ORDER BY c.relname
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = os.environ.get("DATABASE_URL") or None
    with server(url) as server_url, scratch_database(server_url) as db:
        result = describe(db, args, "DATABASE_URL" if url else "embedded")
        result["peers"] = install(db, args)
        args.variants = [v for v in campaigns_report.VARIANTS if usable(v, result["peers"])]
        result["enqueue"] = measure_enqueue(db, args)
        result["pgcoord_tuning"] = tune(db, args, TUNED, args.pgcoord_batches)
        result["pgqueuer_tuning"] = tune_pgqueuer(db, args, result["peers"])
        tunings = {TUNED: result["pgcoord_tuning"], PGQUEUER: result["pgqueuer_tuning"]}
        runs = measure(db, args, result["peers"], tunings)
        result["costs"] = [run.as_dict() for run in measure_costs(db, args)]
        if args.held_back_messages:
            result["held_back"] = measure_held_back(db, args, result)
        if args.size:
            result["size"] = measure_size(db, args)
            result["size_naptime"] = measure_size_with_naptime(server_url, db, args)
    rows = campaigns_report.summarise(runs)
    found = campaigns_report.targets(rows, runs, result)
    md, js = campaigns_report.write(args.output, result, rows, runs, found)

    summary = campaigns_report.summary_table(rows, "simple", best_batch(result["pgcoord_tuning"]))
    report.print_outcome(summary, found, md, js, ROOT)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench campaigns", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=int, default=4, help="measured window of each run (4)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every variant (3)")
    parser.add_argument(
        "--workers",
        type=report.integers,
        default=[1, 8],
        help="worker counts (processes, or pgbench connections), comma-separated (1,8)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="time from the backlog's arrival to the window of a worker run, s (1)",
    )
    queues.add_no_peers(parser)
    parser.add_argument(
        "--pgqueuer-batches",
        type=report.integers,
        default=[10, 50, 100, 250, 500, 1000, 2000, 4000],
        help="PgQueuer batch sizes tried at the largest worker count; the best runs the "
        "rounds (10,50,100,250,500,1000,2000,4000: its messages/s grew up to 1,000 or "
        "2,000)",
    )
    parser.add_argument(
        "--pgcoord-batches",
        type=report.integers,
        default=[15, 60, 120, 240, 480, 960],
        help="campaign worker batch sizes tried at the largest worker count; the best runs "
        "the rounds beside batch 15 (15,60,120,240,480,960: multiples of 15, the queue's "
        "groups)",
    )
    parser.add_argument(
        "--enqueue-messages",
        type=int,
        default=100_000,
        help="messages of the one-call enqueue (100000)",
    )
    parser.add_argument(
        "--enqueue-rounds", type=int, default=3, help="rounds of the one-call enqueue (3)"
    )
    parser.add_argument(
        "--cost-messages",
        type=int,
        default=30_000,
        help="backlog drained by the 8 workers to count the cost per message (30000)",
    )
    parser.add_argument(
        "--cost-rounds", type=int, default=2, help="rounds of the cost per message (2)"
    )
    parser.add_argument(
        "--held-back-messages",
        type=int,
        default=30_000,
        help="messages processed through each queue while a transaction holds back "
        "vacuum, to count the dead tuples left; 0: not measured (30000)",
    )
    parser.add_argument(
        "--size",
        action="store_true",
        help="also process --size-messages (in chunks of --size-chunk) and compare the "
        "queue's largest size after the first chunk with its size during it, with the "
        f"server's autovacuum_naptime and again with {SIZE_NAPTIME} (set with ALTER SYSTEM "
        "for the length of it, for every database of the server, then put back; minutes)",
    )
    parser.add_argument("--size-messages", type=int, default=1_000_000, help="(1000000)")
    parser.add_argument("--size-chunk", type=int, default=100_000, help="(100000)")
    report.add_output(parser, "campaigns")
    args = parser.parse_args(argv)
    counts = [
        args.seconds,
        args.rounds,
        min(args.workers),
        args.enqueue_messages,
        args.enqueue_rounds,
        args.cost_messages,
        args.cost_rounds,
        min(args.pgqueuer_batches),
        min(args.pgcoord_batches),
        args.size_chunk,
    ]
    if args.held_back_messages < 0:
        parser.error("--held-back-messages must not be negative")
    if min(counts) < 1 or args.warmup < 0 or args.size_messages < args.size_chunk:
        parser.error("counts must be at least 1, --warmup not negative, size >= chunk")
    args.command = " ".join(["scripts/bench campaigns", *map(shlex.quote, argv or sys.argv[1:])])
    args.top = max(args.workers)
    return args


# -- the peers ------------------------------------------------------------------------


def install(db: ScratchDatabase, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Install the plain table and each peer's schema; for each peer, its version or why it
    cannot run here (then the bench goes on without it)."""
    queues.PLAIN.install(db.url)
    peers = queues.install_peers(db.url, args.peers)
    db.wait_until_idle()
    return peers


def usable(variant: str, peers: dict[str, dict[str, Any]]) -> bool:
    return variant not in peers or peers[variant]["status"] == "ran"


def drop_peer(peers: dict[str, dict[str, Any]], name: str, error: Exception) -> None:
    peers[name] = {
        **peers[name],
        "status": "failed",
        "reason": f"a run failed: {type(error).__name__}: {str(error)[-1500:]}",
    }
    print(f"{name}: {peers[name]['reason']}", file=sys.stderr, flush=True)


# -- throughput -----------------------------------------------------------------------


def measure(
    db: ScratchDatabase,
    args: argparse.Namespace,
    peers: dict[str, dict[str, Any]],
    tunings: dict[str, list[dict[str, Any]]],
) -> list[Run]:
    """Every round runs every worker count, and at each count every variant: in the
    order of VARIANTS in odd rounds, reversed in even ones. A variant whose batch was
    tuned runs the best batch, its backlogs starting from its best rate while tuned."""
    expected: dict[tuple[str, int], float] = {}
    batches: dict[str, int] = {}
    for variant, tuning in tunings.items():
        if tuning:
            best = max(t["per_second"] * (2 if t["dry"] else 1) for t in tuning)
            expected[(variant, args.top)] = max(best, GUESS[variant])
            batches[variant] = best_batch(tuning) or BATCH
    runs: list[Run] = []
    for round_no in range(1, args.rounds + 1):
        for workers in args.workers:
            order = [v for v in args.variants if usable(v, peers)]
            if round_no % 2 == 0:
                order.reverse()
            for variant in order:
                if not usable(variant, peers):
                    continue
                backlog = backlog_for(variant, workers, args, expected)
                batch = batches.get(variant, BATCH)
                try:
                    run = one_run(db, variant, workers, round_no, backlog, args, batch)
                except Exception as exc:
                    if variant not in peers:
                        raise
                    drop_peer(peers, variant, exc)
                    continue
                runs.append(run)
                learn(expected, run)
                progress(run, f"round {round_no}/{args.rounds}")
    return runs


def backlog_for(
    variant: str, workers: int, args: argparse.Namespace, expected: dict[tuple[str, int], float]
) -> int:
    rate = expected.get((variant, workers), GUESS[variant])
    # pgbench has no warm-up: it starts on the backlog stored before
    seconds = (0.0 if variant in SCRIPTS else float(args.warmup)) + float(args.seconds) + 1.0
    return max(1_000, math.ceil(BACKLOG_MARGIN * seconds * rate))


def learn(expected: dict[tuple[str, int], float], run: Run) -> None:
    """The rate to size the next backlog of the run's variant and worker count for: the
    best so far; a backlog that ran dry says only that the rate was higher."""
    key = (run.variant, run.workers)
    best = max(expected.get(key, GUESS[run.variant]), run.per_second)
    expected[key] = 2 * best if run.detail.get("dry") else best


def progress(run: Run, label: str) -> None:
    print(
        f"{label:<11}  workers {run.workers:>2}  {run.variant:<14}"
        f" {run.per_second:>9,.0f} messages/s"
        + ("  (the backlog ran dry)" if run.detail.get("dry") else "")
        + (
            f"  {run.detail['rows_read_per_message']} rows read per message"
            f" {run.detail['rows_read_by']}"
            if "rows_read_per_message" in run.detail
            else ""
        )
        + (
            f"  (a snapshot held {run.detail['longest_snapshot_s']} s:"
            f" {run.detail['snapshot_holder']})"
            if run.detail.get("longest_snapshot_s", 0) >= 1
            else ""
        ),
        file=sys.stderr,
        flush=True,
    )


def one_run(
    db: ScratchDatabase,
    variant: str,
    workers: int,
    round_no: int,
    backlog: int,
    args: argparse.Namespace,
    batch: int,
) -> Run:
    if variant in SCRIPTS:
        return pgbench_run_of(db, variant, workers, round_no, backlog, args)
    return fleet_run(db, variant, workers, round_no, backlog, args, batch)


def pgbench_run_of(
    db: ScratchDatabase,
    variant: str,
    workers: int,
    round_no: int,
    backlog: int,
    args: argparse.Namespace,
) -> Run:
    """pgbench with `workers` connections for the window, from a backlog stored before."""
    queue = QUEUES[variant]
    queue.reset(db.url)
    queue.load(db.url, backlog)
    db.wait_until_idle()
    read = queue.rows_read(db.url)
    before, cpu_before = db.committed_transactions(), db.server_cpu_seconds()
    with HorizonWatch(db.server_url, db.name) as horizon:
        result = pgbench_run.run_script(
            db.url,
            SCRIPTS[variant],
            workers,
            args.seconds,
            protocol=PROTOCOLS.get(variant, "prepared"),
        )
    db.wait_until_idle()
    transactions, cpu_after = db.committed_transactions() - before, db.server_cpu_seconds()
    with psycopg.connect(db.url, autocommit=True) as conn:
        done, counting = queue.counted(conn, backlog)
    read = queue.rows_read(db.url) - read - counting
    queue.reset(db.url)  # nothing left for autovacuum to work on during the next run
    # a script run is one claim and, unless it came back empty, one complete
    rate = result.tps * done / max(result.transactions, 1)
    detail: dict[str, Any] = {
        "backlog": backlog,
        "dry": done >= backlog,
        "claims": result.transactions,
        "transactions_per_message": round(transactions / max(done, 1), 4),
        "client_cpu_us": round(1e6 * result.client_cpu / max(done, 1), 1),
        **rows_read(read, done),
        **horizon.detail(),
    }
    if cpu_before is not None and cpu_after is not None:
        detail["server_cpu_us"] = round(1e6 * (cpu_after - cpu_before) / max(done, 1), 1)
    return Run(variant, workers, round_no, rate, done, detail)


def fleet_run(
    db: ScratchDatabase,
    variant: str,
    workers: int,
    round_no: int,
    backlog: int,
    args: argparse.Namespace,
    batch: int,
) -> Run:
    """`workers` worker processes, started on an empty queue; once all are ready the
    backlog arrives in one enqueue (per 100,000 messages), and the window starts
    `warmup` seconds after it has."""
    queue = QUEUES[variant]
    queue.reset(db.url)
    db.wait_until_idle()
    read = queue.rows_read(db.url)
    horizon = HorizonWatch(db.server_url, db.name)
    with (
        Fleet(SYSTEMS[variant], db.url, workers, batch=batch, concurrency=CONCURRENCY) as fleet,
        psycopg.connect(db.url, autocommit=True) as conn,
    ):
        loading = time.perf_counter()
        queue.load(db.url, backlog)
        arrived = time.perf_counter()
        with horizon:  # from the backlog's arrival (its load is one long transaction)
            time.sleep(args.warmup)
            first = sample(db, conn, queue, backlog, fleet)
            time.sleep(args.seconds)
            last = sample(db, conn, queue, backlog, fleet)
    db.wait_until_idle()
    # from the backlog's arrival to the workers' exit: all they have done
    read = queue.rows_read(db.url) - read - first["counting"] - last["counting"]
    with psycopg.connect(db.url, autocommit=True) as conn:
        processed = queue.done(conn, backlog)
    # nothing left for autovacuum to work on during the next run: its VACUUM ANALYZE of
    # another queue's tables holds a snapshot for seconds, and with it the horizon of
    # every table in the database (seen by bench/horizon.py)
    queue.reset(db.url)
    messages = last["done"] - first["done"]
    seconds = last["time"] - first["time"]
    detail: dict[str, Any] = {
        "backlog": backlog,
        "dry": last["done"] >= backlog,
        "load_seconds": round(arrived - loading, 3),
        "client_cpu_us": round(1e6 * (last["cpu"] - first["cpu"]) / max(messages, 1), 1),
        # pg_stat_database lags up to a second behind each backend: an estimate
        "transactions_per_message": round(
            (last["transactions"] - first["transactions"]) / max(messages, 1), 4
        ),
        "wal_bytes_per_message": round((last["wal"] - first["wal"]) / max(messages, 1), 1),
        **rows_read(read, processed),
        **horizon.detail(),
    }
    if variant in (TUNED, PGQUEUER):
        detail["batch"] = batch
    if first["server_cpu"] is not None and last["server_cpu"] is not None:
        detail["server_cpu_us"] = round(
            1e6 * (last["server_cpu"] - first["server_cpu"]) / max(messages, 1), 1
        )
    return Run(variant, workers, round_no, messages / seconds, messages, detail)


def rows_read(read: Counter[str], messages: int) -> dict[str, Any]:
    """Rows the queue's tables and indexes gave to the run's scans (the bench's own counts
    left out), per message processed: in all, and by the three that gave the most."""
    per = max(messages, 1)
    return {
        "rows_read_per_message": round(read.total() / per, 2),
        "rows_read_by": {name: round(n / per, 2) for name, n in read.most_common(3)},
    }


def sample(
    db: ScratchDatabase,
    conn: psycopg.Connection[Any],
    queue: queues.Queue,
    backlog: int,
    fleet: Fleet,
) -> dict[str, Any]:
    done, counting = queue.counted(conn, backlog)
    return {
        "time": time.perf_counter(),
        "done": done,
        "counting": counting,  # what the count read, left out of the run's rows read
        "cpu": fleet.cpu_seconds(),
        "server_cpu": db.server_cpu_seconds(),
        "transactions": db.committed_transactions(),
        "wal": db.wal_position(),
    }


def tune(
    db: ScratchDatabase,
    args: argparse.Namespace,
    variant: str,
    batches: list[int],
    *,
    keep_going: bool = False,
) -> list[dict[str, Any]]:
    """One run of `variant` per batch size at the largest worker count, each backlog sized
    for the best rate so far; the best batch runs the rounds. With `keep_going`, a batch
    whose run failed (a peer's workers that would not stop in time) is recorded as failed
    (0 messages/s) and the others are tried; the error is raised only when all failed."""
    expected: dict[tuple[str, int], float] = {}
    tried: list[dict[str, Any]] = []
    for batch in batches:
        backlog = backlog_for(variant, args.top, args, expected)
        try:
            run = fleet_run(db, variant, args.top, 0, backlog, args, batch)
        except Exception as exc:
            if not keep_going:
                raise
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            print(f"batch {batch}: {variant} failed: {reason}", file=sys.stderr, flush=True)
            tried.append({"batch": batch, "per_second": 0.0, "dry": False, "failed": reason})
            if all("failed" in t for t in tried) and len(tried) == len(batches):
                raise
            continue
        learn(expected, run)
        progress(run, f"batch {batch}")
        tried.append({"batch": batch, "per_second": run.per_second, "dry": run.detail["dry"]})
    return tried


def tune_pgqueuer(
    db: ScratchDatabase, args: argparse.Namespace, peers: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """tune PgQueuer, when it runs here (a failed run leaves it out)."""
    if not usable(PGQUEUER, peers):
        return []
    try:
        tried = tune(db, args, PGQUEUER, args.pgqueuer_batches, keep_going=True)
    except Exception as exc:
        drop_peer(peers, PGQUEUER, exc)
        return []
    peers[PGQUEUER]["batch"] = best_batch(tried)
    return tried


# -- enqueue --------------------------------------------------------------------------


def measure_enqueue(db: ScratchDatabase, args: argparse.Namespace) -> list[dict[str, Any]]:
    """campaign_enqueue of --enqueue-messages items in one call through the driver, into
    an empty queue, each round: the call's time (the JSON built by the driver and sent,
    the statement, the commit), and the client's CPU in it."""
    found = []
    for round_no in range(1, args.enqueue_rounds + 1):
        queues.PGCOORD.reset(db.url)
        db.wait_until_idle()
        items = queues.items(1, args.enqueue_messages)
        with psycopg.connect(db.url, autocommit=True) as conn:
            run_id = campaigns.campaign_create(conn, "enqueue")
            wal = db.wal_position()
            wall, cpu = time.perf_counter(), time.process_time()
            count = campaigns.campaign_enqueue(conn, run_id, items)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            wal = db.wal_position() - wal
        assert count == args.enqueue_messages, count
        found.append(
            {
                "round": round_no,
                "messages": count,
                "seconds": round(wall, 4),
                "per_second": count / wall,
                "client_cpu_seconds": round(cpu, 4),
                "wal_bytes_per_message": round(wal / count, 1),
            }
        )
        print(
            f"enqueue {round_no}/{args.enqueue_rounds}  {count:,} messages in one call:"
            f" {wall:.3f} s, {count / wall:,.0f} messages/s",
            file=sys.stderr,
            flush=True,
        )
    queues.PGCOORD.reset(db.url)
    return found


# -- cost per message -----------------------------------------------------------------


def settle(db: ScratchDatabase, timeout: float = 3.0) -> None:
    """Wait until the WAL flush counter holds still for half a second (the WAL writer
    reports its figures on its own schedule), at most `timeout`: on a server shared
    with other sessions it may never hold still."""
    deadline = time.monotonic() + timeout
    last = db.wal_flushes()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = db.wal_flushes()
        if now == last:
            return
        last = now


def measure_costs(db: ScratchDatabase, args: argparse.Namespace) -> list[CostRun]:
    """The fleet's own start and stop with nothing to do, then --cost-rounds drains of a
    backlog of --cost-messages by the campaign workers at the largest worker count."""
    found = [cost_run(db, args, 0)]
    for _ in range(args.cost_rounds):
        found.append(cost_run(db, args, args.cost_messages))
        print(
            f"cost: {found[-1].messages:,} messages drained by {args.top} workers"
            f" at {found[-1].per_second:,.0f} messages/s",
            file=sys.stderr,
            flush=True,
        )
    return found


def cost_run(db: ScratchDatabase, args: argparse.Namespace, messages: int) -> CostRun:
    """Enqueue `messages` into a paused run; start the workers; resume the run and wait
    until every message is sent; stop the workers. Transactions and WAL flushes are read
    from the server's statistics before the start and after the workers have exited
    (a backend reports its last figures when it exits), less this bench's own
    statements (the resume and the polls); WAL bytes, the workers' CPU and the server's
    CPU from the resume to the last message sent."""
    queues.PGCOORD.reset(db.url)
    run_id = queues.pgcoord_load(db.url, messages, status="paused")
    db.wait_until_idle()
    settle(db)
    transactions, flushes = db.committed_transactions(), db.wal_flushes()
    own = 0  # this bench's statements in the scratch database
    with (
        Fleet(PGCOORD, db.url, args.top, batch=BATCH, concurrency=CONCURRENCY) as fleet,
        psycopg.connect(db.url, autocommit=True) as conn,
    ):
        wal, cpu, server_cpu = db.wal_position(), fleet.cpu_seconds(), db.server_cpu_seconds()
        started = time.perf_counter()
        campaigns.campaign_set_status(conn, run_id, "running")
        own += 1
        if messages == 0:
            time.sleep(1.0)
        while messages:
            done = queues.PGCOORD.done(conn, messages)
            own += 1
            if done >= messages:
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        wal = db.wal_position() - wal
        cpu = fleet.cpu_seconds() - cpu
        server_cpu_after = db.server_cpu_seconds()
    db.wait_until_idle()
    settle(db)
    return CostRun(
        messages=messages,
        seconds=seconds,
        transactions=db.committed_transactions() - transactions - own,
        flushes=db.wal_flushes() - flushes,
        wal_bytes=wal,
        client_cpu=cpu,
        server_cpu=None
        if server_cpu is None or server_cpu_after is None
        else server_cpu_after - server_cpu,
        bench_statements=own,
    )


# -- dead tuples while a long transaction holds back vacuum ---------------------------


def measure_held_back(
    db: ScratchDatabase, args: argparse.Namespace, result: dict[str, Any]
) -> list[dict[str, Any]]:
    """bench/held_back.py over the SQL functions and the plain SQL (pgbench), and
    PgQueuer's workers at their best batch when it runs here."""
    clients = held_back.CONNECTIONS
    processors: list[tuple[queues.Queue, held_back.Process]] = [
        (queues.PGCOORD, partial(drain_pgbench, script=SCRIPTS[FUNCTIONS], clients=clients)),
        (queues.PLAIN, partial(drain_pgbench, script=SCRIPTS[PLAIN], clients=clients)),
    ]
    if usable(PGQUEUER, result["peers"]):
        batch = best_batch(result["pgqueuer_tuning"]) or BATCH
        drain = partial(drain_workers, system=SYSTEMS[PGQUEUER], workers=clients, batch=batch)
        processors.append((queues.PGQUEUER, drain))
    found = held_back.measure(db, args.held_back_messages, processors)
    for r in found:
        print(
            f"held back: {r['queue']}, {held_back.dead(r['held']) - held_back.dead(r['before']):,}"
            f" dead tuples after {r['messages']:,} messages",
            file=sys.stderr,
            flush=True,
        )
    return found


def drain_pgbench(
    db: ScratchDatabase, queue: queues.Queue, messages: int, *, script: str, clients: int
) -> int:
    """pgbench running `script` on `clients` connections until `messages` of the queue
    are processed (each run sized for what is left); how many were, at the end."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while (done := processed(db, queue, messages)) < messages:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{queue.name}: {done} of {messages} after {DRAIN_TIMEOUT} s")
        per_client = math.ceil((messages - done) / BATCH / clients) + 2
        pgbench_run.run_script(db.url, script, clients, None, transactions=per_client)
    return done


def drain_workers(
    db: ScratchDatabase,
    queue: queues.Queue,
    messages: int,
    *,
    system: str,
    workers: int,
    batch: int,
) -> int:
    """`workers` worker processes of `system` (bench/queue_worker.py) until `messages` of
    the queue are processed, then stopped; how many were."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    with Fleet(system, db.url, workers, batch=batch, concurrency=CONCURRENCY):
        while (done := processed(db, queue, messages)) < messages:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{queue.name}: {done} of {messages} after {DRAIN_TIMEOUT} s")
            time.sleep(0.05)
    return done


def processed(db: ScratchDatabase, queue: queues.Queue, messages: int) -> int:
    with psycopg.connect(db.url, autocommit=True) as conn:
        return queue.done(conn, messages)


# -- size after 1,000,000 -------------------------------------------------------------


def measure_size(db: ScratchDatabase, args: argparse.Namespace) -> dict[str, Any]:
    """Enqueue --size-chunk messages into one running run (one call), process them all
    with pgbench through the SQL functions (8 connections claiming 15 and completing them
    with campaign_complete_many, as the workers do), and again, until --size-messages
    have been sent; the tables' sizes after the first chunk and after the last, with the
    schema's autovacuum settings and the server's (recorded)."""
    queues.PGCOORD.reset(db.url)
    db.wait_until_idle()
    with psycopg.connect(db.url, autocommit=True) as conn:
        run_id = campaigns.campaign_create(conn, "size")
        autovacuum, naptime = show(conn, "autovacuum"), show(conn, "autovacuum_naptime")
    chunks = []
    sent = 0
    started = time.perf_counter()
    for chunk in range(1, args.size_messages // args.size_chunk + 1):
        with psycopg.connect(db.url, autocommit=True) as conn:
            wall = time.perf_counter()
            campaigns.campaign_enqueue(conn, run_id, queues.items(sent + 1, args.size_chunk))
            enqueue_seconds = time.perf_counter() - wall
        db.wait_until_idle()  # the enqueue's backend has reported its figures
        with psycopg.connect(db.url, autocommit=True) as conn:
            with_backlog = sizes(conn)
        target = sent + args.size_chunk
        sent = drain_pgbench(db, queues.PGCOORD, target, script=SCRIPTS[FUNCTIONS], clients=8)
        db.wait_until_idle()
        with psycopg.connect(db.url, autocommit=True) as conn:
            after = sizes(conn)
        chunks.append(
            {
                "chunk": chunk,
                "sent": sent,
                "enqueue_seconds": round(enqueue_seconds, 3),
                "with_backlog": with_backlog,
                "processed": after,
                "elapsed": round(time.perf_counter() - started, 1),
            }
        )
        queue_size = sum(after["campaign_queue"][k] for k in ("table", "indexes"))
        print(
            f"size: {sent:,} sent; campaign_queue {queue_size / 1024:,.0f} kB, "
            f"{after['campaign_queue']['dead']} dead tuples",
            file=sys.stderr,
            flush=True,
        )
    return {
        "autovacuum": autovacuum,
        "autovacuum_naptime": naptime,
        "messages": sent,
        "chunk": args.size_chunk,
        "processing": "pgbench, 8 connections, bench/pgbench/campaign_functions.sql",
        "chunks": chunks,
    }


def measure_size_with_naptime(
    server_url: str, db: ScratchDatabase, args: argparse.Namespace
) -> dict[str, Any]:
    """measure_size again with autovacuum_naptime = SIZE_NAPTIME, as docs/vacuum.md
    recommends: set with ALTER SYSTEM for the length of it (for every database of the
    server), then put back as it was. Not measured when autovacuum is off on the server
    (the naptime would change nothing) or the role may not change the setting."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        if show(conn, "autovacuum") != "on":
            return {
                "autovacuum_naptime": SIZE_NAPTIME,
                "skipped": "autovacuum is off on this server",
            }
        try:
            row = conn.execute(AUTO_CONF_NAPTIME).fetchone()
            conn.execute(
                sql.SQL("ALTER SYSTEM SET autovacuum_naptime = {}").format(
                    sql.Literal(SIZE_NAPTIME)
                )
            )
        except psycopg.errors.InsufficientPrivilege as exc:
            return {"autovacuum_naptime": SIZE_NAPTIME, "skipped": str(exc).strip()}
        prior = None if row is None else str(row[0])
    try:
        if reload(server_url, lambda naptime: naptime == SIZE_NAPTIME) != SIZE_NAPTIME:
            raise RuntimeError(f"autovacuum_naptime still not {SIZE_NAPTIME} after a reload")
        found = measure_size(db, args)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            if prior is None:
                conn.execute("ALTER SYSTEM RESET autovacuum_naptime")
            else:
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET autovacuum_naptime = {}").format(sql.Literal(prior))
                )
        now = reload(server_url, lambda naptime: naptime != SIZE_NAPTIME)
        print(f"size: autovacuum_naptime back to {now}", file=sys.stderr, flush=True)
    return found


def reload(server_url: str, done: Callable[[str], bool], timeout: float = 10.0) -> str:
    """pg_reload_conf, then wait until a new session's autovacuum_naptime is `done` (the
    server reloads its files in the background), at most `timeout`; return it."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute("SELECT pg_catalog.pg_reload_conf()")
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(server_url, autocommit=True) as conn:
            naptime = show(conn, "autovacuum_naptime")
        if done(naptime) or time.monotonic() > deadline:
            return naptime
        time.sleep(0.1)


def show(conn: psycopg.Connection[Any], setting: LiteralString) -> str:
    row = conn.execute(f"SHOW {setting}").fetchone()
    assert row is not None
    return str(row[0])


def sizes(conn: psycopg.Connection[Any]) -> dict[str, dict[str, int]]:
    """Each campaign table: its size (with TOAST), its indexes' size, live and dead
    tuples, autovacuum and autoanalyze runs so far (the statistics lag up to a second)."""
    return {
        str(name): {
            "table": int(table),
            "indexes": int(indexes),
            "live": int(live),
            "dead": int(dead),
            "autovacuums": int(vacuums),
            "autoanalyzes": int(analyzes),
        }
        for name, table, indexes, live, dead, vacuums, analyzes in conn.execute(
            PGCOORD_SIZES
        ).fetchall()
    }


def describe(db: ScratchDatabase, args: argparse.Namespace, kind: str) -> dict[str, Any]:
    return {
        **report.environment(db, "campaigns", args.command, kind),
        "pgbench": pgbench_run.pgbench_version(),
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "workers": args.workers,
            "batch": BATCH,
            "concurrency": CONCURRENCY,
            "backlog_margin": BACKLOG_MARGIN,
            "pgqueuer_batches": args.pgqueuer_batches,
            "pgcoord_batches": args.pgcoord_batches,
            "enqueue_messages": args.enqueue_messages,
            "enqueue_rounds": args.enqueue_rounds,
            "cost_messages": args.cost_messages,
            "cost_rounds": args.cost_rounds,
            "held_back_messages": args.held_back_messages,
            "size": args.size,
            "size_messages": args.size_messages,
            "size_chunk": args.size_chunk,
        },
        "autovacuum": autovacuum_settings(db),
    }


def autovacuum_settings(db: ScratchDatabase) -> dict[str, Any]:
    """The server's autovacuum settings and the campaign tables' own (reloptions)."""
    with psycopg.connect(db.url, autocommit=True) as conn:
        server_side: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_catalog.pg_settings"
                " WHERE name IN ('autovacuum', 'autovacuum_naptime',"
                " 'autovacuum_vacuum_threshold', 'autovacuum_vacuum_scale_factor',"
                " 'autovacuum_vacuum_cost_delay') ORDER BY name"
            ).fetchall()
        )
        tables: dict[str, str] = dict(
            conn.execute(
                "SELECT c.relname, coalesce(array_to_string(c.reloptions, ', '), '')"
                " FROM pg_catalog.pg_class AS c"
                " INNER JOIN pg_catalog.pg_namespace AS n ON c.relnamespace = n.oid"
                " WHERE n.nspname = 'pgcoord' AND c.relkind = 'r'"
                " AND c.relname LIKE 'campaign%' ORDER BY c.relname"
            ).fetchall()
        )
    db.wait_until_idle()
    return {"server": server_side, "tables": tables}


if __name__ == "__main__":
    sys.exit(main())
