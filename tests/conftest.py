"""Shared fixtures: one server per session, a template database with pgcoord installed,
and a fresh clone of it per test; and PgBouncer in transaction mode in front of that
server, for the tests that run through a pooler.

The server is PGCOORD_TEST_URL or DATABASE_URL when set, else an embedded PostgreSQL
started for the session. The pooler tests (files test_pooler_*, and any test using the
`pooler` fixture) are marked `pooler`: where PgBouncer cannot be installed they fail,
and `-m "not pooler"` leaves them out on purpose.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from poolerkit import Pooler, pgbouncer
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pytest_postgresql.janitor import DatabaseJanitor

from pgcoord import releases
from pgcoord.embedded import embedded_server


def pytest_configure(config: pytest.Config) -> None:
    # a shell starts a background job with SIGINT ignored (scripts/test runs the suites
    # of two servers at once that way), and the commands the tests start would inherit
    # that: the tests of Ctrl-C need it delivered
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config.addinivalue_line("markers", "pooler: runs through PgBouncer in transaction mode")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name.startswith("test_pooler") or "pooler" in getattr(
            item, "fixturenames", ()
        ):
            item.add_marker(pytest.mark.pooler)


def janitor(server_url: str, dbname: str, template: str | None = None) -> DatabaseJanitor:
    params = conninfo_to_dict(server_url)
    return DatabaseJanitor(
        user=str(params.get("user") or "postgres"),
        password=str(params["password"]) if params.get("password") else None,
        host=str(params.get("host") or "localhost"),
        port=str(params.get("port") or 5432),
        dbname=dbname,
        template_dbname=template,
        maintenance_dbname=str(params.get("dbname") or "postgres"),
    )


def database_url(server_url: str, dbname: str) -> str:
    return make_conninfo(server_url, dbname=dbname)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A server where the tests may create and drop databases."""
    url = os.environ.get("PGCOORD_TEST_URL") or os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    with embedded_server() as url:
        yield url


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    """A database with the newest release installed, cloned by `db_url`."""
    name = unique_name("pgcoord_tpl")
    with janitor(server_url, name) as jan:
        with psycopg.connect(database_url(server_url, name), autocommit=True) as conn:
            conn.execute(releases.install_sql())
        yield jan.dbname


@pytest.fixture
def empty_db_url(server_url: str) -> Iterator[str]:
    """A fresh database without pgcoord."""
    name = unique_name("pgcoord_empty")
    with janitor(server_url, name):
        yield database_url(server_url, name)


@pytest.fixture
def db_url(server_url: str, template_db: str) -> Iterator[str]:
    """A fresh database with pgcoord installed, for one test."""
    name = unique_name("pgcoord_test")
    with janitor(server_url, name, template=template_db):
        yield database_url(server_url, name)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the test's database."""
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="session")
def pooler(server_url: str) -> Iterator[Pooler]:
    """PgBouncer in transaction mode in front of the session's server (see poolerkit).
    Fails, never skips, when PgBouncer cannot start."""
    with pgbouncer(server_url) as running:
        yield running


@pytest.fixture(scope="session")
def pooler_url(pooler: Pooler) -> str:
    """The server's own database through the pooler."""
    return pooler.url


@pytest.fixture
def pooled_db_url(pooler: Pooler, db_url: str) -> str:
    """The test's database (`db_url`) through the pooler."""
    return pooler.database_url(db_url)


@contextmanager
def fresh_role(conn: psycopg.Connection[Any], role: str) -> Iterator[str]:
    """A LOGIN role with no grants, named `role`; its sessions ended and it dropped after
    (roles are cluster-wide: give a unique name)."""
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        yield role
    finally:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
        )
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def login_role(conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A fresh LOGIN role with no grants."""
    with fresh_role(conn, unique_name("pgcoord_test_role")) as role:
        yield role


@pytest.fixture
def outsider(conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A fresh LOGIN role with no grants, whose name SQL must quote."""
    with fresh_role(conn, f"Pgcoord Outsider {uuid.uuid4().hex[:8]}") as role:
        yield role
