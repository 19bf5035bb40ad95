"""A database of another version is refused, with a reason, and left as it was."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from installkit import assert_same_schema, install_file, psql_argv, run, snapshot

from pgcoord import cli, migrations, releases
from pgcoord.locks import lock_acquire, lock_status


def record_version(url: str, version: str) -> None:
    """Make the database report `version` as installed (the newest schema_version row)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO pgcoord.schema_version (version) VALUES (%s)", (version,))
        row = conn.execute("SELECT pgcoord.version()").fetchone()
    assert row == (version,)


def test_install_file_and_migrate_refuse_an_unknown_older_version(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        held = lock_acquire(conn, "guarded", "worker-1", ttl=timedelta(hours=1))
    record_version(db_url, "0.0.9")
    before = snapshot(db_url)

    refused = run(psql_argv(db_url, install_file()))
    assert refused.returncode != 0
    assert (
        f"55000: pgcoord 0.0.9 is installed here; this file installs {releases.latest()}"
        in refused.stderr
    )
    with pytest.raises(migrations.MigrationError, match=r"0\.0\.9 is installed.*not a release"):
        migrations.migrate(db_url)

    assert_same_schema(snapshot(db_url), before)
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert [lock.token for lock in lock_status(conn)] == [held.token]


def test_migrate_reports_the_guard_of_a_release_file(empty_db_url: str) -> None:
    # a schema_version table without pgcoord.version(): migrate reads "not installed",
    # runs install.sql, and the file's own guard refuses
    with psycopg.connect(empty_db_url) as conn:
        conn.execute(
            "CREATE SCHEMA pgcoord;"
            " CREATE TABLE pgcoord.schema_version (version text PRIMARY KEY,"
            " installed_at timestamptz NOT NULL DEFAULT clock_timestamp());"
            " INSERT INTO pgcoord.schema_version VALUES ('0.0.9')"
        )
        conn.commit()

        with pytest.raises(migrations.MigrationError) as raised:
            migrations.migrate(conn)

        assert raised.value.sqlstate == "55000"
        assert f"{releases.latest()}/install.sql failed: pgcoord 0.0.9" in str(raised.value)
        assert raised.value.hint and "pgcoord migrate" in raised.value.hint
        # the caller's connection is usable and as it was
        assert conn.autocommit is False
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        row = conn.execute("SELECT to_regclass('pgcoord.locks') IS NULL").fetchone()
        assert row == (True,)


def test_migrate_refuses_a_newer_installed_version(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    record_version(db_url, "9.0.0")

    with pytest.raises(migrations.MigrationError, match="upgrade the pgcoord package"):
        migrations.migrate(db_url)
    assert cli.main(["migrate", "--database-url", db_url]) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "pgcoord 9.0.0 is installed, newer than" in err


def test_plan() -> None:
    newest = releases.latest()
    assert migrations.plan(None) == [(newest, "install.sql")]
    assert migrations.plan(newest) == []
    assert migrations.plan(newest, newest) == []
    with pytest.raises(migrations.MigrationError, match=r"unknown pgcoord release 7\.7\.7"):
        migrations.plan(None, "7.7.7")


def test_migrate_needs_a_connection_outside_a_transaction(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(migrations.MigrationError, match="not inside a transaction"):
            migrations.migrate(conn)
        conn.rollback()

        assert migrations.migrate(conn) == (releases.latest(), releases.latest())
        assert conn.autocommit is False
        # the install lock was given back
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ).fetchone()
        assert row == (0,)
