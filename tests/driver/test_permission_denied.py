"""A role refused by pgcoord (42501) gets PermissionDenied naming the GRANT it needs, with
the role the server refused (its current_user, read back only after the refusal), on a
connection, in a transaction, through both clients; a member of pgcoord_client refused
something beyond the API is told nothing of the kind."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgcoord import AsyncClient, Client, PermissionDenied, PgcoordError, ServerError, locks
from pgcoord.errors import quoted_role


def advice(role: str) -> str:
    return f"; grant it with: GRANT pgcoord_client TO {quoted_role(role)}"


def check(denied: PermissionDenied, role: str) -> None:
    assert isinstance(denied, ServerError) and isinstance(denied, PgcoordError)
    assert denied.sqlstate == "42501" and denied.role == role
    assert str(denied).startswith("permission denied for ")
    assert str(denied).endswith(advice(role)), str(denied)
    assert isinstance(denied.__cause__, psycopg.errors.InsufficientPrivilege)


def test_a_role_without_the_grant_is_told_the_grant(db_url: str, outsider: str) -> None:
    url = make_conninfo(db_url, user=outsider)
    with psycopg.connect(url, autocommit=True) as conn:
        for call in (
            lambda: locks.lock_acquire(conn, "k", "o"),
            lambda: locks.lock_status(conn),
        ):
            with pytest.raises(PermissionDenied) as caught:
                call()
            check(caught.value, outsider)
        # inside a transaction the refused connection cannot ask: the login role is named
        with pytest.raises(PermissionDenied) as caught, conn.transaction():
            locks.lock_release(conn, "k", "o")
        check(caught.value, outsider)
    with Client(url) as client, pytest.raises(PermissionDenied) as caught:
        client.lock_is_current("k", 1)
    check(caught.value, outsider)


def test_the_async_client_is_told_the_grant(db_url: str, outsider: str) -> None:
    async def main() -> None:
        async with AsyncClient(make_conninfo(db_url, user=outsider)) as client:
            with pytest.raises(PermissionDenied) as caught:
                await client.lock_acquire("k", "o")
            check(caught.value, outsider)

    asyncio.run(main())


def test_the_role_named_is_the_servers_current_user(db_url: str, outsider: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(outsider)))
        with pytest.raises(PermissionDenied) as caught:
            locks.lock_acquire(conn, "k", "o")
        assert conn.info.user != outsider  # the connection logged in as someone else
    check(caught.value, outsider)


def test_a_member_refused_beyond_the_api_is_not_told_to_take_the_grant(
    db_url: str, conn: psycopg.Connection[Any], outsider: str
) -> None:
    conn.execute(sql.SQL("GRANT pgcoord_client TO {}").format(sql.Identifier(outsider)))
    conn.execute(
        "REVOKE EXECUTE ON FUNCTION pgcoord.lock_acquire(text, text, interval, interval)"
        " FROM pgcoord_client"
    )
    with psycopg.connect(make_conninfo(db_url, user=outsider), autocommit=True) as member:
        with pytest.raises(PermissionDenied) as caught:
            locks.lock_acquire(member, "k", "o")
        assert locks.lock_status(member) == []
    assert caught.value.role == outsider
    assert str(caught.value) == "permission denied for function lock_acquire"


def test_a_member_that_does_not_inherit_is_told_how_to_inherit(
    db_url: str, conn: psycopg.Connection[Any], outsider: str
) -> None:
    """Supabase's service_role is NOINHERIT: granted pgcoord_client, it still cannot use
    it, and another GRANT of the same would change nothing."""
    role = sql.Identifier(outsider)
    conn.execute(sql.SQL("ALTER ROLE {} NOINHERIT").format(role))
    conn.execute(sql.SQL("GRANT pgcoord_client TO {}").format(role))
    with (
        psycopg.connect(make_conninfo(db_url, user=outsider), autocommit=True) as member,
        pytest.raises(PermissionDenied) as caught,
    ):
        locks.lock_acquire(member, "k", "o")
    name = quoted_role(outsider)
    assert str(caught.value).endswith(
        f"; {name} is a member of pgcoord_client but does not inherit it (a NOINHERIT role): "
        f"GRANT pgcoord_client TO {name} WITH INHERIT TRUE (PostgreSQL 16 and later; on 15, "
        f"ALTER ROLE {name} INHERIT)"
    ), str(caught.value)
    # what it says makes the calls work, on the server's version
    if conn.info.server_version >= 160000:
        conn.execute(sql.SQL("GRANT pgcoord_client TO {} WITH INHERIT TRUE").format(role))
    else:
        conn.execute(sql.SQL("ALTER ROLE {} INHERIT").format(role))
    with psycopg.connect(make_conninfo(db_url, user=outsider), autocommit=True) as member:
        assert locks.lock_acquire(member, "k", "o").acquired


def test_role_names_are_quoted_as_sql_writes_them() -> None:
    assert quoted_role("app") == "app"
    assert quoted_role("service_role") == "service_role"
    assert quoted_role("App") == '"App"'
    assert quoted_role('we"ird role') == '"we""ird role"'
    assert re.fullmatch(r"; grant it with: GRANT pgcoord_client TO app", advice("app"))
