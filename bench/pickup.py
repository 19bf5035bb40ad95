"""Pickup: how soon an idle fleet sends a message once it is due. --workers worker
processes wait on an empty queue; one message at a time is enqueued, either due now
(timed from the enqueue's return until the message is counted done) or due --delay
seconds later (timed from that instant). The campaign worker beside PgQueuer and
Procrastinate, each with its defaults and LISTEN/NOTIFY on, interleaved by rounds.

    python -m bench.pickup [--rounds 3] [--samples 20] [--scheduled 3] [--delay 2]

The server is DATABASE_URL when set, else an embedded PostgreSQL. The bench works in a
scratch database of its own, drops it at the end, and writes <output>.md and .json.
It measures; it exits 0 whether or not its checks hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

from pgcoord import campaigns
from pgcoord.demo.server import server_clock

from . import pickup_report, queues, report
from .database import ScratchDatabase, scratch_database, server
from .fleet import Fleet
from .pickup_report import NOW, SCHEDULED, Sample

ROOT = Path(__file__).resolve().parent.parent

SYSTEMS = [queues.PGCOORD, queues.PGQUEUER, queues.PROCRASTINATE]
# each worker with its defaults: the campaign worker's batch and concurrency, PgQueuer's
# batch_size (QueueManager.run), Procrastinate's concurrency (it fetches one at a time)
BATCH = {queues.PGCOORD.name: 15, queues.PGQUEUER.name: 10, queues.PROCRASTINATE.name: 1}
CONCURRENCY = 8
WARMUP = 2  # messages due now sent first and not counted: every listener is up
POLL = 0.001  # seconds between looks at the queue while a message waits
NOW_TIMEOUT = 10.0  # the most a message due now may take, s
LATE_TIMEOUT = 40.0  # the most past its due time a scheduled one may take (PgQueuer: 30 s)
GAP = (0.02, 0.2)  # seconds between two samples, drawn: no rhythm a worker's timer meets


class Enqueuer:
    """Enqueues one message at a time on a system, through its own API, over one
    connection kept open (`with`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.number = 0  # messages enqueued so far

    def __enter__(self) -> Enqueuer:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def one(self, delay: float) -> None:
        """Enqueue one message due `delay` seconds from now (0: now)."""
        self.number += 1
        n = self.number
        self.send({"recipient": queues.recipient(n), "payload": queues.payload(n)}, delay)

    def send(self, fields: dict[str, Any], delay: float) -> None:
        raise NotImplementedError


class PgcoordEnqueuer(Enqueuer):
    """campaign_enqueue into a run of its own; a scheduled message's scheduled_at from
    the server's clock."""

    def __enter__(self) -> Enqueuer:
        self.conn = psycopg.connect(self.url, autocommit=True)
        self.run_id = campaigns.campaign_create(self.conn, "pickup")
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def send(self, fields: dict[str, Any], delay: float) -> None:
        item = dict(fields)
        if delay:
            item["scheduled_at"] = server_clock(self.conn) + timedelta(seconds=delay)
        campaigns.campaign_enqueue(self.conn, self.run_id, [item])


class PgqueuerEnqueuer(Enqueuer):
    """Queries.enqueue over one asyncpg connection; execute_after for a scheduled one."""

    def __enter__(self) -> Enqueuer:
        self.runner = asyncio.Runner()
        self.conn = self.runner.run(self._connect())
        self.queries = queues.pgqueuer_queries(self.conn)
        return self

    async def _connect(self) -> Any:
        import asyncpg

        return await asyncpg.connect(**queues.asyncpg_args(self.url))

    def __exit__(self, *exc: object) -> None:
        self.runner.run(self.conn.close())
        self.runner.close()

    def send(self, fields: dict[str, Any], delay: float) -> None:
        after = timedelta(seconds=delay) if delay else None
        body = json.dumps(fields).encode()
        self.runner.run(self.queries.enqueue(queues.TASK, body, 0, execute_after=after))


class ProcrastinateEnqueuer(Enqueuer):
    """The task's defer_async through the app's connector; schedule_in for a scheduled
    one."""

    def __enter__(self) -> Enqueuer:
        self.runner = asyncio.Runner()
        self.app = queues.procrastinate_app(self.url)
        self.runner.run(self._open())
        return self

    async def _open(self) -> None:
        await self.app.open_async()

    def __exit__(self, *exc: object) -> None:
        self.runner.run(self.app.close_async())
        self.runner.close()

    def send(self, fields: dict[str, Any], delay: float) -> None:
        task = self.app.tasks[queues.TASK]
        if delay:
            task = task.configure(schedule_in={"seconds": delay})
        self.runner.run(task.defer_async(**fields))


ENQUEUERS: dict[str, type[Enqueuer]] = {
    queues.PGCOORD.name: PgcoordEnqueuer,
    queues.PGQUEUER.name: PgqueuerEnqueuer,
    queues.PROCRASTINATE.name: ProcrastinateEnqueuer,
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = os.environ.get("DATABASE_URL") or None
    with server(url) as server_url, scratch_database(server_url) as db:
        peers = queues.install_peers(db.url, args.peers)
        result = describe(db, args, "DATABASE_URL" if url else "embedded", peers)
        ran = [q for q in SYSTEMS if peers.get(q.name, {"status": "ran"})["status"] == "ran"]
        samples = measure(db, args, ran)
    rows = pickup_report.summarise(samples)
    found = pickup_report.checks(rows, args.delay)
    md, js = pickup_report.write(args.output, result, rows, samples, found)
    report.print_outcome(pickup_report.summary_table(rows, "simple"), found, md, js, ROOT)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench pickup", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every system (3)")
    parser.add_argument(
        "--samples", type=int, default=20, help="messages due now, per system and round (20)"
    )
    parser.add_argument(
        "--scheduled",
        type=int,
        default=3,
        help="messages due --delay later, per system and round (3)",
    )
    parser.add_argument(
        "--delay",
        type=float,
        default=2.0,
        help="seconds from the enqueue until a scheduled message is due (2)",
    )
    parser.add_argument("--workers", type=int, default=8, help="worker processes (8)")
    queues.add_no_peers(parser)
    report.add_output(parser, "pickup")
    args = parser.parse_args(argv)
    if min(args.rounds, args.samples, args.workers) < 1 or args.scheduled < 0:
        parser.error("--rounds, --samples and --workers must be at least 1, --scheduled >= 0")
    if not 0 < args.delay <= 60:
        parser.error("--delay must be more than 0 and at most 60 seconds")
    args.command = " ".join(["scripts/bench pickup", *map(shlex.quote, argv or sys.argv[1:])])
    return args


def measure(
    db: ScratchDatabase, args: argparse.Namespace, systems: list[queues.Queue]
) -> list[Sample]:
    """Every round runs each system, in the order of SYSTEMS in odd rounds and reversed
    in even ones."""
    gaps = random.Random(0)
    samples: list[Sample] = []
    for round_no in range(1, args.rounds + 1):
        order = systems if round_no % 2 else systems[::-1]
        for queue in order:
            found = one_round(db, queue, round_no, args, gaps)
            samples += found
            print(pickup_report.progress_line(queue.name, round_no, args.rounds, found))
    return samples


def one_round(
    db: ScratchDatabase,
    queue: queues.Queue,
    round_no: int,
    args: argparse.Namespace,
    gaps: random.Random,
) -> list[Sample]:
    """An idle fleet of the system's workers sends WARMUP messages, then --samples due
    now and --scheduled due --delay later, one at a time."""
    queue.reset(db.url)
    db.wait_until_idle()
    samples: list[Sample] = []
    batch = BATCH[queue.name]
    with (
        Fleet(queue.name, db.url, args.workers, batch=batch, concurrency=CONCURRENCY),
        ENQUEUERS[queue.name](db.url) as enqueuer,
        psycopg.connect(db.url, autocommit=True) as conn,
    ):
        modes = [NOW] * (WARMUP + args.samples) + [SCHEDULED] * args.scheduled
        for index, mode in enumerate(modes):
            time.sleep(gaps.uniform(*GAP))
            delay = args.delay if mode == SCHEDULED else 0.0
            sample = one_message(conn, queue, enqueuer, delay)
            if index >= WARMUP:
                samples.append(Sample(queue.name, round_no, mode, *sample))
            if sample[0] is None:
                break  # not sent in time: the counts no longer tell which one is done
    return samples


def one_message(
    conn: psycopg.Connection[Any], queue: queues.Queue, enqueuer: Enqueuer, delay: float
) -> tuple[float | None, bool]:
    """Enqueue one message due `delay` s from now and wait until it is done: seconds
    from its due time (the enqueue's return for one due now) until it was seen done
    (None: not within the timeout), and whether it was done before it was due."""
    number = enqueuer.number + 1
    asked = time.monotonic()
    enqueuer.one(delay)
    due = asked + delay if delay else time.monotonic()
    deadline = due + (LATE_TIMEOUT if delay else NOW_TIMEOUT)
    while queue.done(conn, number) < number:
        if time.monotonic() > deadline:
            return None, False
        time.sleep(POLL)
    done = time.monotonic()
    return done - due, done < due


def describe(
    db: ScratchDatabase, args: argparse.Namespace, kind: str, peers: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return {
        **report.environment(db, "pickup", args.command, kind),
        "peers": peers,
        "settings": {
            "rounds": args.rounds,
            "samples": args.samples,
            "scheduled": args.scheduled,
            "delay": args.delay,
            "workers": args.workers,
            "batch": BATCH,
            "concurrency": CONCURRENCY,
            "poll_ms": POLL * 1000,
        },
    }


if __name__ == "__main__":
    sys.exit(main())
