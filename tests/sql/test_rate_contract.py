"""The section-4 signatures exactly as API.md gives them, their defaults, the answers'
types and clock, the status view's columns, and the privileges: nothing for PUBLIC, the
API for pgcoord_client, never the table behind it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from ratekit import GRANTED, RATE_CONTRACT, RATE_HELPERS, RATE_STATUS_COLUMNS, SECTION_4, stored
from sqlkit import Conn, execute_privileges, scalar, server_clock
from test_inbox_contract import signature
from test_lock_security import connect_as


@pytest.mark.parametrize("function", SECTION_4)
def test_the_signature_is_the_contract(conn: Conn, function: str) -> None:
    assert signature(conn, function) == RATE_CONTRACT[function]


def test_the_reset_helper_takes_the_key_and_answers_a_boolean(conn: Conn) -> None:
    assert signature(conn, "rate_reset") == ("p_key text", "boolean")


def test_named_calls_in_any_order_with_the_cost_defaulting_to_one(conn: Conn) -> None:
    granted = scalar(
        conn, "SELECT pgcoord.rate_acquire(p_burst => 2, p_per_second => 0.001, p_key => 'k')"
    )
    assert granted == timedelta(0) and isinstance(granted, timedelta)
    bucket = stored(conn, "k")
    assert bucket is not None and 0.99 <= bucket["tokens"] < 1.01, "one token spent"
    assert scalar(conn, "SELECT pgcoord.rate_acquire('k', 0.001, 2) = '0 seconds'::interval")
    assert scalar(conn, "SELECT pgcoord.rate_acquire('k', 0.001, 2)") > GRANTED

    before = server_clock(conn)
    until = scalar(conn, "SELECT pgcoord.rate_pause(p_for => '1 minute', p_key => 'k')")
    assert before + timedelta(minutes=1) <= until <= server_clock(conn) + timedelta(minutes=1)


def test_the_status_view_has_its_columns(conn: Conn) -> None:
    columns = conn.execute(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute AS a"
        " WHERE a.attrelid = 'pgcoord.rate_status'::regclass AND a.attnum > 0"
        " ORDER BY a.attnum"
    ).fetchall()
    assert columns == RATE_STATUS_COLUMNS


def test_public_may_not_execute_the_rate_functions(conn: Conn) -> None:
    privileges = execute_privileges(conn)
    for function in (*SECTION_4, *RATE_HELPERS):
        assert privileges[function] == (False, True), function
    assert not scalar(conn, "SELECT has_table_privilege('public', 'pgcoord.rates', 'SELECT')")
    assert not scalar(conn, "SELECT has_table_privilege('public', 'pgcoord.rate_status', 'SELECT')")
    assert scalar(
        conn, "SELECT has_table_privilege('pgcoord_client', 'pgcoord.rate_status', 'SELECT')"
    )


def test_a_member_of_pgcoord_client_uses_the_rates_but_not_the_table(
    db_url: str, conn: Conn, login_role: str
) -> None:
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA pgcoord TO {}").format(sql.Identifier(login_role)))
    with (
        connect_as(db_url, login_role) as outsider,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        outsider.execute("SELECT pgcoord.rate_acquire('k', 1, 1)")

    conn.execute(sql.SQL("GRANT pgcoord_client TO {}").format(sql.Identifier(login_role)))
    with connect_as(db_url, login_role) as client:

        def one(statement: Any) -> Any:
            return scalar(client, statement)

        assert one("SELECT pgcoord.rate_acquire('k', 0.001, 1)") == GRANTED
        assert one("SELECT pgcoord.rate_acquire('k', 0.001, 1)") > GRANTED
        assert one("SELECT pgcoord.rate_pause('k', '1 minute')") is not None
        assert one("SELECT count(*) FROM pgcoord.rate_status WHERE paused_until IS NOT NULL") == 1
        assert one("SELECT pgcoord.rate_reset('k')") is True
        for statement in (
            "SELECT * FROM pgcoord.rates",
            "INSERT INTO pgcoord.rates (key, updated_at) VALUES ('x', clock_timestamp())",
            "UPDATE pgcoord.rates SET tokens = 1000",
            "DELETE FROM pgcoord.rates",
            "TRUNCATE pgcoord.rates",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                client.execute(statement)
    assert scalar(conn, "SELECT count(*) FROM pgcoord.rates") == 0
