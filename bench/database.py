"""The server a bench runs on, and a scratch database on it with pgcoord installed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgcoord import releases

from .server_cpu import ServerCpu


@contextmanager
def server(url: str | None) -> Iterator[str]:
    """`url` when given, else a throwaway embedded server for the duration."""
    if url:
        yield url
        return
    from pgcoord.embedded import embedded_server

    with embedded_server() as embedded_url:
        yield embedded_url


class ScratchDatabase:
    """A fresh database with the newest release installed. Its statistics are read over
    a connection to the server's maintenance database, so that reading them adds no
    transactions to the database being measured."""

    def __init__(self, server_url: str, name: str, admin: psycopg.Connection[Any]) -> None:
        self.name = name
        self.server_url = server_url
        self.url = make_conninfo(server_url, dbname=name)
        self._admin = admin
        self.server_cpu: ServerCpu | None = None

    def reset(self) -> None:
        """Empty pgcoord.locks (the runs leave dead rows behind) and wait until no client
        is connected, so every run starts from the same state."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("TRUNCATE pgcoord.locks")
        self.wait_until_idle()

    def wait_until_idle(self, timeout: float = 30.0) -> None:
        """Wait until every client backend of this database has ended: a backend reports
        its last statistics when it exits."""
        deadline = time.monotonic() + timeout
        while self._clients() > 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"clients still connected to {self.name} after {timeout} s")
            time.sleep(0.02)

    def _clients(self) -> int:
        row = self._admin.execute(
            "SELECT count(*) FROM pg_catalog.pg_stat_activity"
            " WHERE datname = %s AND backend_type = 'client backend'",
            [self.name],
        ).fetchone()
        return int(row[0]) if row else 0

    def server_cpu_seconds(self) -> float | None:
        """CPU seconds the server has used so far, when it runs on this machine."""
        return None if self.server_cpu is None else self.server_cpu.seconds()

    def committed_transactions(self) -> int:
        """pg_stat_database.xact_commit of this database."""
        row = self._admin.execute(
            "SELECT xact_commit FROM pg_catalog.pg_stat_database WHERE datname = %s",
            [self.name],
        ).fetchone()
        return int(row[0]) if row else 0

    def wal_flushes(self) -> int:
        """WAL flushes to disk so far, by every process of the server (commits, the WAL
        writer, checkpoints): pg_stat_wal.wal_sync up to PostgreSQL 17; from 18, where
        that counter moved, the WAL fsyncs of pg_stat_io (context normal). Both count the
        fsync or fdatasync calls of issue_xlog_fsync; a commit whose WAL another process
        already flushed (group commit) adds none."""
        if self._admin.info.server_version >= 180000:
            query: LiteralString = (
                "SELECT sum(fsyncs) FROM pg_catalog.pg_stat_io"
                " WHERE object = 'wal' AND context = 'normal'"
            )
        else:
            query = "SELECT wal_sync FROM pg_catalog.pg_stat_wal"
        row = self._admin.execute(query).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def wal_position(self) -> int:
        """Bytes of WAL written so far (pg_current_wal_lsn as a number)."""
        row = self._admin.execute(
            "SELECT pg_catalog.pg_current_wal_lsn() - '0/0'::pg_catalog.pg_lsn"
        ).fetchone()
        return int(row[0]) if row else 0

    def settings(self) -> dict[str, str]:
        """The server settings that move these figures."""
        names = [
            "server_version",
            "synchronous_commit",
            "fsync",
            "wal_sync_method",
            "commit_delay",
            "shared_buffers",
            "max_connections",
        ]
        rows = self._admin.execute(
            "SELECT name, current_setting(name)"
            " FROM pg_catalog.pg_settings WHERE name = ANY(%s) ORDER BY name",
            [names],
        ).fetchall()
        return {str(name): str(value) for name, value in rows}


@contextmanager
def scratch_database(server_url: str) -> Iterator[ScratchDatabase]:
    """Create the database, install pgcoord into it, and drop it on exit."""
    name = f"pgcoord_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            database = ScratchDatabase(server_url, name, admin)
            with psycopg.connect(database.url, autocommit=True) as conn:
                conn.execute(releases.install_sql())
                database.server_cpu = ServerCpu.find(conn.info.backend_pid)
            database.wait_until_idle()
            yield database
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
