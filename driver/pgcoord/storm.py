"""A WhatsApp-like storm for the inbox, and the worker process that answers it.

The storm: many conversations, each sending one or two bursts of rapid messages, with
provider retries of the same message ids, some late and some at the same instant from a
second connection (a double webhook). Worker processes answer each burst with a fenced
reply: the reply row and `buffer_complete` commit in one transaction (`complete_in`), so
a reply lands only while its claim is current, and a killed worker's reply never lands.

    python -m pgcoord.storm worker --schema S --prefix P --name N [--database-url URL]

runs one worker process (the URL defaults to $DATABASE_URL). `pgcoord demo` and
tests/test_fault_buffers.py play the storm against such processes, kill some of them with
SIGKILL, and check what `analyse` finds in the ledger.

The ledger lives in a schema of the storm's own:
  workers  one row per worker process, written once its pool is open (ready)
  claims   every burst a handler started, as claimed, logged before the "model" runs
  replies  the fenced side effect, one row per answered burst; no unique constraint,
           so a double answer would show instead of failing
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import class_row
from psycopg.sql import SQL, Composed, Identifier
from psycopg_pool import AsyncConnectionPool

from .config import CONNECTION_OPTIONS
from .inbox import buffer_status, message_ingest
from .types import Batch as Burst
from .types import BufferStatus
from .worker import BufferWorker, Retry, complete_in

T = TypeVar("T")

DEBOUNCE = timedelta(milliseconds=400)
MAX_WAIT = timedelta(seconds=2)
LEASE = timedelta(milliseconds=1500)
RETRY_IN = timedelta(milliseconds=200)
IDLE_POLL = timedelta(milliseconds=250)
THINK = (0.05, 0.15)  # seconds a worker's "model" takes per burst, from..to
CONNECT_TIMEOUT = 10  # seconds
STEP_TIMEOUT = 30.0  # seconds any single wait of the senders may take

PHRASES = (
    "hi",
    "hello?",
    "are you open today?",
    "I need to change my order",
    "it's order 4471",
    "the blue one, not the red",
    "wait",
    "one more thing",
    "can you call me back?",
    "thanks!",
    "ok",
    "where is my parcel",
)

LEDGER: LiteralString = (
    "CREATE SCHEMA {schema};"
    " CREATE TABLE {schema}.workers ("
    " name text PRIMARY KEY,"
    " pid integer NOT NULL,"
    " released boolean NOT NULL DEFAULT false,"
    " ready_at timestamptz NOT NULL DEFAULT clock_timestamp());"
    " CREATE TABLE {schema}.claims ("
    " claim_token bigint PRIMARY KEY,"
    " conversation_key text NOT NULL,"
    " message_ids bigint[] NOT NULL,"
    " bodies text[] NOT NULL,"
    " first_message_at timestamptz NOT NULL,"
    " last_message_at timestamptz NOT NULL,"
    " attempt integer NOT NULL,"
    " worker text NOT NULL,"
    " claimed_at timestamptz NOT NULL DEFAULT clock_timestamp());"
    " CREATE TABLE {schema}.replies ("
    " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " claim_token bigint NOT NULL,"
    " conversation_key text NOT NULL,"
    " message_ids bigint[] NOT NULL,"
    " attempt integer NOT NULL,"
    " worker text NOT NULL,"
    " body text NOT NULL,"
    " replied_at timestamptz NOT NULL DEFAULT clock_timestamp())"
)
DROP_LEDGER: LiteralString = "DROP SCHEMA IF EXISTS {schema} CASCADE"
REGISTER: LiteralString = "INSERT INTO {schema}.workers (name, pid) VALUES (%(name)s, %(pid)s)"
RELEASED: LiteralString = "SELECT released FROM {schema}.workers WHERE name = %(name)s"
RELEASE: LiteralString = "UPDATE {schema}.workers SET released = true WHERE name = ANY(%(names)s)"
READY: LiteralString = "SELECT name FROM {schema}.workers"
LOG_CLAIM: LiteralString = (
    "INSERT INTO {schema}.claims (claim_token, conversation_key, message_ids, bodies,"
    " first_message_at, last_message_at, attempt, worker)"
    " VALUES (%(claim_token)s, %(conversation_key)s, %(message_ids)s, %(bodies)s,"
    " %(first_message_at)s, %(last_message_at)s, %(attempt)s, %(worker)s)"
)
# The fenced side effect; complete_in follows in the same transaction.
REPLY: LiteralString = (
    "INSERT INTO {schema}.replies (claim_token, conversation_key, message_ids, attempt,"
    " worker, body)"
    " VALUES (%(claim_token)s, %(conversation_key)s, %(message_ids)s, %(attempt)s,"
    " %(worker)s, %(body)s)"
)
CLAIMS: LiteralString = (
    "SELECT claim_token, conversation_key, message_ids, bodies, first_message_at,"
    " last_message_at, attempt, worker, claimed_at FROM {schema}.claims ORDER BY claim_token"
)
REPLIES: LiteralString = (
    "SELECT claim_token, conversation_key, message_ids, attempt, worker, replied_at"
    " FROM {schema}.replies ORDER BY id"
)
ANSWERED: LiteralString = (
    "SELECT count(*) FROM {schema}.replies AS r CROSS JOIN LATERAL unnest(r.message_ids)"
)
STORED: LiteralString = (
    "SELECT id AS message_id, provider_message_id, conversation_key, state, received_at"
    " FROM pgcoord.messages WHERE provider = %(provider)s ORDER BY id"
)
SERVER_CLOCK: LiteralString = "SELECT clock_timestamp()"
CREATE_DATABASE: LiteralString = "CREATE DATABASE {name}"
DROP_DATABASE: LiteralString = "DROP DATABASE IF EXISTS {name} WITH (FORCE)"


class StormError(Exception):
    """The storm could not be played: a worker process died early, or time ran out."""


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)


def server_clock(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute(SERVER_CLOCK).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def poll(check: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T | None:
    """Ask `check` until it answers something other than None, for up to `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer is not None or time.monotonic() >= deadline:
            return answer
        time.sleep(interval)


# The plan -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a burst, sent `offset` seconds after the burst starts. `retry`:
    None, "double" (a second delivery at the same instant from another connection) or
    "late" (the provider delivers it again `retry_after` seconds after the burst starts)."""

    provider_message_id: str
    body: str
    offset: float
    retry: str | None = None
    retry_after: float = 0.0


@dataclass(frozen=True, slots=True)
class PlannedBurst:
    number: int
    conversation_key: str
    at: float  # seconds after the storm starts
    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    run: str
    provider: str
    prefix: str  # of every conversation key of the storm
    conversations: int
    bursts: tuple[PlannedBurst, ...]
    debounce: timedelta = DEBOUNCE
    max_wait: timedelta = MAX_WAIT

    @property
    def messages(self) -> int:
        return sum(len(b.messages) for b in self.bursts)

    def retries(self, kind: str) -> int:
        return sum(m.retry == kind for b in self.bursts for m in b.messages)

    @property
    def span(self) -> float:
        """Seconds from the first message to the last delivery, retries included."""
        return max(
            max(b.at + m.offset, b.at + m.retry_after) for b in self.bursts for m in b.messages
        )


def make_plan(
    run: str,
    conversations: int,
    *,
    seed: int,
    span: float = 2.5,
    gap: float = 1.2,
    second_burst: float = 0.4,
    retry_share: float = 0.3,
    double_share: float = 0.4,
    debounce: timedelta = DEBOUNCE,
    max_wait: timedelta = MAX_WAIT,
) -> Plan:
    """A storm over `span` seconds: each conversation sends one burst, or (with
    probability `second_burst`) two at least `gap` seconds apart; a burst is 1 to 5
    messages typed within a few tens of milliseconds. A `retry_share` of the messages
    are delivered again by the provider: `double_share` of those at the same instant from
    a second connection, the rest 0.3 to 1.2 s later."""
    if conversations < 1:
        raise ValueError(f"conversations must be at least 1, got {conversations}")
    rng = random.Random(seed)
    prefix = f"wa:{run}:"
    drafts: list[tuple[float, str, tuple[Message, ...]]] = []
    n = 0
    for c in range(conversations):
        key = f"{prefix}+4915{c:07d}"
        if rng.random() < second_burst and span > gap:
            first = rng.uniform(0, span - gap)
            starts = [first, first + gap + rng.uniform(0, span - gap - first)]
        else:
            starts = [rng.uniform(0, span)]
        for at in starts:
            messages: list[Message] = []
            offset = 0.0
            for _ in range(rng.randint(1, 5)):
                n += 1
                retry: str | None = None
                retry_after = 0.0
                if rng.random() < retry_share:
                    retry = "double" if rng.random() < double_share else "late"
                    if retry == "late":
                        retry_after = offset + rng.uniform(0.3, 1.2)
                body = f"{rng.choice(PHRASES)} ({n})"
                messages.append(Message(f"wamid.{run}.{n:05d}", body, offset, retry, retry_after))
                offset += rng.uniform(0.0, 0.03)
            drafts.append((at, key, tuple(messages)))
    drafts.sort(key=lambda d: (d[0], d[1]))
    bursts = tuple(PlannedBurst(i, key, at, msgs) for i, (at, key, msgs) in enumerate(drafts))
    return Plan(run, f"storm-{run}", prefix, conversations, bursts, debounce, max_wait)


# The senders --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message_ingest call of the storm and its answer. `kind`: "burst" (sent with
    its burst), "double" (the same instant, another connection) or "late"."""

    provider_message_id: str
    conversation_key: str
    burst: int
    kind: str
    message_id: int
    duplicate: bool
    received_at: datetime


class _Twin:
    """A second connection that delivers a message at the same instant as its lane."""

    def __init__(self, storm: Storm, conn: psycopg.Connection[Any]) -> None:
        self.storm = storm
        self.conn = conn
        self.jobs: queue.SimpleQueue[tuple[PlannedBurst, Message] | None] = queue.SimpleQueue()
        self.barrier = threading.Barrier(2, timeout=STEP_TIMEOUT)
        self.thread = threading.Thread(target=self._run, daemon=True, name="storm twin")

    def _run(self) -> None:
        try:
            while (job := self.jobs.get()) is not None:
                self.barrier.wait()
                self.storm.deliver(self.conn, job[0], job[1], "double")
        except BaseException as exc:
            self.storm.errors.append(exc)
            self.barrier.abort()

    def deliver_with(self, burst: PlannedBurst, message: Message) -> None:
        """Queue the double delivery and meet the twin at the barrier."""
        self.jobs.put((burst, message))
        self.barrier.wait()


class Storm:
    """Sends a plan's messages on its schedule in the background: `lanes` threads with a
    connection each (one conversation always on the same lane, its bursts in order), and
    a twin connection per lane for the double deliveries."""

    def __init__(self, url: str, plan: Plan, lanes: int = 6) -> None:
        self.url = url
        self.plan = plan
        self.lanes = max(1, min(lanes, plan.conversations))
        self.deliveries: list[Delivery] = []
        self.errors: list[BaseException] = []
        self.started = 0.0  # perf_counter when the first lane began
        self.finished = 0.0
        self._barrier = threading.Barrier(self.lanes, action=self._go, timeout=STEP_TIMEOUT)
        self._threads: list[threading.Thread] = []

    def _go(self) -> None:
        self.started = time.perf_counter()

    def start(self) -> None:
        keys = sorted({b.conversation_key for b in self.plan.bursts})
        lane_of = {key: i % self.lanes for i, key in enumerate(keys)}
        work: list[list[PlannedBurst]] = [[] for _ in range(self.lanes)]
        for burst in self.plan.bursts:
            work[lane_of[burst.conversation_key]].append(burst)
        self._threads = [
            threading.Thread(target=self._lane, args=(bursts,), daemon=True, name="storm lane")
            for bursts in work
        ]
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float) -> list[Delivery]:
        """Wait for every lane; the deliveries, or the first error of a lane."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            raise StormError(f"the storm's senders did not finish within {timeout:g} s")
        if self.errors:
            real = [e for e in self.errors if not isinstance(e, threading.BrokenBarrierError)]
            raise (real or self.errors)[0]
        self.finished = time.perf_counter()
        return list(self.deliveries)

    def deliver(
        self, conn: psycopg.Connection[Any], burst: PlannedBurst, message: Message, kind: str
    ) -> None:
        got = message_ingest(
            conn,
            self.plan.provider,
            message.provider_message_id,
            burst.conversation_key,
            message.body,
            debounce=self.plan.debounce,
            max_wait=self.plan.max_wait,
        )
        self.deliveries.append(
            Delivery(
                message.provider_message_id,
                burst.conversation_key,
                burst.number,
                kind,
                got.message_id,
                got.duplicate,
                got.received_at,
            )
        )

    def _lane(self, bursts: list[PlannedBurst]) -> None:
        try:
            with connect(self.url) as conn, connect(self.url) as twin_conn:
                twin = _Twin(self, twin_conn)
                twin.thread.start()
                try:
                    self._barrier.wait()
                    self._send(conn, twin, bursts)
                finally:
                    twin.jobs.put(None)
                    twin.thread.join(STEP_TIMEOUT)
        except BaseException as exc:
            self.errors.append(exc)
            self._barrier.abort()

    def _send(self, conn: psycopg.Connection[Any], twin: _Twin, bursts: list[PlannedBurst]) -> None:
        events: list[tuple[float, int, PlannedBurst, Message | None]] = []
        for burst in bursts:
            events.append((burst.at, 0, burst, None))
            events.extend(
                (burst.at + m.retry_after, 1, burst, m) for m in burst.messages if m.retry == "late"
            )
        events.sort(key=lambda e: (e[0], e[1], e[2].number))
        for at, _, burst, late in events:
            if late is not None:
                self._sleep_until(at)
                self.deliver(conn, burst, late, "late")
                continue
            for message in burst.messages:
                self._sleep_until(at + message.offset)
                if message.retry == "double":
                    twin.deliver_with(burst, message)
                self.deliver(conn, burst, message, "burst")

    def _sleep_until(self, at: float) -> None:
        pause = self.started + at - time.perf_counter()
        if pause > 0:
            time.sleep(pause)


# The ledger ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    """A burst as a worker's handler received it (the claims log)."""

    claim_token: int
    conversation_key: str
    message_ids: list[int]
    bodies: list[str]
    first_message_at: datetime
    last_message_at: datetime
    attempt: int
    worker: str
    claimed_at: datetime

    def burst(self) -> Burst:
        return Burst(
            self.conversation_key,
            self.claim_token,
            self.message_ids,
            self.bodies,
            self.first_message_at,
            self.last_message_at,
            self.attempt,
        )


@dataclass(frozen=True, slots=True)
class Reply:
    """A row of the fenced side effect."""

    claim_token: int
    conversation_key: str
    message_ids: list[int]
    attempt: int
    worker: str
    replied_at: datetime


@dataclass(frozen=True, slots=True)
class Stored:
    """A message of the storm as pgcoord.messages holds it."""

    message_id: int
    provider_message_id: str
    conversation_key: str
    state: str
    received_at: datetime


class Ledger:
    """The storm's schema: workers, claims log and the fenced replies."""

    def __init__(self, schema: str) -> None:
        self.name = schema
        self.schema = Identifier(schema)

    def query(self, text: LiteralString) -> Composed:
        return SQL(text).format(schema=self.schema)

    def create(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(self.query(LEDGER))

    def drop(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(self.query(DROP_LEDGER))

    def ready(self, conn: psycopg.Connection[Any]) -> set[str]:
        return {row[0] for row in conn.execute(self.query(READY))}

    def release(self, conn: psycopg.Connection[Any], names: Sequence[str]) -> None:
        conn.execute(self.query(RELEASE), {"names": list(names)})

    def claims(self, conn: psycopg.Connection[Any]) -> list[Claim]:
        with conn.cursor(row_factory=class_row(Claim)) as cur:
            return cur.execute(self.query(CLAIMS)).fetchall()

    def replies(self, conn: psycopg.Connection[Any]) -> list[Reply]:
        with conn.cursor(row_factory=class_row(Reply)) as cur:
            return cur.execute(self.query(REPLIES)).fetchall()

    def answered(self, conn: psycopg.Connection[Any]) -> int:
        """How many message ids the replies hold, repeats counted."""
        row = conn.execute(self.query(ANSWERED)).fetchone()
        return int(row[0]) if row else 0


def stored(conn: psycopg.Connection[Any], plan: Plan) -> list[Stored]:
    with conn.cursor(row_factory=class_row(Stored)) as cur:
        return cur.execute(STORED, {"provider": plan.provider}).fetchall()


def buffered(conn: psycopg.Connection[Any], plan: Plan) -> list[BufferStatus]:
    """The buffer_status rows of the storm's conversations."""
    return [s for s in buffer_status(conn) if s.conversation_key.startswith(plan.prefix)]


def drained(conn: psycopg.Connection[Any], plan: Plan, ledger: Ledger) -> bool:
    """Nothing of the storm buffered and the replies hold as many ids as it sent."""
    return not buffered(conn, plan) and ledger.answered(conn) >= plan.messages


@contextmanager
def scratch_database(url: str, name: str) -> Iterator[str]:
    """A new database `name` on the server of `url`, dropped (WITH FORCE) on exit.
    Raises psycopg.errors.InsufficientPrivilege when the role may not create one."""
    dbname = Identifier(name)
    with connect(url) as admin:
        admin.execute(SQL(CREATE_DATABASE).format(name=dbname))
    try:
        yield make_conninfo(url, dbname=name)
    finally:
        with connect(url) as admin:
            admin.execute(SQL(DROP_DATABASE).format(name=dbname))


# The worker processes -----------------------------------------------------------------


async def reply_fenced(
    conn: psycopg.AsyncConnection[Any], ledger: Ledger, burst: Burst, worker: str
) -> None:
    """The fenced side effect: the reply row and the completion commit together, or, when
    the claim is no longer current (ClaimLost), neither."""
    params = {
        "claim_token": burst.claim_token,
        "conversation_key": burst.conversation_key,
        "message_ids": burst.message_ids,
        "attempt": burst.attempt,
        "worker": worker,
        "body": f"answer to {len(burst.message_ids)} message(s) by {worker}",
    }
    async with conn.transaction():
        await conn.execute(ledger.query(REPLY), params)
        await complete_in(conn, burst)


def _claim_params(burst: Burst, worker: str) -> dict[str, Any]:
    return {
        "claim_token": burst.claim_token,
        "conversation_key": burst.conversation_key,
        "message_ids": burst.message_ids,
        "bodies": burst.bodies,
        "first_message_at": burst.first_message_at,
        "last_message_at": burst.last_message_at,
        "attempt": burst.attempt,
        "worker": worker,
    }


async def _work(args: argparse.Namespace) -> int:
    ledger = Ledger(args.schema)
    name: str = args.name
    low, high = args.think
    rng = random.Random(name)
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
        args.database_url,
        kwargs=dict(CONNECTION_OPTIONS),
        min_size=1,
        max_size=2 * args.concurrency + 1,
        open=False,
        name=f"storm {name}",
    )

    async def answer(burst: Burst) -> None:
        if not burst.conversation_key.startswith(args.prefix):
            raise Retry(timedelta(0), "not a conversation of this storm")
        async with pool.connection() as conn:
            await conn.execute(ledger.query(LOG_CLAIM), _claim_params(burst, name))
        await asyncio.sleep(rng.uniform(low, high))  # the model thinks
        async with pool.connection() as conn:
            await reply_fenced(conn, ledger, burst, name)

    worker = BufferWorker(
        answer,
        pool=pool,
        name=name,
        concurrency=args.concurrency,
        lease=timedelta(milliseconds=args.lease_ms),
        retry_in=RETRY_IN,
        idle_poll=IDLE_POLL,
        grace=timedelta(seconds=5),
    )
    parent = os.getppid()

    async def watch_parent() -> None:
        """Stop when the process that started this one is gone."""
        while os.getppid() == parent:
            await asyncio.sleep(0.5)
        worker.stop()

    await pool.open(wait=True, timeout=CONNECT_TIMEOUT)
    watcher = asyncio.create_task(watch_parent())
    try:
        async with pool.connection() as conn:
            await conn.execute(ledger.query(REGISTER), {"name": name, "pid": os.getpid()})
            while args.gated:
                row = await (await conn.execute(ledger.query(RELEASED), {"name": name})).fetchone()
                if row and row[0]:
                    break
                if os.getppid() != parent:
                    return 0
                await asyncio.sleep(0.05)
        await worker.run(handle_signals=True)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await pool.close()
    return 0


def _think(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    seconds = (float(low) / 1000, float(high or low) / 1000)
    if not 0 <= seconds[0] <= seconds[1]:
        raise argparse.ArgumentTypeError(f"expected MS or MIN-MAX milliseconds, got {text!r}")
    return seconds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pgcoord.storm", description="The storm's worker process."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    work = commands.add_parser(
        "worker",
        help="answer the storm's bursts with fenced replies until SIGTERM",
        description="Claim the storm's due bursts and answer each with a fenced reply "
        "(the reply and buffer_complete in one transaction) until SIGTERM or SIGINT.",
    )
    work.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    work.add_argument("--schema", required=True, help="the ledger's schema")
    work.add_argument("--prefix", required=True, help="of the storm's conversation keys")
    work.add_argument("--name", required=True, help="the worker's name in the claims")
    work.add_argument("--concurrency", type=int, default=4)
    work.add_argument("--lease-ms", type=int, default=int(LEASE.total_seconds() * 1000))
    work.add_argument(
        "--think-ms",
        dest="think",
        type=_think,
        default=THINK,
        help="how long the model takes per burst: MS or MIN-MAX (default 50-150)",
    )
    work.add_argument(
        "--gated", action="store_true", help="after starting, wait until released in the ledger"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.database_url:
        _parser().error("no --database-url and no DATABASE_URL")
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s {args.name} %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(_work(args))


class WorkerProcess:
    """A worker process of the storm (`python -m pgcoord.storm worker`), its output
    going to `log_dir/<name>.log`. The URL goes through the environment, not argv."""

    def __init__(
        self,
        url: str,
        ledger: Ledger,
        plan: Plan,
        name: str,
        log_dir: Path,
        *,
        concurrency: int = 4,
        lease: timedelta = LEASE,
        think: tuple[float, float] = THINK,
        gated: bool = False,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        think_ms = f"{think[0] * 1000:.0f}-{think[1] * 1000:.0f}"
        command = [
            sys.executable,
            "-m",
            "pgcoord.storm",
            "worker",
            f"--schema={ledger.name}",
            f"--prefix={plan.prefix}",
            f"--name={name}",
            f"--concurrency={concurrency}",
            f"--lease-ms={lease.total_seconds() * 1000:.0f}",
            f"--think-ms={think_ms}",
            *(["--gated"] if gated else []),
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                env={**os.environ, "DATABASE_URL": url},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.killed = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no handler runs, no transaction commits, no claim is given back."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.killed = True
        self.process.wait(STEP_TIMEOUT)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (the worker finishes its bursts in flight), SIGKILL after `timeout`;
        the exit status (negative: the signal that ended it)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STEP_TIMEOUT)
        return self.process.returncode

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def wait_ready(
    conn: psycopg.Connection[Any],
    ledger: Ledger,
    workers: Sequence[WorkerProcess],
    timeout: float = 60.0,
) -> None:
    """Wait until every worker has registered; StormError when one died or time ran out."""

    def check() -> bool | None:
        dead = [w for w in workers if not w.alive()]
        if dead:
            raise StormError(
                f"worker {dead[0].name} exited with {dead[0].process.returncode} before it "
                f"was ready:\n{dead[0].log_tail()}"
            )
        return True if {w.name for w in workers} <= ledger.ready(conn) else None

    if poll(check, timeout, interval=0.05) is None:
        raise StormError(f"the storm's workers were not ready within {timeout:g} s")


# What happened ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """The facts about a storm, from what was sent, stored, claimed and replied."""

    messages: int  # distinct provider message ids sent
    deliveries: int  # message_ingest calls
    repeats: int  # deliveries after the first of an id
    doubles: int  # ids delivered twice at the same instant
    stored: int  # rows in pgcoord.messages for the storm's provider
    misdelivered: tuple[str, ...]  # ids not answered duplicate = false exactly once ...
    replies: int
    unanswered: tuple[int, ...]  # stored message ids in no reply
    answered_twice: tuple[int, ...]  # message ids in more than one reply
    strangers: tuple[int, ...]  # message ids in replies that the storm did not store
    bursts: int
    judged: int  # bursts whose messages arrived within half the debounce of each other
    split: tuple[int, ...]  # judged bursts answered by more than one reply
    merged: int  # replies that answered more than one burst
    not_final: tuple[int, ...]  # reply tokens that are not their messages' last claim
    superseded: int  # claims without a reply, each delivered again by a later claim
    unrecovered: tuple[int, ...]  # claims without a reply and no later claim of the batch
    buffered: tuple[BufferStatus, ...]  # buffer_status rows of the storm's conversations
    not_done: tuple[int, ...]  # stored messages whose state is not 'done'
    latencies: tuple[float, ...] = field(default=())  # seconds: last message -> reply
    drain: float | None = None  # seconds from the last new message to the last reply
    by_worker: dict[str, int] = field(default_factory=dict)  # replies per worker


def analyse(
    plan: Plan,
    deliveries: Sequence[Delivery],
    rows: Sequence[Stored],
    claims: Sequence[Claim],
    replies: Sequence[Reply],
    status: Sequence[BufferStatus],
) -> Outcome:
    # every message stored once: one first delivery per id, every repeat names it
    by_id: dict[str, list[Delivery]] = defaultdict(list)
    for d in deliveries:
        by_id[d.provider_message_id].append(d)
    row_of = {r.provider_message_id: r for r in rows}
    misdelivered = []
    for pid, ds in sorted(by_id.items()):
        row = row_of.get(pid)
        firsts = sum(not d.duplicate for d in ds)
        if row is None or firsts != 1 or {d.message_id for d in ds} != {row.message_id}:
            misdelivered.append(pid)
    misdelivered.extend(sorted(set(row_of) - set(by_id)))
    doubles = len({d.provider_message_id for d in deliveries if d.kind == "double"})

    # every message in exactly one reply
    replies_of: dict[int, list[int]] = defaultdict(list)  # message id -> reply indexes
    for i, reply in enumerate(replies):
        for mid in reply.message_ids:
            replies_of[mid].append(i)
    ids = {r.message_id for r in rows}
    unanswered = tuple(sorted(ids - set(replies_of)))
    twice = tuple(sorted(mid for mid, rs in replies_of.items() if len(rs) > 1))
    strangers = tuple(sorted(set(replies_of) - ids))

    # bursts: the judged ones (typed fast, by the server's clock) in one reply each
    received = {r.message_id: r.received_at for r in rows}
    burst_of_pid = {m.provider_message_id: b.number for b in plan.bursts for m in b.messages}
    burst_of: dict[int, int] = {
        r.message_id: burst_of_pid[r.provider_message_id]
        for r in rows
        if r.provider_message_id in burst_of_pid
    }
    members: dict[int, list[int]] = defaultdict(list)
    for mid, number in burst_of.items():
        members[number].append(mid)
    limit = plan.debounce.total_seconds() / 2
    judged = 0
    split = []
    for number, mids in sorted(members.items()):
        times = sorted(received[m] for m in mids)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        if any(g >= limit for g in gaps) or (times[-1] - times[0]) >= plan.max_wait / 2:
            continue
        judged += 1
        if len({i for m in mids for i in replies_of.get(m, [])}) > 1:
            split.append(number)
    merged = sum(len({burst_of.get(m) for m in r.message_ids}) > 1 for r in replies)

    # fencing: each reply is its messages' last claim; every other claim was superseded
    claim_of = {c.claim_token: c for c in claims}
    last_claim: dict[int, int] = {}
    for c in claims:
        for mid in c.message_ids:
            last_claim[mid] = max(last_claim.get(mid, 0), c.claim_token)
    not_final = []
    for reply in replies:
        claim = claim_of.get(reply.claim_token)
        same = claim is not None and (
            claim.conversation_key,
            claim.message_ids,
            claim.attempt,
            claim.worker,
        ) == (reply.conversation_key, reply.message_ids, reply.attempt, reply.worker)
        if not same or any(last_claim[m] != reply.claim_token for m in reply.message_ids):
            not_final.append(reply.claim_token)
    replied = {r.claim_token for r in replies}
    superseded = 0
    unrecovered = []
    for c in claims:
        if c.claim_token in replied:
            continue
        later = [
            d
            for d in claims
            if d.claim_token > c.claim_token
            and d.conversation_key == c.conversation_key
            and d.message_ids == c.message_ids
            and d.attempt > c.attempt
        ]
        if later:
            superseded += 1
        else:
            unrecovered.append(c.claim_token)

    latencies = tuple(
        sorted(
            (r.replied_at - max(received[m] for m in r.message_ids)).total_seconds()
            for r in replies
            if all(m in received for m in r.message_ids) and r.message_ids
        )
    )
    by_worker: dict[str, int] = defaultdict(int)
    for reply in replies:
        by_worker[reply.worker] += 1
    drain = (
        (max(r.replied_at for r in replies) - max(received.values())).total_seconds()
        if replies and received
        else None
    )
    return Outcome(
        messages=len(by_id),
        deliveries=len(deliveries),
        repeats=len(deliveries) - len(by_id),
        doubles=doubles,
        stored=len(rows),
        misdelivered=tuple(misdelivered),
        replies=len(replies),
        unanswered=unanswered,
        answered_twice=twice,
        strangers=strangers,
        bursts=len(members),
        judged=judged,
        split=tuple(split),
        merged=merged,
        not_final=tuple(not_final),
        superseded=superseded,
        unrecovered=tuple(unrecovered),
        buffered=tuple(status),
        not_done=tuple(r.message_id for r in rows if r.state != "done"),
        latencies=latencies,
        drain=drain,
        by_worker=dict(sorted(by_worker.items())),
    )


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def spread(seconds: Sequence[float]) -> str:
    """median, p95 and max of some durations, in milliseconds."""
    if not seconds:
        return "none"
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"median {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"max {ordered[-1] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
