"""The section-1 signatures exactly as API.md gives them: callers use named notation, so
names, order, types and defaults are the contract."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import LiteralString

import pytest
from sqlkit import CONTRACT, LOCK_HELPERS, SECTION_1, Conn, acquire, scalar, server_clock, status

from pgcoord import sql as driver_sql

SLACK = timedelta(milliseconds=500)


def arguments(signature: str) -> dict[str, bool]:
    """Argument name -> has a default, from a pg_get_function_arguments text."""
    found = {}
    for part in signature.split(", "):
        name = part.split(" ", 1)[0]
        found[name] = " DEFAULT " in part
    return found


@pytest.mark.parametrize("function", [*SECTION_1, *LOCK_HELPERS])
def test_the_signature_is_the_contract(conn: Conn, function: str) -> None:
    rows = conn.execute(
        "SELECT pg_get_function_arguments(p.oid), pg_get_function_result(p.oid)"
        " FROM pg_proc AS p WHERE p.pronamespace = 'pgcoord'::regnamespace AND p.proname = %s",
        (function,),
    ).fetchall()
    assert len(rows) == 1, f"{function} must have exactly one signature (no overloads)"
    assert rows[0] == (CONTRACT | LOCK_HELPERS)[function]


def test_named_calls_in_any_order_with_only_the_required_arguments(conn: Conn) -> None:
    lock = conn.execute(
        "SELECT acquired, token FROM pgcoord.lock_acquire(p_owner => 'o', p_key => 'k')"
    ).fetchone()
    assert lock is not None and lock[0] is True
    token = lock[1]
    full = conn.execute(
        "SELECT acquired, token FROM pgcoord.lock_acquire("
        "p_wait => '0 seconds', p_ttl => '2 minutes', p_owner => 'o', p_key => 'k')"
    ).fetchone()
    assert full == (True, token)
    assert scalar(conn, "SELECT pgcoord.lock_extend(p_owner => 'o', p_key => 'k')") is not None
    assert scalar(
        conn, "SELECT pgcoord.lock_extend(p_ttl => '1 minute', p_owner => 'o', p_key => 'k')"
    )
    assert scalar(conn, "SELECT pgcoord.lock_is_current(p_token => %s, p_key => 'k')", token)
    assert scalar(conn, "SELECT pgcoord.lock_release(p_owner => 'o', p_key => 'k')") is True


def test_the_defaults_are_a_two_minute_lease_and_no_waiting(conn: Conn) -> None:
    conn.execute("SELECT FROM pgcoord.lock_acquire(p_key => 'k', p_owner => 'o')")
    held = status(conn, "k")
    assert held is not None
    assert held.expires_at - held.acquired_at == timedelta(minutes=2)

    started = time.monotonic()
    refused = acquire_defaults(conn, "k", "other")
    assert refused == (False, "o")
    assert time.monotonic() - started < 0.5, "p_wait defaults to 0: no waiting"

    before = server_clock(conn)
    expiry = scalar(conn, "SELECT pgcoord.lock_extend(p_key => 'k', p_owner => 'o')")
    assert before + timedelta(minutes=2) <= expiry <= server_clock(conn) + timedelta(minutes=2)


def acquire_defaults(conn: Conn, key: str, owner: str) -> tuple[bool, str] | None:
    row = conn.execute(
        "SELECT acquired, owner FROM pgcoord.lock_acquire(p_key => %s, p_owner => %s)",
        (key, owner),
    ).fetchone()
    return None if row is None else (row[0], row[1])


CALL = re.compile(r"pgcoord\.(\w+)\(((?:%\(\w+\)s|[^()])*)\)")  # %(name)s placeholders


def test_the_driver_calls_each_function_in_named_notation() -> None:
    statements = [v for k, v in vars(driver_sql).items() if k.isupper() and isinstance(v, str)]
    called = set()
    for statement in statements:
        for function, argument_list in CALL.findall(statement):
            if function not in CONTRACT | LOCK_HELPERS:
                continue
            called.add(function)
            contract = arguments((CONTRACT | LOCK_HELPERS)[function][0])
            names = []
            for argument in argument_list.split(","):
                match = re.fullmatch(r"\s*(\w+)\s*=>\s*\S.*", argument, re.DOTALL)
                assert match, f"{function}: positional argument {argument!r} in {statement!r}"
                names.append(match[1])
            assert set(names) <= set(contract), f"{function}: unknown argument in {names}"
            required = {name for name, has_default in contract.items() if not has_default}
            assert required <= set(names), f"{function}: missing {required - set(names)}"
    assert called == {*SECTION_1, *LOCK_HELPERS}, "every section-1 function has a statement"


def test_the_driver_statements_run_against_the_contract(conn: Conn) -> None:
    lock = acquire(conn, "k", "o")
    values = {"key": "k", "owner": "o", "ttl": timedelta(seconds=30)}
    values |= {"wait": timedelta(0), "token": lock.token}

    def run(statement: LiteralString) -> tuple[object, ...]:
        row = conn.execute(statement, values).fetchone()
        assert row is not None
        return tuple(row)

    assert run(driver_sql.LOCK_ACQUIRE)[:3] == (True, "o", lock.token)
    assert run(driver_sql.LOCK_EXTEND)[0] is not None
    assert run(driver_sql.LOCK_IS_CURRENT) == (True,)
    assert run(driver_sql.LOCK_RELEASE) == (True,)
