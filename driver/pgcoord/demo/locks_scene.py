"""The lock scenes: fifty webhooks for one chat session race for its lock; exactly one
processes it and the others are told who holds it (1). Only the owner can release (2). A
crashed holder's lease runs out, another takes over with a larger fencing token, and the
stale holder's late calls and writes are refused (3), as lock_status shows (4).

They use keys of their own run and a schema of their own (`pgcoord_demo_<run>`) for the
fenced replies, and remove both at the end."""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, LiteralString

import psycopg
from psycopg.sql import SQL, Composed, Identifier

from pgcoord import Lock, LockStatus
from pgcoord.locks import lock_acquire, lock_extend, lock_is_current, lock_release, lock_status

from . import checks
from .facts import Webhook
from .output import Report, ms
from .server import connect, server_clock

RACE_TTL = timedelta(seconds=30)
CRASH_TTL = timedelta(seconds=1)
WAIT_MARGIN = timedelta(seconds=2)
BARRIER_TIMEOUT = 60.0  # seconds for every webhook to connect
CRASHED = "webhook-A"  # the holder that crashes in scene 3
SUCCESSOR = "webhook-B"  # the one that takes over from it

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


def play_locks(
    url: str, admin: psycopg.Connection[Any], report: Report, run: str, webhooks: int
) -> None:
    """Scenes 1 to 4, then clean up (a failed clean-up is a failed check)."""
    scenes = LockScenes(url, admin, report, run)
    scenes.setup()
    try:
        key, winner = scenes.burst(webhooks)
        if winner is not None:
            scenes.release(key, winner)
        else:
            report.heading("2. Only the owner can release")
            report.line("skipped: scene 1 had no single winner")
        scenes.takeover()
    finally:
        try:
            scenes.cleanup()
        except psycopg.Error as exc:  # keep the first error, and say what is left
            report.add(checks.cleaned_up(f"the demo's schema and keys ({scenes.prefix}*)", exc))


class LockScenes:
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

    def held(self, key: str | None = None) -> list[LockStatus]:
        """The lock_status rows of this run (of `key` only, when given)."""
        return [
            s
            for s in lock_status(self.admin)
            if s.key.startswith(self.prefix) and key in (None, s.key)
        ]

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
        webhooks, opening = self._race(key, count)
        self.report.line(
            f"{count} connections opened in {opening:.2f} s, then one barrier released them all"
        )
        winners = [w for w in webhooks if w.lock.acquired]
        winner = winners[0] if len(winners) == 1 else None
        if winner is not None:
            wrote = "wrote the reply" if winner.replied else "could NOT write its reply"
            self.report.line(
                f"{winner.name} got the lock (token {winner.lock.token}) and {wrote}; "
                f"{count - 1} were answered acquired = false"
            )
        else:
            self.report.line(f"{len(winners)} of {count} webhooks were answered acquired = true")
        times = sorted(w.seconds for w in webhooks)
        self.report.line(
            f"response times (from the barrier): min {ms(times[0])}, "
            f"median {ms(statistics.median(times))}, max {ms(times[-1])}"
        )
        for check in checks.race_checks(webhooks, self.replies(key)):
            self.report.add(check)
        return key, winner

    def _race(self, key: str, count: int) -> tuple[list[Webhook], float]:
        """`count` webhooks, each on a connection of its own, released together by one
        barrier; what each got, and how long opening the connections took."""
        released: list[float] = []
        barrier = threading.Barrier(
            count, action=lambda: released.append(time.perf_counter()), timeout=BARRIER_TIMEOUT
        )
        opening = time.perf_counter()
        with ThreadPoolExecutor(max_workers=count) as pool:
            futures = [
                pool.submit(self._webhook, key, f"webhook-{i}", barrier)
                for i in range(1, count + 1)
            ]
            errors = [e for e in (f.exception() for f in futures) if e is not None]
        if errors:  # the first real failure, not the broken barrier it caused
            real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
            raise (real or errors)[0]
        return [f.result() for f in futures], released[0] - opening

    def _webhook(self, key: str, name: str, barrier: threading.Barrier) -> Webhook:
        """One webhook: connect, wait for the others, take the lock, reply when it won."""
        try:
            conn = connect(self.url)
        except BaseException:
            barrier.abort()
            raise
        with conn:
            barrier.wait()
            start = time.perf_counter()
            lock = lock_acquire(conn, key, name, ttl=RACE_TTL)
            seconds = time.perf_counter() - start
            replied = lock.acquired and self.fenced_reply(conn, key, name, lock.token or 0) == 1
        return Webhook(name, lock, seconds, replied)

    # Scene 2 -----------------------------------------------------------------------
    def release(self, key: str, winner: Webhook) -> None:
        self.report.heading("2. Only the owner can release")
        intruder = "webhook-2" if winner.name != "webhook-2" else "webhook-1"
        refused = not lock_release(self.admin, key, intruder)
        still_held = lock_is_current(self.admin, key, winner.lock.token or 0)
        self.report.line(f"{intruder} (not the holder) calls lock_release: refused = {refused}")
        self.report.add(checks.non_owner_release_refused(winner.name, refused, still_held))
        released = lock_release(self.admin, key, winner.name)
        self.report.add(checks.owner_release_frees(winner.name, released, self.held(key)))

    # Scenes 3 and 4 ----------------------------------------------------------------
    def takeover(self) -> None:
        key = f"{self.prefix}bob"
        self.report.heading("3. A holder crashes, its lease runs out, another takes over")
        with connect(self.url) as conn_a:
            a = lock_acquire(conn_a, key, CRASHED, ttl=CRASH_TTL)
        self.report.line(
            f"{CRASHED} takes {key!r} (token {a.token}, lease "
            f"{CRASH_TTL.total_seconds():g} s) and crashes unreleased"
        )
        with connect(self.url) as conn_b, connect(self.url) as conn_late:
            b = self._take_over(conn_b, key, a)
            self._late_holder(conn_late, conn_b, key, a, b)
            self.report.heading("4. What pgcoord.lock_status shows now")
            self._show_status(key, a, b)
            released = lock_release(conn_b, key, SUCCESSOR)
            self.report.add(checks.owner_release_frees(SUCCESSOR, released, self.held(key)))

    def _take_over(self, conn: psycopg.Connection[Any], key: str, a: Lock) -> Lock:
        """The successor asks at once (refused), then waits on the server until the
        crashed holder's lease runs out."""
        first = lock_acquire(conn, key, SUCCESSOR, ttl=RACE_TTL)
        self.report.add(checks.live_lease_refuses(CRASHED, a, SUCCESSOR, first))
        now = server_clock(conn)
        remaining = max((a.expires_at or now) - now, timedelta(0))
        start = time.perf_counter()
        b = lock_acquire(conn, key, SUCCESSOR, ttl=RACE_TTL, wait=remaining + WAIT_MARGIN)
        self.report.line(
            f"{SUCCESSOR} waits (p_wait, server clock): granted after "
            f"{time.perf_counter() - start:.2f} s, token {b.token}, took_over = {b.took_over}"
        )
        self.report.add(checks.took_over_with_larger_token(a, SUCCESSOR, b))
        return b

    def _late_holder(
        self,
        conn_late: psycopg.Connection[Any],
        conn_b: psycopg.Connection[Any],
        key: str,
        a: Lock,
        b: Lock,
    ) -> None:
        """The crashed holder comes back late, on a new connection, still believing it
        holds the lock; then both write fenced."""
        late_release = lock_release(conn_late, key, CRASHED)
        late_extend = lock_extend(conn_late, key, CRASHED, ttl=CRASH_TTL)
        late_current = lock_is_current(conn_late, key, a.token or 0)
        self.report.line(
            f"{CRASHED} wakes up: release -> {late_release}, extend -> {late_extend}, "
            f"is_current(token {a.token}) -> {late_current}"
        )
        self.report.add(
            checks.stale_holder_refused(CRASHED, late_release, late_extend, late_current)
        )
        stale_rows = self.fenced_reply(conn_late, key, CRASHED, a.token or 0)
        fresh_rows = self.fenced_reply(conn_b, key, SUCCESSOR, b.token or 0)
        self.report.add(
            checks.fenced_write_only_current(
                (CRASHED, a), (SUCCESSOR, b), (stale_rows, fresh_rows), self.replies(key)
            )
        )

    def _show_status(self, key: str, a: Lock, b: Lock) -> None:
        rows = self.held(key)
        for s in rows:
            self.report.line(
                f"{s.key}  owner {s.owner}  token {s.token}  "
                f"lease {(s.expires_at - s.acquired_at).total_seconds():g} s  "
                f"expired = {s.expired}"
            )
        self.report.add(checks.one_live_row_after_expiry(rows, (CRASHED, a), (SUCCESSOR, b)))
