"""Lease pairs through the Python driver: N connections hammering random keys for a fixed
time, with threads (pgcoord.locks) or with asyncio tasks (pgcoord.locks_async)."""

from __future__ import annotations

import asyncio
import random
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.pq import Trace

from pgcoord import locks, locks_async

KEYS = 1_000_000  # as in bench/pgbench/*.sql
TTL = timedelta(minutes=2)
NO_WAIT = timedelta(0)


@dataclass(frozen=True, slots=True)
class DriverResult:
    pairs_per_second: float  # measured after the warm-up
    pairs: int  # every pair, warm-up included (to compare with the server's commit count)
    granted: int  # acquires that were granted (a key drawn twice at once is refused)
    python_cpu: float  # CPU seconds of this process per second of the measured window
    cpu_per_pair: float  # CPU seconds of this process per pair in the measured window


class _Tally:
    """Per-worker counters, each written by its own worker only."""

    def __init__(self, workers: int) -> None:
        self.pairs = [0] * workers
        self.granted = [0] * workers
        self.stop = False
        self.errors: list[BaseException] = []


def run_threads(url: str, clients: int, seconds: float, warmup: float) -> DriverResult:
    """One thread and one autocommit connection per client, calling pgcoord.locks."""
    tally = _Tally(clients)
    start = threading.Barrier(clients + 1)
    conns: list[psycopg.Connection[Any]] = []
    workers: list[threading.Thread] = []

    def work(i: int) -> None:
        conn, owner, rng = conns[i], f"o{i + 1}", random.Random()
        start.wait()
        try:
            while not tally.stop:
                key = f"k{rng.randint(1, KEYS)}"
                if locks.lock_acquire(conn, key, owner, TTL, NO_WAIT).acquired:
                    tally.granted[i] += 1
                locks.lock_release(conn, key, owner)
                tally.pairs[i] += 1
        except BaseException as exc:
            tally.errors.append(exc)

    try:
        conns.extend(psycopg.connect(url, autocommit=True) for _ in range(clients))
        workers.extend(threading.Thread(target=work, args=(i,)) for i in range(clients))
        for worker in workers:
            worker.start()
        start.wait()
        time.sleep(warmup)
        pairs0, wall0, cpu0 = sum(tally.pairs), time.perf_counter(), time.process_time()
        time.sleep(seconds)
        pairs1, wall1, cpu1 = sum(tally.pairs), time.perf_counter(), time.process_time()
    finally:
        tally.stop = True
        start.abort()  # frees the workers if the main thread failed before the start
        for worker in workers:
            worker.join()
        for conn in conns:
            conn.close()
    if tally.errors:
        raise tally.errors[0]
    return _result(tally, pairs1 - pairs0, wall1 - wall0, cpu1 - cpu0)


def run_async(url: str, clients: int, seconds: float, warmup: float) -> DriverResult:
    """One task and one autocommit AsyncConnection per client, in one event loop,
    calling pgcoord.locks_async."""
    return asyncio.run(_run_async(url, clients, seconds, warmup))


async def _run_async(url: str, clients: int, seconds: float, warmup: float) -> DriverResult:
    tally = _Tally(clients)
    conns: list[psycopg.AsyncConnection[Any]] = []
    tasks: list[asyncio.Task[None]] = []

    async def work(i: int) -> None:
        conn, owner, rng = conns[i], f"o{i + 1}", random.Random()
        while not tally.stop:
            key = f"k{rng.randint(1, KEYS)}"
            if (await locks_async.lock_acquire(conn, key, owner, TTL, NO_WAIT)).acquired:
                tally.granted[i] += 1
            await locks_async.lock_release(conn, key, owner)
            tally.pairs[i] += 1

    try:
        for _ in range(clients):
            conns.append(await psycopg.AsyncConnection.connect(url, autocommit=True))
        tasks.extend(asyncio.create_task(work(i)) for i in range(clients))
        await asyncio.sleep(warmup)
        pairs0, wall0, cpu0 = sum(tally.pairs), time.perf_counter(), time.process_time()
        await asyncio.sleep(seconds)
        pairs1, wall1, cpu1 = sum(tally.pairs), time.perf_counter(), time.process_time()
    finally:
        tally.stop = True
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for conn in conns:
            await conn.close()
    errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if errors:
        raise errors[0]
    return _result(tally, pairs1 - pairs0, wall1 - wall0, cpu1 - cpu0)


def _result(tally: _Tally, pairs: int, wall: float, cpu: float) -> DriverResult:
    return DriverResult(
        pairs_per_second=pairs / wall,
        pairs=sum(tally.pairs),
        granted=sum(tally.granted),
        python_cpu=cpu / wall,
        cpu_per_pair=cpu / pairs if pairs else float("nan"),
    )


RUNNERS: dict[str, Callable[[str, int, float, float], DriverResult]] = {
    "threads": run_threads,
    "async": run_async,
}


def round_trips_per_pair(url: str, pairs: int = 50, warmup: int = 10) -> float:
    """Round trips per acquire + release pair on one connection, after a warm-up that
    covers psycopg's one-off statement preparation. Each call needs at least one, so
    2.0 means exactly one per call."""
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(warmup):
            locks.lock_acquire(conn, f"warmup{i}", "tracer")
            locks.lock_release(conn, f"warmup{i}", "tracer")

        def traced() -> None:
            for i in range(pairs):
                locks.lock_acquire(conn, f"traced{i}", "tracer")
                locks.lock_release(conn, f"traced{i}", "tracer")

        return round_trips(conn, traced) / pairs


def round_trips(conn: psycopg.Connection[Any], work: Callable[[], object]) -> int:
    """The round trips `work` makes on `conn`: the server's ReadyForQuery messages (one
    per round trip) in libpq's protocol trace of the connection."""
    return sum(1 for line in protocol_trace(conn, work) if "\tReadyForQuery\t" in line)


def protocol_trace(conn: psycopg.Connection[Any], work: Callable[[], object]) -> list[str]:
    """The lines of libpq's protocol trace of `conn` while `work` runs, without
    timestamps: one per message, F (sent) or B (received), its length, type and fields."""
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)
        try:
            work()
        finally:
            conn.pgconn.untrace()  # flushes the trace
        trace.seek(0)
        return trace.read().splitlines()
