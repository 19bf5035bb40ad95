"""Alembic environment for the pgcoord schema.

The database is `-x url=...`, else $DATABASE_URL, else sqlalchemy.url of alembic.ini:
a postgres:// or postgresql[+driver]:// URL (run through psycopg 3, as
postgresql+psycopg://) or a libpq conninfo string ("host=... dbname=...").
A program may instead pass a SQLAlchemy connection in config.attributes["connection"].

Alembic keeps its revision in pgcoord_alembic_version, in the connection's default
schema (normally public): outside schema pgcoord, so a database installed with alembic
has exactly the pgcoord schema of one installed with `pgcoord migrate` or `psql -f`, and
under a name of its own, so it never meets the application's own alembic_version.

Each revision applies one frozen release through the raw psycopg connection, with the
step an application's own Alembic project calls too (pgcoord.alembic.upgrade). The whole
run holds the install lock (a session advisory lock, the key every release file takes),
so concurrent `alembic upgrade`, `pgcoord migrate` and `psql -f` runs take turns.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

import psycopg
from alembic import context, util
from sqlalchemy import Connection, Engine, create_engine, pool, text

from pgcoord.migrations import INSTALL_LOCK

VERSION_TABLE = "pgcoord_alembic_version"

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get("DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
    )
    if not url:
        raise util.CommandError(
            "no database given: pass -x url=postgresql://..., set DATABASE_URL, "
            "or set sqlalchemy.url in alembic.ini"
        )
    return url


def engine_for(url: str) -> Engine:
    """An engine on psycopg 3 for a postgres:// or postgresql[+driver]:// URL, or for a
    libpq key=value conninfo string ("host=... dbname=...")."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return create_engine(
            "postgresql+psycopg://",
            creator=lambda: psycopg.connect(url),
            poolclass=pool.NullPool,
        )
    if scheme in ("postgres", "postgresql") or scheme.startswith("postgresql+"):
        return create_engine(f"postgresql+psycopg://{rest}", poolclass=pool.NullPool)
    raise util.CommandError(f"not a PostgreSQL URL: {scheme}://...")


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=None,
        version_table=VERSION_TABLE,
        transaction_per_migration=True,
    )
    lock = {"key": INSTALL_LOCK}
    connection.execute(text("SELECT pg_advisory_lock(:key)"), lock)
    connection.commit()
    try:
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.rollback()
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), lock)
        connection.commit()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if given is not None:
        run_migrations(given)
        return
    engine = engine_for(database_url())
    try:
        with engine.connect() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise util.CommandError(
        "pgcoord has no offline (--sql) mode: its SQL script is the release's own file, "
        "db/releases/<version>/install.sql, for psql -f"
    )
run_migrations_online()
