"""What an install needs: CREATE on the database, and CREATEROLE only to create the role
pgcoord_client, which it skips when the role exists (an administrator may create it
first). A role lacking a privilege is told, on one line, what the install needs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

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


def _schema_acl(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT a.grantee::regrole::text, a.privilege_type"
        " FROM pg_namespace AS n CROSS JOIN LATERAL aclexplode(n.nspacl) AS a"
        " WHERE n.nspname = 'pgcoord' AND a.grantee <> n.nspowner ORDER BY 1, 2"
    ).fetchall()
    return [(grantee, privilege) for grantee, privilege in rows]


def test_no_role_but_the_owner_keeps_create_on_the_schema(
    empty_db_url: str, installer: str
) -> None:
    """A role that may create in schema pgcoord could put an overload of an internal
    function ahead of pgcoord's own and have it run as the owner: an install takes CREATE
    from every other role, whether the installer's default privileges gave it with the
    schema or a GRANT gave it later; USAGE, granted on purpose, stays."""
    ident = sql.Identifier(installer)
    with psycopg.connect(empty_db_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT ALL ON SCHEMAS TO {}").format(
                ident
            )
        )
        try:
            admin.execute(releases.install_sql())
        finally:
            admin.execute(
                sql.SQL(
                    "ALTER DEFAULT PRIVILEGES FOR ROLE postgres REVOKE ALL ON SCHEMAS FROM {}"
                ).format(ident)
            )
        assert _schema_acl(admin) == [("pgcoord_client", "USAGE"), (installer, "USAGE")]

        admin.execute(sql.SQL("GRANT ALL ON SCHEMA pgcoord TO {}").format(ident))
        admin.execute("GRANT CREATE ON SCHEMA pgcoord TO PUBLIC")
        assert (installer, "CREATE") in _schema_acl(admin)
        assert ("-", "CREATE") in _schema_acl(admin)  # PUBLIC
        admin.execute(releases.install_sql())  # run again, as an upgrade would
        assert _schema_acl(admin) == [("pgcoord_client", "USAGE"), (installer, "USAGE")]


def test_a_schema_pgcoord_of_another_role_is_neither_installed_into_nor_upgraded(
    empty_db_url: str, installer: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its owner could replace pgcoord's functions, and objects made by another role
    would not be the schema owner's: both refused, naming the owner, nothing changed."""
    with psycopg.connect(empty_db_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE SCHEMA pgcoord AUTHORIZATION {}").format(sql.Identifier(installer))
        )

    assert cli.main(["migrate", "--database-url", empty_db_url]) == 1

    err = capsys.readouterr().err
    assert err.startswith(
        f"pgcoord: error: {releases.latest()}/install.sql failed: schema pgcoord belongs to"
        f" {installer}, and postgres is another role"
    ), err
    assert f"SET ROLE {installer}" in err
    with psycopg.connect(empty_db_url, autocommit=True) as admin:
        found = admin.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'pgcoord'::regnamespace"
        ).fetchone()
        assert found == (0,)
        # installed by its owner, an upgrade by another role is refused the same way
        admin.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(admin.info.dbname), sql.Identifier(installer)
            )
        )
    url = make_conninfo(empty_db_url, user=installer)
    assert cli.main(["migrate", "--database-url", url]) == 0
    with psycopg.connect(empty_db_url, autocommit=True) as admin:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="belongs to"):
            admin.execute(releases.upgrade_sql(releases.latest()))
        admin.execute("ROLLBACK")  # the file's own transaction, aborted
        owners = admin.execute(
            "SELECT DISTINCT relowner::regrole::text FROM pg_class"
            " WHERE relnamespace = 'pgcoord'::regnamespace"
        ).fetchall()
        assert owners == [(installer,)]


def test_a_role_that_may_not_call_pgcoord_is_told_who_may_migrate_it(
    db_url: str, installer: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not the GRANT that lets a role call pgcoord: that does not let it migrate."""
    url = make_conninfo(db_url, user=installer)

    assert cli.main(["migrate", "--database-url", url]) == 1

    err = capsys.readouterr().err
    assert err == (
        f"pgcoord: error: {installer} may not read the version of the pgcoord installed here"
        " (install and upgrade pgcoord as the role that owns schema pgcoord: postgres)\n"
    )
