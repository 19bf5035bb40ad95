"""Privileges: nothing for PUBLIC; a role can use the lease locks once it is a member of
pgcoord_client, and even then never touches the tables behind them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlkit import LOCK_HELPERS, SECTION_1, Conn, connect, scalar


def connect_as(db_url: str, role: str) -> Conn:
    return connect(make_conninfo(db_url, user=role))


def assert_refused(db_url: str, conn: Conn, role: str, statements: Iterable[str]) -> None:
    """`role`, with USAGE on the schema but no grant, is refused every statement."""
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA pgcoord TO {}").format(sql.Identifier(role)))
    with connect_as(db_url, role) as outsider:
        for statement in statements:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                outsider.execute(statement)


def test_public_has_no_privilege_on_anything_in_pgcoord(conn: Conn) -> None:
    executable = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc AS p"
        " WHERE p.pronamespace = 'pgcoord'::regnamespace"
        " AND (has_function_privilege('public', p.oid, 'EXECUTE')"
        "      OR p.proacl IS NULL"  # NULL is the default ACL, which grants PUBLIC EXECUTE
        "      OR EXISTS (SELECT FROM aclexplode(p.proacl) AS a WHERE a.grantee = 0))"
    ).fetchall()
    assert executable == []
    assert scalar(conn, "SELECT count(*) FROM pg_proc WHERE pronamespace = 'pgcoord'::regnamespace")

    relations = conn.execute(
        "SELECT c.oid::regclass::text FROM pg_class AS c"
        " WHERE c.relnamespace = 'pgcoord'::regnamespace"
        " AND (has_table_privilege('public', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')"
        "      OR (c.relkind = 'S' AND has_sequence_privilege('public', c.oid, 'USAGE, UPDATE')))"
    ).fetchall()
    assert relations == []
    assert not scalar(conn, "SELECT has_schema_privilege('public', 'pgcoord', 'USAGE, CREATE')")


def test_pgcoord_client_may_execute_the_api_but_not_the_internals(conn: Conn) -> None:
    granted = dict(
        conn.execute(
            "SELECT p.proname::text, has_function_privilege('pgcoord_client', p.oid, 'EXECUTE')"
            " FROM pg_proc AS p WHERE p.pronamespace = 'pgcoord'::regnamespace"
        ).fetchall()
    )
    for function in (*SECTION_1, *LOCK_HELPERS):
        assert granted.get(function) is True, function
    assert granted["raise_bad_argument"] is False
    assert scalar(
        conn, "SELECT has_table_privilege('pgcoord_client', 'pgcoord.lock_status', 'SELECT')"
    )
    assert not scalar(
        conn,
        "SELECT has_table_privilege('pgcoord_client', 'pgcoord.locks',"
        " 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')",
    )
    assert not scalar(conn, "SELECT has_schema_privilege('pgcoord_client', 'pgcoord', 'CREATE')")


def test_a_role_without_the_grant_is_refused(db_url: str, conn: Conn, login_role: str) -> None:
    with connect_as(db_url, login_role) as outsider:
        assert scalar(outsider, "SELECT current_user") == login_role
        for statement in (
            "SELECT * FROM pgcoord.lock_acquire(p_key => 'k', p_owner => 'o')",
            "SELECT pgcoord.lock_release(p_key => 'k', p_owner => 'o')",
            "SELECT pgcoord.lock_extend(p_key => 'k', p_owner => 'o')",
            "SELECT pgcoord.lock_is_current(p_key => 'k', p_token => 1)",
            "SELECT * FROM pgcoord.lock_status",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                outsider.execute(statement)

    # with USAGE on the schema, the refusal comes from the function's own privilege
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA pgcoord TO {}").format(sql.Identifier(login_role)))
    with connect_as(db_url, login_role) as outsider:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as raised:
            outsider.execute("SELECT * FROM pgcoord.lock_acquire(p_key => 'k', p_owner => 'o')")
        assert "lock_acquire" in str(raised.value)
    assert scalar(conn, "SELECT count(*) FROM pgcoord.locks") == 0


def test_a_member_of_pgcoord_client_uses_the_api_but_not_the_tables(
    db_url: str, conn: Conn, login_role: str
) -> None:
    conn.execute(sql.SQL("GRANT pgcoord_client TO {}").format(sql.Identifier(login_role)))
    with connect_as(db_url, login_role) as client:
        lock = client.execute(
            "SELECT acquired, token FROM pgcoord.lock_acquire(p_key => 'k', p_owner => 'app')"
        ).fetchone()
        assert lock is not None and lock[0] is True
        token = lock[1]
        assert scalar(client, "SELECT pgcoord.lock_extend(p_key => 'k', p_owner => 'app')")
        assert scalar(client, "SELECT pgcoord.lock_is_current(p_key => 'k', p_token => %s)", token)
        held: Any = client.execute("SELECT key, owner, token FROM pgcoord.lock_status").fetchall()
        assert held == [("k", "app", token)]

        for statement in (
            "SELECT * FROM pgcoord.locks",
            "INSERT INTO pgcoord.locks VALUES ('x', 'me', 1, now(), now())",
            "UPDATE pgcoord.locks SET owner = 'me'",
            "DELETE FROM pgcoord.locks",
            "TRUNCATE pgcoord.locks",
            "SELECT nextval('pgcoord.lock_token')",
            "SELECT pgcoord.raise_bad_argument('p_x', 1, 'x')",
            "CREATE TABLE pgcoord.intruder (x integer)",
            "CREATE FUNCTION pgcoord.lock_acquire(p_key text) RETURNS integer"
            " LANGUAGE sql AS 'SELECT 1'",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                client.execute(statement)

        assert scalar(client, "SELECT pgcoord.lock_release(p_key => 'k', p_owner => 'app')")
    assert scalar(conn, "SELECT count(*) FROM pgcoord.locks") == 0
