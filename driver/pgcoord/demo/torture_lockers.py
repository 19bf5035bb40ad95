"""The torture's lock contenders: processes that take one of a few contested keys with a
short lease, work a while, write their fencing token into the ledger only while it is
the key's live grant, and release, again and again.

    python -m pgcoord.demo.torture_lockers --schema S --prefix P --name N [--database-url URL]

A contender stopped past its lease (SIGSTOP, then SIGCONT) wakes up a zombie: it still
believes it holds the key, and its late write must be refused. When its connection
fails (the server restarted, the connection was terminated), it connects again and
makes the same call again, as a careful client would; a write made again after its
lease ran out is refused like a zombie's.

The write and its record are one statement (`FENCED_WRITE`), in the ledger's schema:

  lock_tries   every fenced write a contender made: key, token, owner, and whether the
               fence (`pgcoord.lock_is_current` in the write's own WHERE) let it through
  lock_writes  the fenced effect: a row only when it did; no unique constraint, so two
               holders writing in one grant's time would show instead of failing

The process registers in the ledger's roster when connected, stops on SIGTERM or SIGINT
(releasing a key it holds), and by itself when the process that started it is gone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from types import FrameType
from typing import Any, LiteralString

import psycopg

from pgcoord.locks import lock_acquire, lock_release

from .ledger import REGISTER, Ledger
from .server import Link
from .storm_worker import _think as milliseconds

TTL = timedelta(seconds=1)
HOLD = (0.2, 0.5)  # seconds a holder works before its write, from..to
BUSY = (0.01, 0.05)  # seconds a contender waits after finding its key held, from..to
KEYS = 2

LOCK_TABLES: LiteralString = (
    "CREATE TABLE {schema}.lock_tries ("
    " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " key text NOT NULL,"
    " token bigint NOT NULL,"
    " owner text NOT NULL,"
    " current boolean NOT NULL,"
    " tried_at timestamptz NOT NULL DEFAULT clock_timestamp());"
    " CREATE TABLE {schema}.lock_writes ("
    " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " key text NOT NULL,"
    " token bigint NOT NULL,"
    " owner text NOT NULL,"
    " written_at timestamptz NOT NULL DEFAULT clock_timestamp())"
)
# The fence is evaluated once (a CTE used twice is computed once) and both the effect and
# the record of the try follow from it, in one statement (a data-modifying CTE always
# runs to completion).
FENCED_WRITE: LiteralString = (
    "WITH fence AS ("
    " SELECT pgcoord.lock_is_current(p_key => %(key)s, p_token => %(token)s) AS current),"
    " effect AS ("
    " INSERT INTO {schema}.lock_writes (key, token, owner)"
    " SELECT %(key)s, %(token)s, %(owner)s FROM fence WHERE fence.current"
    " RETURNING 1)"
    " INSERT INTO {schema}.lock_tries (key, token, owner, current)"
    " SELECT %(key)s, %(token)s, %(owner)s, fence.current"
    " FROM fence RETURNING current"
)
TRIES: LiteralString = (
    "SELECT key, token, owner, current, tried_at FROM {schema}.lock_tries ORDER BY tried_at, id"
)
WRITES: LiteralString = (
    "SELECT key, token, owner, written_at FROM {schema}.lock_writes ORDER BY written_at, id"
)
# a live grant of a contender that it got within the last `fresh` and has not written
# with yet: a stop now lands before its write
FRESH_HOLDS: LiteralString = (
    "SELECT s.owner, s.key, s.token FROM pgcoord.lock_status AS s"
    " WHERE starts_with(s.key, %(prefix)s) AND NOT s.expired"
    " AND s.acquired_at > clock_timestamp() - %(fresh)s"
    " AND NOT EXISTS (SELECT FROM {schema}.lock_tries AS t"
    " WHERE t.key = s.key AND t.token = s.token)"
    " ORDER BY s.acquired_at DESC"
)
LIVE: LiteralString = (
    "SELECT key, owner, token FROM pgcoord.lock_status"
    " WHERE starts_with(key, %(prefix)s) AND NOT expired ORDER BY key"
)


@dataclass(frozen=True, slots=True)
class LockTry:
    """A fenced write a contender made, and whether the fence let it through."""

    key: str
    token: int
    owner: str
    current: bool
    tried_at: datetime


@dataclass(frozen=True, slots=True)
class LockWrite:
    """A row of the fenced effect."""

    key: str
    token: int
    owner: str
    written_at: datetime


@dataclass(frozen=True, slots=True)
class Hold:
    """A contender's live grant."""

    owner: str
    key: str
    token: int


class LockLedger(Ledger):
    """The torture's schema: the storm's ledger (its roster, claims and replies) and the
    contenders' tries and fenced writes."""

    tables = Ledger.tables + ";" + LOCK_TABLES

    def register_now(self, conn: psycopg.Connection[Any], name: str, pid: int) -> None:
        """The contender `name` is ready (the roster's register, from a sync client)."""
        conn.execute(self.query(REGISTER), {"name": name, "pid": pid})

    def write(self, conn: psycopg.Connection[Any], key: str, token: int, owner: str) -> bool:
        """The fenced write; whether the fence let it through."""
        params = {"key": key, "token": token, "owner": owner}
        row = conn.execute(self.query(FENCED_WRITE), params).fetchone()
        return bool(row and row[0])

    def lock_tries(self, conn: psycopg.Connection[Any]) -> list[LockTry]:
        return self.rows(conn, LockTry, TRIES)

    def lock_writes(self, conn: psycopg.Connection[Any]) -> list[LockWrite]:
        return self.rows(conn, LockWrite, WRITES)

    def fresh_holds(
        self, conn: psycopg.Connection[Any], prefix: str, fresh: timedelta
    ) -> list[Hold]:
        """Grants of the keys under `prefix` made within `fresh` and not written with."""
        return self.rows(conn, Hold, FRESH_HOLDS, {"prefix": prefix, "fresh": fresh})

    def live(self, conn: psycopg.Connection[Any], prefix: str) -> list[Hold]:
        """The live grants of the keys under `prefix`."""
        return self.rows(conn, Hold, LIVE, {"prefix": prefix})


# the contender process ---------------------------------------------------------------


class Contender:
    """One contender: its link to the database (connecting again when it fails), its
    seeded choices, and the stop flag set by SIGTERM, SIGINT or the parent's end."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.name: str = args.name
        self.prefix: str = args.prefix
        self.keys = [f"{args.prefix}{i}" for i in range(args.keys)]
        self.ttl = timedelta(milliseconds=args.ttl_ms)
        self.hold: tuple[float, float] = args.hold
        self.rng = random.Random(f"{args.seed}/{args.name}")
        self.stopping = threading.Event()
        self.ledger = LockLedger(args.schema)
        # a call is made again until it goes through, however long the outage: a stop
        # ends the wait
        self.link = Link(args.database_url, patience=float("inf"), stopping=self.stopping)
        self.parent = os.getppid()

    def register(self) -> None:
        self.link.call(partial(self.ledger.register_now, name=self.name, pid=os.getpid()))

    def run(self) -> None:
        while not self.stopping.is_set() and os.getppid() == self.parent:
            self.turn(self.rng.choice(self.keys))

    def turn(self, key: str) -> None:
        """Take `key`, work, write fenced, release; or wait a moment when it is held."""
        lock = self.link.call(partial(lock_acquire, key=key, owner=self.name, ttl=self.ttl))
        if not lock.acquired:
            self.stopping.wait(self.rng.uniform(*BUSY))
            return
        self.stopping.wait(self.rng.uniform(*self.hold))  # the work: a stop here makes ...
        # ... this the zombie's late write
        token = lock.token or 0  # a grant always has one
        self.link.call(partial(self.ledger.write, key=key, token=token, owner=self.name))
        self.link.call(partial(lock_release, key=key, owner=self.name))

    def stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("no --database-url and no DATABASE_URL")
    contender = Contender(args)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, contender.stop)
    try:
        contender.register()
        contender.run()
    except psycopg.OperationalError:
        if not contender.stopping.is_set():  # a stop during an outage ends quietly
            raise
    finally:
        contender.link.close()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pgcoord.demo.torture_lockers",
        description="Contend for a few keys: acquire with a short lease, work, write the "
        "token fenced by lock_is_current, release; until SIGTERM or SIGINT.",
    )
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--schema", required=True, help="the ledger's schema")
    parser.add_argument("--prefix", required=True, help="of the contested keys")
    parser.add_argument("--name", required=True, help="the contender's name (the lock owner)")
    parser.add_argument("--keys", type=int, default=KEYS, help=f"keys contended (default {KEYS})")
    parser.add_argument("--ttl-ms", type=int, default=int(TTL.total_seconds() * 1000))
    parser.add_argument(
        "--hold-ms",
        dest="hold",
        type=milliseconds,
        default=HOLD,
        help="how long a holder works before its write: MS or MIN-MAX (default 200-500)",
    )
    parser.add_argument("--seed", default="0", help="of the contender's choices")
    return parser


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
