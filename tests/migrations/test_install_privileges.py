"""What an install needs: CREATE on the database, and CREATEROLE only to create the role
pgcoord_client, which it skips when the role exists (an administrator may create it
first). A role lacking a privilege is told, on one line, what the install needs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgcoord import cli, migrations, releases


@pytest.fixture
def installer(empty_db_url: str) -> Iterator[str]:
    """A LOGIN role without CREATEROLE (roles are cluster-wide: a unique name, dropped
    at the end with what it owns)."""
    role = f"pgcoord_installer_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(empty_db_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOCREATEROLE").format(sql.Identifier(role)))
    try:
        yield role
    finally:
        with psycopg.connect(empty_db_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            admin.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_role_without_createrole_installs_when_pgcoord_client_exists(
    empty_db_url: str, installer: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as admin:
        # the session's template database created the role, as an administrator would
        row = admin.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'pgcoord_client'")
        assert row.fetchone() == (1,)
        admin.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(admin.info.dbname), sql.Identifier(installer)
            )
        )
    url = make_conninfo(empty_db_url, user=installer)

    assert cli.main(["migrate", "--database-url", url]) == 0

    assert capsys.readouterr().out.startswith(f"installed pgcoord {releases.latest()} in ")
    with psycopg.connect(url, autocommit=True) as conn:
        assert migrations.installed_version(conn) == releases.latest()
        owner = conn.execute(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'pgcoord'"
        ).fetchone()
    assert owner == (installer,)


def test_a_role_lacking_a_privilege_is_told_what_the_install_needs(
    empty_db_url: str, installer: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = make_conninfo(empty_db_url, user=installer)

    assert cli.main(["migrate", "--database-url", url]) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"pgcoord: error: {releases.latest()}/install.sql failed: permission ")
    assert err.endswith(f"({migrations.PRIVILEGES})\n")
    with psycopg.connect(url, autocommit=True) as conn:
        assert migrations.installed_version(conn) is None
