"""One worker process of `scripts/bench campaigns`: a no-op handler behind pgcoord's
CampaignWorker, PgQueuer's QueueManager or Procrastinate's worker, each as its
documentation sets it up; or, as `psycopg`, the ceiling's plain SQL run through psycopg
with nothing around it.

    python -m bench.queue_worker pgcoord|pgqueuer|procrastinate|psycopg CONNINFO
        [--batch 15] [--concurrency 8]

It prints "ready" on stdout once its worker is built, then works until SIGTERM or SIGINT
and exits 0. PgQueuer and Procrastinate come from the `bench` extra; their objects live in
the schemas named in bench/queues.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from pgcoord.worker import loop

from .queues import PGQUEUER_SCHEMA, PROCRASTINATE_SCHEMA, TASK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.queue_worker")
    parser.add_argument("system", choices=["pgcoord", "pgqueuer", "procrastinate", "psycopg"])
    parser.add_argument("conninfo")
    parser.add_argument("--batch", type=int, default=15, help="claim / dequeue size (15)")
    parser.add_argument("--concurrency", type=int, default=8, help="handlers at once (8)")
    args = parser.parse_args(argv)
    runner = {
        "pgcoord": pgcoord,
        "pgqueuer": pgqueuer,
        "procrastinate": procrastinate,
        "psycopg": plain,
    }
    main = runner[args.system](args.conninfo, args.batch, args.concurrency)
    if args.system == "procrastinate":
        asyncio.run(main)  # as its command line does
    else:
        loop.run(main)  # uvloop, as `pgcoord work` and PgQueuer's command line do
    return 0


def ready() -> None:
    print("ready", flush=True)


async def pgcoord(conninfo: str, batch: int, concurrency: int) -> None:
    """CampaignWorker with its defaults but for the batch and concurrency given."""
    from pgcoord import CampaignMessage, CampaignWorker

    async def noop(message: CampaignMessage) -> dict[str, Any]:
        return {}

    worker = CampaignWorker(
        noop, conninfo, name=f"bench-{os.getpid()}", batch=batch, concurrency=concurrency
    )
    ready()
    await worker.run(handle_signals=True)


async def plain(conninfo: str, batch: int, concurrency: int) -> None:
    """The ceiling's SQL (bench/pgbench/campaign_plain.sql: claim 15, mark them sent)
    through one async psycopg connection, never prepared (as the driver sends every
    statement, and as pgbench runs the unprepared ceiling), and nothing else: no
    handlers, no heartbeat, no metrics. What any Python worker's client pays for the
    round trips and rows alone (`batch` and `concurrency` are not used)."""
    import psycopg

    from .pgbench_run import script_statements

    claim, complete = script_statements("campaign_plain")
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(signum, stop.set)
    conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True, prepare_threshold=None)
    ready()
    async with conn:
        while not stop.is_set():
            cur = await conn.execute(claim, {"client_id": os.getpid()})
            row = await cur.fetchone()
            assert row is not None
            n, ids, token, _recipients, _payloads = row
            if n:
                await conn.execute(complete, {"ids": ids, "token": token})
            else:
                await asyncio.sleep(0.05)


async def pgqueuer(conninfo: str, batch: int, concurrency: int) -> None:
    """QueueManager over one asyncpg connection (PgQueuer's own driver), dequeuing
    `batch` jobs at a time, as many running at once as it dequeues (PgQueuer bounds them
    by the batch; `concurrency` is not used)."""
    os.environ["PGQUEUER_SCHEMA"] = PGQUEUER_SCHEMA
    import asyncpg
    from pgqueuer import AsyncpgDriver, QueueManager
    from pgqueuer.models import Job
    from pgqueuer.queries import Queries

    from .queues import asyncpg_args

    conn = await asyncpg.connect(**asyncpg_args(conninfo))
    manager = QueueManager(Queries(AsyncpgDriver(conn)))

    @manager.entrypoint(TASK)
    async def noop(job: Job) -> None:
        return None

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, manager.shutdown.set)
    ready()
    try:
        await manager.run(batch_size=batch)
    finally:
        await conn.close()


async def procrastinate(conninfo: str, batch: int, concurrency: int) -> None:
    """Procrastinate's worker with `concurrency` jobs at once (it fetches one job per
    query; `batch` is not used), its psycopg connector's pool, LISTEN/NOTIFY on."""
    import procrastinate as pc
    from psycopg.conninfo import make_conninfo

    options = f"-c search_path={PROCRASTINATE_SCHEMA}"
    app = pc.App(connector=pc.PsycopgConnector(conninfo=make_conninfo(conninfo, options=options)))

    @app.task(name=TASK)
    async def noop(recipient: str, payload: dict[str, Any]) -> None:
        return None

    async with app.open_async():
        ready()
        await app.run_worker_async(
            concurrency=concurrency, name=f"bench-{os.getpid()}", install_signal_handlers=True
        )


if __name__ == "__main__":
    sys.exit(main())
