"""The role model (docs/roles.md), over every function, table, view and sequence of the
schema as the catalog lists them, so that new ones are covered without a change here:

- an anon-like role (Supabase's `anon`: it may log in, and holds nothing of ours) can
  execute nothing and read nothing, even with USAGE on the schema (the schema exposed
  to it), even when the installing role's default privileges give every new object to
  it, and even after a grant on ALL TABLES IN SCHEMA pgcoord once the install runs again;
- a worker role (GRANT pgcoord_client TO app) has exactly pgcoord_client's privileges:
  the API functions and the views, no table, no sequence;
- a role that may not create roles installs and upgrades pgcoord once pgcoord_client
  exists, and is told what to do while it does not.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlkit import Conn, connect, scalar

from pgcoord import migrations, releases

# a pseudo-type argument (raise_bad_argument's anyelement) is called with a text
PSEUDO = "text"


def functions(conn: Conn) -> list[tuple[str, str]]:
    """Every function of the schema: its signature, and a call of it with NULL for each
    argument, cast to the argument's type."""
    rows = conn.execute(
        "SELECT p.oid::regprocedure::text, p.proname::text,"
        " array(SELECT CASE WHEN t.typtype = 'p' THEN %s ELSE format_type(t.oid, NULL) END"
        "       FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a (oid, n)"
        "       JOIN pg_type AS t ON t.oid = a.oid ORDER BY a.n)"
        " FROM pg_proc AS p WHERE p.pronamespace = 'pgcoord'::regnamespace ORDER BY 1",
        (PSEUDO,),
    ).fetchall()
    found = [
        (signature, f"SELECT * FROM pgcoord.{name}({', '.join(f'NULL::{t}' for t in types)})")
        for signature, name, types in rows
    ]
    assert len(found) >= 20, found  # the locks, the inbox, the rate limits at least
    return found


def relations(conn: Conn) -> list[tuple[str, str, str]]:
    """Every table, view and sequence of the schema: name, kind ('r', 'v', 'S'...) and a
    statement that reads it."""
    rows = conn.execute(
        "SELECT c.oid::regclass::text, c.relkind::text FROM pg_class AS c"
        " WHERE c.relnamespace = 'pgcoord'::regnamespace"
        " AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') ORDER BY 1"
    ).fetchall()
    found = [
        (name, kind, f"SELECT nextval('{name}')" if kind == "S" else f"SELECT * FROM {name}")
        for name, kind in rows
    ]
    assert {kind for _, kind, _ in found} >= {"r", "v", "S"}, found
    return found


def privileges(conn: Conn, role: str) -> dict[str, bool]:
    """Object -> whether `role` holds any privilege on it (the schema itself: CREATE)."""
    held = dict(
        conn.execute(
            "SELECT p.oid::regprocedure::text, has_function_privilege(%(role)s, p.oid, 'EXECUTE')"
            " FROM pg_proc AS p WHERE p.pronamespace = 'pgcoord'::regnamespace"
            " UNION ALL"
            " SELECT c.oid::regclass::text, CASE WHEN c.relkind = 'S'"
            "   THEN has_sequence_privilege(%(role)s, c.oid, 'USAGE, SELECT, UPDATE')"
            "   ELSE has_table_privilege(%(role)s, c.oid,"
            "     'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') END"
            " FROM pg_class AS c WHERE c.relnamespace = 'pgcoord'::regnamespace"
            " AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')",
            {"role": role},
        ).fetchall()
    )
    held["schema pgcoord: CREATE"] = scalar(
        conn, "SELECT has_schema_privilege(%s, 'pgcoord', 'CREATE')", role
    )
    return held


def refusals(db_url: str, role: str) -> list[str]:
    """Every function called and every relation read as `role`: those not refused with
    42501 (insufficient_privilege)."""
    with psycopg.connect(db_url, autocommit=True) as admin:
        statements = [call for _, call in functions(admin)]
        statements += [read for _, _, read in relations(admin)]
    wrong = []
    with connect(make_conninfo(db_url, user=role)) as conn:
        assert scalar(conn, "SELECT current_user") == role
        for statement in statements:
            try:
                conn.execute(statement)
            except psycopg.errors.InsufficientPrivilege:
                continue
            except psycopg.Error as exc:
                wrong.append(f"{statement}: {exc.sqlstate} {exc}")
            else:
                wrong.append(f"{statement}: ran")
    return wrong


def grant(conn: Conn, template: str, *roles: str) -> None:
    conn.execute(sql.SQL(template).format(*(sql.Identifier(r) for r in roles)))


def test_an_anon_role_can_execute_nothing_and_read_nothing(
    db_url: str, conn: Conn, login_role: str
) -> None:
    assert not any(privileges(conn, login_role).values())
    assert refusals(db_url, login_role) == []

    # the schema exposed to it (as a PostgREST schema list needs): still nothing
    grant(conn, "GRANT USAGE ON SCHEMA pgcoord TO {}", login_role)
    assert not any(privileges(conn, login_role).values())
    assert refusals(db_url, login_role) == []


def test_a_worker_role_has_exactly_pgcoord_clients_privileges(
    db_url: str, conn: Conn, login_role: str
) -> None:
    grant(conn, "GRANT pgcoord_client TO {}", login_role)
    client = privileges(conn, "pgcoord_client")
    assert privileges(conn, login_role) == client
    kinds = {name: kind for name, kind, _ in relations(conn)}
    for name, kind in kinds.items():
        assert client[name] is (kind == "v"), f"{name} ({kind})"  # the views only
    assert sum(client[signature] for signature, _ in functions(conn)) >= 15
    assert client["schema pgcoord: CREATE"] is False

    with connect(make_conninfo(db_url, user=login_role)) as app:
        for _, kind, read in relations(conn):
            if kind == "v":
                app.execute(read)
            else:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    app.execute(read)


def test_the_check_of_docs_roles_md_finds_what_a_role_holds(conn: Conn, login_role: str) -> None:
    """The query under "Checking a database" in docs/roles.md, as a reader copies it:
    no row for an anon-like role; the API functions and the views for a member of
    pgcoord_client."""
    text = (Path(__file__).parents[2] / "docs" / "roles.md").read_text()
    section = text.split("## Checking a database", 1)[1]
    query = section.split("```sql\n", 1)[1].split("```", 1)[0]
    assert "'anon'" in query
    check = query.replace("'anon'", "%(role)s").rstrip().rstrip(";")
    assert conn.execute(check, {"role": login_role}).fetchall() == []
    grant(conn, "GRANT pgcoord_client TO {}", login_role)
    held = conn.execute(check, {"role": login_role}).fetchall()
    views = {name for name, kind, _ in relations(conn) if kind == "v"}
    assert {name for name, what in held if what == "on a relation"} == views
    assert sum(what == "EXECUTE" for _, what in held) >= 15


@pytest.fixture
def installer(empty_db_url: str) -> Iterator[tuple[str, str]]:
    """A LOGIN role that may create in the empty database but may not create roles (nor
    is it a superuser), and an anon-like LOGIN role; the URL of the empty database. Both
    roles, and what they own there, are dropped after the test."""
    suffix = uuid.uuid4().hex[:12]
    owner, anon = f"pgcoord_test_installer_{suffix}", f"pgcoord_test_anon_{suffix}"
    with psycopg.connect(empty_db_url, autocommit=True) as admin:
        grant(admin, "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEROLE", owner)
        grant(admin, "CREATE ROLE {} LOGIN", anon)
        database = sql.Identifier(str(admin.info.dbname))
        admin.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(database, sql.Identifier(owner))
        )
        try:
            yield owner, anon
        finally:
            for role in (owner, anon):
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                    (role,),
                )
                # its objects here, its privileges (the database's CREATE included)
                grant(admin, "DROP OWNED BY {} CASCADE", role)
            grant(admin, "DROP ROLE {}", owner)
            grant(admin, "DROP ROLE {}", anon)


def test_a_role_that_may_not_create_roles_installs_and_upgrades(
    empty_db_url: str, installer: tuple[str, str]
) -> None:
    owner, _ = installer
    url = make_conninfo(empty_db_url, user=owner)
    assert migrations.migrate(url, releases.versions()[0]) == (None, releases.versions()[0])
    assert migrations.migrate(url) == (releases.versions()[0], releases.versions()[-1])
    with psycopg.connect(url, autocommit=True) as conn:
        assert scalar(conn, "SELECT pgcoord.version()") == releases.versions()[-1]
        assert (
            scalar(
                conn, "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'pgcoord'"
            )
            == owner
        )
        held = privileges(conn, "pgcoord_client")
        assert sum(held.values()) >= 15


def test_a_role_that_may_not_create_roles_is_told_to_have_pgcoord_client_created(
    empty_db_url: str, installer: tuple[str, str]
) -> None:
    """The statement of the install that creates pgcoord_client, run for a role name that
    does not exist (pgcoord_client exists on this cluster, as other tests need it)."""
    owner, _ = installer
    schema = releases.install_sql()
    start = schema.index("DO $$", schema.index("CREATE SCHEMA IF NOT EXISTS pgcoord"))
    statement = schema[start : schema.index("$$;", start + 5) + 3]
    assert "CREATE ROLE pgcoord_client NOLOGIN" in statement
    missing = f"pgcoord_test_missing_{uuid.uuid4().hex[:12]}"
    with (
        psycopg.connect(make_conninfo(empty_db_url, user=owner), autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege) as refused,
    ):
        conn.execute(statement.replace("pgcoord_client", missing))
    message = refused.value.diag.message_primary or ""
    assert message == f"the role {missing} is missing, and {owner} may not create roles"
    assert f"CREATE ROLE {missing} NOLOGIN" in (refused.value.diag.message_hint or "")


def test_the_installers_default_privileges_give_anon_nothing(
    empty_db_url: str, installer: tuple[str, str]
) -> None:
    owner, anon = installer
    url = make_conninfo(empty_db_url, user=owner)
    with psycopg.connect(url, autocommit=True) as conn:
        for kind, privilege in (("FUNCTIONS", "EXECUTE"), ("TABLES", "ALL"), ("SEQUENCES", "ALL")):
            conn.execute(
                sql.SQL("ALTER DEFAULT PRIVILEGES GRANT {} ON {} TO {}").format(
                    sql.SQL(privilege), sql.SQL(kind), sql.Identifier(anon)
                )
            )
    migrations.migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        grant(conn, "GRANT USAGE ON SCHEMA pgcoord TO {}", anon)
        assert not any(privileges(conn, anon).values())
    assert refusals(empty_db_url, anon) == []

    # a grant on everything in the schema (a custom-schema recipe) is undone by the next
    # run of the install (or upgrade) file
    with psycopg.connect(url, autocommit=True) as conn:
        for kind in ("FUNCTIONS", "TABLES", "SEQUENCES"):
            conn.execute(
                sql.SQL("GRANT ALL ON ALL {} IN SCHEMA pgcoord TO {}").format(
                    sql.SQL(kind), sql.Identifier(anon)
                )
            )
        assert all(privileges(conn, anon)[name] for name, _, _ in relations(conn))
        conn.execute(releases.install_sql())
        assert not any(privileges(conn, anon).values())
        client: Any = privileges(conn, "pgcoord_client")
        assert sum(client.values()) >= 15
