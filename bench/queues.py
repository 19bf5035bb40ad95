"""The queues `scripts/bench campaigns` compares, each in a schema of its own in the scratch
database: how to install it, empty it, load a backlog of messages, and count the messages
processed so far.

- pgcoord: the campaign send queue (pgcoord.campaign_*), worked by CampaignWorker
  processes (`pgcoord`) or by pgbench through the SQL functions (`functions`);
- plain: one row per message in bench_plain.messages, worked by pgbench with the plain
  SQL a careful user writes (bench/pgbench/campaign_plain.sql), the ceiling;
- PgQueuer and Procrastinate (the `bench` extra), worked by their own workers.

Every message carries the same recipient and payload on each queue.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, LiteralString

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgcoord import campaigns

PGQUEUER_SCHEMA = "pgqueuer"
PROCRASTINATE_SCHEMA = "procrastinate"
TASK = "noop"  # PgQueuer's entrypoint and Procrastinate's task
ENQUEUE_CHUNK = 100_000  # messages per enqueue call when loading a backlog (one transaction)

PLAIN_SCHEMA: LiteralString = """
CREATE SCHEMA bench_plain;
CREATE TABLE bench_plain.messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient text NOT NULL,
    payload jsonb NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    scheduled_at timestamptz NOT NULL,
    claim_token bigint,
    claimed_by text,
    lease_until timestamptz,
    sent_at timestamptz,
    metrics jsonb
);
CREATE INDEX messages_pending ON bench_plain.messages (scheduled_at) WHERE status = 'pending';
CREATE SEQUENCE bench_plain.claim_token AS bigint;
"""

PLAIN_BACKLOG: LiteralString = """
INSERT INTO bench_plain.messages (recipient, payload, scheduled_at)
SELECT
    '+1555' || lpad(n::text, 7, '0'),
    jsonb_build_object('name', 'Customer ' || n, 'template', 'spring-sale'),
    clock_timestamp()
FROM generate_series(1, %(count)s) AS n
"""

PGCOORD_TABLES: LiteralString = (
    "pgcoord.campaign_runs, pgcoord.campaign_enqueues, pgcoord.campaign_messages, "
    "pgcoord.campaign_queue, pgcoord.campaign_outcomes"
)


def recipient(n: int) -> str:
    return f"+1555{n:07d}"


def payload(n: int) -> dict[str, Any]:
    return {"name": f"Customer {n}", "template": "spring-sale"}


def items(first: int, count: int) -> list[dict[str, Any]]:
    """campaign_enqueue items n = first .. first + count - 1, due now."""
    return [{"recipient": recipient(n), "payload": payload(n)} for n in range(first, first + count)]


@dataclass(frozen=True)
class Queue:
    name: str
    schema: str
    tables: LiteralString  # emptied before every run
    done_sql: LiteralString  # messages processed so far (%(backlog)s: the backlog loaded)
    load: Callable[[str, int], None]  # (database url, messages): load a backlog, due now
    install: Callable[[str], None]

    def reset(self, url: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {self.tables}")

    def rows_read(self, url: str) -> Counter[str]:
        """Rows each table and index of the queue has given to scans so far (a table's
        sequential scans' rows, an index's entries), as the server's statistics count them
        once a backend has reported: a claim that steps over dead entries, or a plan that
        reads a whole table, shows here."""
        with psycopg.connect(url, autocommit=True) as conn:
            return read_by(conn, self.schema, "pg_stat_get_tuples_returned")

    def done(self, conn: psycopg.Connection[Any], backlog: int) -> int:
        row = conn.execute(self.done_sql, {"backlog": backlog}).fetchone()
        assert row is not None
        return int(row[0])

    def counted(self, conn: psycopg.Connection[Any], backlog: int) -> tuple[int, Counter[str]]:
        """done(), and the rows its own count read (to leave out of rows_read)."""
        with conn.transaction():
            done = self.done(conn, backlog)
            return done, read_by(conn, self.schema, "pg_stat_get_xact_tuples_returned")


def read_by(
    conn: psycopg.Connection[Any],
    schema: str,
    function: Literal["pg_stat_get_tuples_returned", "pg_stat_get_xact_tuples_returned"],
) -> Counter[str]:
    """Rows returned to scans by each table and index of `schema`: so far, or in this
    transaction."""
    rows = conn.execute(
        sql.SQL(
            "SELECT c.relname::text, pg_catalog.{}(c.oid) FROM pg_catalog.pg_class AS c"
            " JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'i', 'p')"
        ).format(sql.Identifier(function)),
        [schema],
    ).fetchall()
    return Counter({str(name): int(n) for name, n in rows if n})


def _pgcoord_install(url: str) -> None:
    """pgcoord is installed with the scratch database."""


def pgcoord_load(url: str, count: int, *, status: str = "running") -> int:
    """A new run with `count` messages due now, enqueued ENQUEUE_CHUNK at a time; returns
    the run id. With status 'paused' the run is paused before the enqueue."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        run_id = campaigns.campaign_create(conn, "bench")
        if status != "running":
            campaigns.campaign_set_status(conn, run_id, status)
        for first in range(1, count + 1, ENQUEUE_CHUNK):
            chunk = min(ENQUEUE_CHUNK, count + 1 - first)
            campaigns.campaign_enqueue(conn, run_id, items(first, chunk))
    return run_id


def _pgcoord_load(url: str, count: int) -> None:
    pgcoord_load(url, count)


def _plain_install(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PLAIN_SCHEMA)


def _plain_load(url: str, count: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PLAIN_BACKLOG, {"count": count})


def asyncpg_args(conninfo: str) -> dict[str, Any]:
    """asyncpg.connect's arguments for a libpq conninfo (URL or key=value)."""
    found = conninfo_to_dict(conninfo)
    names = {"host": "host", "port": "port", "user": "user", "password": "password"}
    args: dict[str, Any] = {new: found[old] for old, new in names.items() if found.get(old)}
    args["database"] = found.get("dbname") or os.environ.get("PGDATABASE") or "postgres"
    if "port" in args:
        args["port"] = int(args["port"])
    return args


def pgqueuer_queries(conn: Any) -> Any:
    os.environ["PGQUEUER_SCHEMA"] = PGQUEUER_SCHEMA
    from pgqueuer import AsyncpgDriver
    from pgqueuer.domain.settings import db_settings
    from pgqueuer.queries import Queries

    db_settings.cache_clear()
    return Queries(AsyncpgDriver(conn))


def _pgqueuer_install(url: str) -> None:
    async def install() -> None:
        import asyncpg

        conn = await asyncpg.connect(**asyncpg_args(url))
        try:
            await pgqueuer_queries(conn).install()
        finally:
            await conn.close()

    asyncio.run(install())


def _pgqueuer_load(url: str, count: int) -> None:
    """PgQueuer's batch enqueue: one statement for ENQUEUE_CHUNK jobs."""

    async def load() -> None:
        import asyncpg

        conn = await asyncpg.connect(**asyncpg_args(url))
        try:
            queries = pgqueuer_queries(conn)
            async with conn.transaction():
                await _pgqueuer_enqueue(queries, count)
        finally:
            await conn.close()

    asyncio.run(load())


async def _pgqueuer_enqueue(queries: Any, count: int) -> None:
    for first in range(1, count + 1, ENQUEUE_CHUNK):
        numbers = range(first, first + min(ENQUEUE_CHUNK, count + 1 - first))
        await queries.enqueue(
            [TASK] * len(numbers),
            [
                json.dumps({"recipient": recipient(n), "payload": payload(n)}).encode()
                for n in numbers
            ],
            [0] * len(numbers),
        )


def procrastinate_app(url: str) -> Any:
    import procrastinate as pc

    options = f"-c search_path={PROCRASTINATE_SCHEMA}"
    app = pc.App(connector=pc.PsycopgConnector(conninfo=make_conninfo(url, options=options)))

    @app.task(name=TASK)
    async def noop(recipient: str, payload: dict[str, Any]) -> None:
        return None

    return app


def _procrastinate_install(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {PROCRASTINATE_SCHEMA}")

    async def install() -> None:
        app = procrastinate_app(url)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    asyncio.run(install())


def _procrastinate_load(url: str, count: int) -> None:
    """Procrastinate's batch defer: one call for ENQUEUE_CHUNK jobs."""

    async def load() -> None:
        app = procrastinate_app(url)
        async with app.open_async():
            task = app.tasks[TASK]
            for first in range(1, count + 1, ENQUEUE_CHUNK):
                numbers = range(first, first + min(ENQUEUE_CHUNK, count + 1 - first))
                await task.batch_defer_async(
                    *({"recipient": recipient(n), "payload": payload(n)} for n in numbers)
                )

    asyncio.run(load())


PGCOORD = Queue(
    name="pgcoord",
    schema="pgcoord",
    tables=PGCOORD_TABLES,
    done_sql="SELECT count(*) FROM pgcoord.campaign_outcomes WHERE %(backlog)s IS NOT NULL",
    load=_pgcoord_load,
    install=_pgcoord_install,
)
PLAIN = Queue(
    name="plain",
    schema="bench_plain",
    tables="bench_plain.messages",
    done_sql="SELECT count(*) FROM bench_plain.messages WHERE status = 'sent' "
    "AND %(backlog)s IS NOT NULL",
    load=_plain_load,
    install=_plain_install,
)
PGQUEUER = Queue(
    name="pgqueuer",
    schema=PGQUEUER_SCHEMA,
    tables="pgqueuer.pgqueuer, pgqueuer.pgqueuer_log, pgqueuer.pgqueuer_statistics",
    # a job leaves the queue table when its completion is logged
    done_sql="SELECT %(backlog)s - count(*) FROM pgqueuer.pgqueuer",
    load=_pgqueuer_load,
    install=_pgqueuer_install,
)
PROCRASTINATE = Queue(
    name="procrastinate",
    schema=PROCRASTINATE_SCHEMA,
    tables="procrastinate.procrastinate_jobs CASCADE",
    done_sql="SELECT count(*) FROM procrastinate.procrastinate_jobs WHERE status = 'succeeded' "
    "AND %(backlog)s IS NOT NULL",
    load=_procrastinate_load,
    install=_procrastinate_install,
)

# the libraries a peer needs (the `bench` extra)
PEER_MODULES = {PGQUEUER.name: ("pgqueuer", "asyncpg"), PROCRASTINATE.name: ("procrastinate",)}


def missing_peer(name: str) -> str | None:
    """Why the peer `name` cannot run here, or None when its libraries import."""
    import importlib

    for module in PEER_MODULES[name]:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return (
                f"{module} is not installed ({exc}); install the bench extra: "
                "pip install -e '.[bench]'"
            )
    return None


def peer_version(name: str) -> str:
    """The installed versions of the peer's libraries."""
    from importlib.metadata import version

    return ", ".join(f"{module} {version(module)}" for module in PEER_MODULES[name])


def add_no_peers(parser: argparse.ArgumentParser) -> None:
    """The --no-peers option of a bench that runs PgQueuer and Procrastinate."""
    parser.add_argument(
        "--no-peers",
        dest="peers",
        action="store_false",
        help="leave out PgQueuer and Procrastinate (the `bench` extra)",
    )


def install_peers(url: str, wanted: bool) -> dict[str, dict[str, Any]]:
    """Install each peer's schema; for each, its status ("ran": installed; "left out":
    not `wanted`; "missing": its libraries or its install failed) with its version or
    the reason, printed (a bench goes on without it)."""
    peers: dict[str, dict[str, Any]] = {}
    for queue in (PGQUEUER, PROCRASTINATE):
        if not wanted:
            peers[queue.name] = {"status": "left out", "reason": "--no-peers"}
            continue
        reason = missing_peer(queue.name)
        if reason is None:
            try:
                queue.install(url)
            except Exception as exc:
                reason = f"installing its schema failed: {type(exc).__name__}: {exc}"
        if reason is None:
            peers[queue.name] = {"status": "ran", "version": peer_version(queue.name)}
        else:
            peers[queue.name] = {"status": "missing", "reason": reason}
            print(f"{queue.name}: {reason}", file=sys.stderr, flush=True)
    return peers
