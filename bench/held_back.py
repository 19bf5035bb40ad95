"""Dead tuples while a long transaction holds back vacuum, part of `scripts/bench
campaigns`: one transaction keeps its snapshot open (REPEATABLE READ, as a long report,
a slow migration or a forgotten psql session does) while a backlog is processed through
each queue by its own means; then every table of the queue's schema is vacuumed, and
VACUUM's own count of the dead tuples it could not remove is read, with the schema's
size. The transaction then ends, and a second VACUUM shows that it was what held them.

A row-per-message queue leaves every version a claim or a completion replaced; what
vacuum cannot remove, every claim reads past until the transaction ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, LiteralString

import psycopg
from psycopg import IsolationLevel, sql
from tabulate import tabulate

from .database import ScratchDatabase
from .queues import Queue

BATCH = 15  # what the pgbench scripts claim at a time (named in the report)
CONNECTIONS = 8  # pgbench connections or worker processes per queue

# the other processes of this database holding a snapshot (backend_xmin), whatever
# their kind (client backends, autovacuum workers)
SNAPSHOTS: LiteralString = """
SELECT count(*) FROM pg_catalog.pg_stat_activity
WHERE datname = current_database() AND backend_xmin IS NOT NULL AND pid <> pg_backend_pid()
"""
TABLES: LiteralString = """
SELECT s.relname, s.n_dead_tup,
    pg_catalog.pg_table_size(s.relid) + pg_catalog.pg_indexes_size(s.relid)
FROM pg_catalog.pg_stat_user_tables AS s
WHERE s.schemaname = %(schema)s
ORDER BY s.relname
"""


# works off the queue's backlog of that many messages
Process = Callable[[ScratchDatabase, Queue, int], object]


def measure(
    db: ScratchDatabase, messages: int, processors: list[tuple[Queue, Process]]
) -> list[dict[str, Any]]:
    """For each queue and what processes it: the queue emptied and loaded with
    `messages`, vacuumed, then processed while a transaction holds its snapshot; the
    dead tuples left (per table, after a VACUUM) and the schema's size, before, held and
    after the transaction. (No wait for idle backends meanwhile: the holder is one.)"""
    found = []
    for queue, process in processors:
        queue.reset(db.url)
        queue.load(db.url, messages)
        db.wait_until_idle()
        before = vacuumed(db, queue.schema)
        with psycopg.connect(db.url) as holder:
            holder.isolation_level = IsolationLevel.REPEATABLE_READ
            holder.execute("SELECT 1")  # the snapshot, held until the rollback
            started = time.perf_counter()
            process(db, queue, messages)
            seconds = time.perf_counter() - started
            held = vacuumed(db, queue.schema)
            holder.rollback()
        without_snapshots(db)
        released = vacuumed(db, queue.schema)
        found.append(
            {
                "queue": queue.name,
                "messages": messages,
                "seconds": round(seconds, 2),
                "before": before,
                "held": held,
                "released": released,
            }
        )
    return found


def without_snapshots(db: ScratchDatabase, timeout: float = 30.0) -> None:
    """Wait until no other process of the database holds a snapshot (an autovacuum
    worker's ANALYZE, started while the transaction held its snapshot, holds one too), so
    that the VACUUM after the transaction shows what the transaction alone held back."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(db.url, autocommit=True) as conn:
        while conn.execute(SNAPSHOTS).fetchone() != (0,):
            if time.monotonic() > deadline:
                raise RuntimeError(f"snapshots still held in {db.name} after {timeout} s")
            time.sleep(0.02)


def vacuumed(db: ScratchDatabase, schema: str) -> dict[str, dict[str, int]]:
    """VACUUM every table of `schema`, then each table's dead tuples (what VACUUM could
    not remove, as it reports them) and its size with indexes, bytes."""
    with psycopg.connect(db.url, autocommit=True) as conn:
        names = [row[0] for row in conn.execute(TABLES, {"schema": schema}).fetchall()]
        for table in names:
            conn.execute(sql.SQL("VACUUM {}").format(sql.Identifier(schema, table)))
        # VACUUM writes its figures to the shared statistics as it ends
        return {
            str(table): {"dead": int(dead), "bytes": int(size)}
            for table, dead, size in conn.execute(TABLES, {"schema": schema}).fetchall()
        }


def dead(snapshot: dict[str, dict[str, int]]) -> int:
    return sum(table["dead"] for table in snapshot.values())


def size(snapshot: dict[str, dict[str, int]]) -> int:
    return sum(table["bytes"] for table in snapshot.values())


def lines(found: list[dict[str, Any]] | None, labels: dict[str, str]) -> list[str]:
    """The report's section: per queue, the dead tuples per message held back, against
    the plain table's, and the schema's size."""
    if not found:
        return []
    per_message = {r["queue"]: (dead(r["held"]) - dead(r["before"])) / r["messages"] for r in found}
    plain = per_message.get("plain")
    rows = []
    for r in found:
        held = dead(r["held"]) - dead(r["before"])
        mine = per_message[r["queue"]]
        versus = f"{mine / plain:.3f}" if plain else "-"
        tables = ", ".join(
            f"{table} {counts['dead'] - r['before'].get(table, {}).get('dead', 0):,}"
            for table, counts in r["held"].items()
            if counts["dead"] - r["before"].get(table, {}).get("dead", 0)
        )
        rows.append(
            [
                labels.get(r["queue"], r["queue"]),
                f"{r['messages']:,}",
                f"{held:,}",
                f"{mine:.3f}",
                versus,
                tables or "-",
                f"{size(r['before']) / 1024:,.0f}",
                f"{size(r['held']) / 1024:,.0f}",
                f"{dead(r['released']):,}",
            ]
        )
    messages = found[0]["messages"]
    return [
        "## Dead tuples while a long transaction holds back vacuum",
        "",
        "One transaction holds its snapshot (REPEATABLE READ, as a long report or a "
        f"forgotten psql session does) while {messages:,} messages are processed through "
        f"each queue ({CONNECTIONS} pgbench connections claiming {BATCH} and completing "
        f"them, or {CONNECTIONS} worker processes); then every table of the queue's schema "
        "is vacuumed and VACUUM's count of the dead tuples it could not remove is read. "
        "The transaction then ends and a second VACUUM removes them (the last column). "
        "Dead tuples are what every claim reads past until vacuum may remove them.",
        "",
        tabulate(
            rows,
            headers=[
                "queue",
                "messages",
                "dead tuples held",
                "per message",
                "/ plain table's",
                "by table",
                "kB before",
                "kB after",
                "dead after the transaction ends",
            ],
            tablefmt="github",
            colalign=("left", *("right",) * 4, "left", *("right",) * 3),
            disable_numparse=True,
        ),
        "",
    ]
