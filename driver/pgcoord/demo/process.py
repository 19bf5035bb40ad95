"""What every worker process of the demo (`storm_worker`, `campaign_worker`) does around
its worker: the options they share, logging, the pool opened, ready in its scene's
roster, released by the demo when gated, stopped by SIGTERM or SIGINT (finishing its
work in flight) or by the end of the process that started it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, TypedDict

from pgcoord.config import CONNECT_TIMEOUT, AsyncPool
from pgcoord.worker import Runtime, loop

from .ledger import Roster

PARENT_POLL = 0.5  # seconds between looks for the parent process
GATE_POLL = 0.05  # seconds between looks at the gate
GRACE = timedelta(seconds=5)  # for the work in flight at SIGTERM
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class WorkerOptions(TypedDict):
    """The worker's options that come from the common ones (`options`)."""

    pool: AsyncPool
    name: str
    concurrency: int
    lease: timedelta
    grace: timedelta


def parser(prog: str, description: str, lease: timedelta) -> argparse.ArgumentParser:
    """The options every worker process takes; the program adds its own."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--schema", required=True, help="the scene's ledger schema")
    parser.add_argument("--name", required=True, help="the worker's name in the claims")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--lease-ms", type=int, default=int(lease.total_seconds() * 1000))
    parser.add_argument(
        "--gated", action="store_true", help="after starting, wait until released in the ledger"
    )
    return parser


def options(args: argparse.Namespace, pool: AsyncPool) -> WorkerOptions:
    """The worker's options from the common ones, on `pool`."""
    return WorkerOptions(
        pool=pool,
        name=args.name,
        concurrency=args.concurrency,
        lease=timedelta(milliseconds=args.lease_ms),
        grace=GRACE,
    )


def main(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    work: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
) -> int:
    """Parse the options, log warnings with the worker's name, and run `work`."""
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("no --database-url and no DATABASE_URL")
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s {args.name} %(levelname)s %(name)s: %(message)s",
    )
    return loop.run(work(args))


async def serve(
    worker: Runtime[Any], pool: AsyncPool, roster: Roster, args: argparse.Namespace
) -> int:
    """Open `pool`, say ready in `roster`, wait to be released when gated, and run
    `worker` until SIGTERM or SIGINT, or until the parent process is gone; then close
    the pool. A stop before the worker runs (say, while gated) ends the process as
    cleanly."""
    stopped = asyncio.Event()

    def stop() -> None:
        stopped.set()
        worker.stop()

    running = asyncio.get_running_loop()
    for signum in SIGNALS:
        running.add_signal_handler(signum, stop)
    watcher = asyncio.create_task(_watch_parent(os.getppid(), stop))
    try:
        await pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        if await _register(pool, roster, args, stopped):
            await worker.run(handle_signals=True)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await pool.close()
        for signum in SIGNALS:
            running.remove_signal_handler(signum)
    return 0


async def _register(
    pool: AsyncPool, roster: Roster, args: argparse.Namespace, stopped: asyncio.Event
) -> bool:
    """Say ready in the roster; a gated worker then waits to be released. False when it
    was stopped meanwhile."""
    async with pool.connection() as conn:
        await roster.register(conn, args.name, os.getpid())
        while args.gated and not stopped.is_set():
            if await roster.is_released(conn, args.name):
                break
            await asyncio.sleep(GATE_POLL)
    return not stopped.is_set()


async def _watch_parent(parent: int, stop: Callable[[], None]) -> None:
    """Stop when the process that started this one is gone."""
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_POLL)
    stop()
