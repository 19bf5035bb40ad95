"""Privileges of the campaign queue: nothing for PUBLIC; a member of pgcoord_client runs a
campaign through the API and its views, and never touches the tables or internals."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from campaignkit import HELPERS, SECTION_3, TABLES, VIEWS
from psycopg import sql
from sqlkit import Conn, one_row, scalar
from test_lock_security import assert_refused, connect_as


def test_only_pgcoord_client_may_execute_the_campaign_functions(conn: Conn) -> None:
    rows = conn.execute(
        "SELECT p.proname::text, has_function_privilege('public', p.oid, 'EXECUTE'),"
        " has_function_privilege('pgcoord_client', p.oid, 'EXECUTE')"
        " FROM pg_proc AS p WHERE p.pronamespace = 'pgcoord'::regnamespace"
    ).fetchall()
    privileges = {name: (public, client) for name, public, client in rows}
    for function in (*SECTION_3, *HELPERS):
        assert privileges[function] == (False, True), function
    assert privileges["campaign_give_back"] == (False, False), "internal"
    assert privileges["check_prune_arguments"] == (False, False), "internal"
    assert privileges["campaign_wake"] == (False, False), "internal"
    for relation in (*TABLES, *VIEWS):
        assert not scalar(
            conn,
            "SELECT has_table_privilege('public', %s, 'SELECT, INSERT, UPDATE, DELETE')",
            f"pgcoord.{relation}",
        )
    for view in VIEWS:
        assert scalar(
            conn, "SELECT has_table_privilege('pgcoord_client', %s, 'SELECT')", f"pgcoord.{view}"
        )
    assert not scalar(
        conn, "SELECT has_sequence_privilege('public', 'pgcoord.campaign_token', 'USAGE, UPDATE')"
    )


def test_a_role_without_the_grant_is_refused(db_url: str, conn: Conn, login_role: str) -> None:
    statements = (
        "SELECT pgcoord.campaign_create(p_name => 'x')",
        "SELECT pgcoord.campaign_enqueue(p_run_id => 1, p_items => '[]')",
        "SELECT * FROM pgcoord.campaign_claim(p_worker => 'w')",
        "SELECT pgcoord.campaign_due_in()",
        "SELECT * FROM pgcoord.campaign_progress",
        "SELECT * FROM pgcoord.campaign_message_status",
    )
    assert_refused(db_url, conn, login_role, statements)
    assert scalar(conn, "SELECT count(*) FROM pgcoord.campaign_runs") == 0


def test_a_member_of_pgcoord_client_runs_a_campaign_but_not_the_tables(
    db_url: str, conn: Conn, login_role: str
) -> None:
    conn.execute(sql.SQL("GRANT pgcoord_client TO {}").format(sql.Identifier(login_role)))
    with connect_as(db_url, login_role) as client:

        def one(statement: Any, *params: Any) -> tuple[Any, ...]:
            return one_row(client, statement, *params)

        (run_id,) = one(
            "SELECT pgcoord.campaign_create(p_name => 'spring', p_retry_backoff => '{0 s}')"
        )
        assert one(
            "SELECT pgcoord.campaign_enqueue(p_run_id => %s, p_items => %s)",
            run_id,
            '[{"recipient": "+1"}, {"recipient": "+2"}]',
        ) == (2,)
        rows = client.execute(
            "SELECT message_id, claim_token FROM pgcoord.campaign_claim(p_worker => 'w')"
        ).fetchall()
        assert len(rows) == 2
        (first, token), (second, _) = rows
        assert one(
            "SELECT pgcoord.campaign_extend(p_message_id => %s, p_claim_token => %s)", first, token
        )[0]
        assert one(
            "SELECT status FROM pgcoord.campaign_fail(p_message_id => %s, p_claim_token => %s,"
            " p_error => 'e')",
            first,
            token,
        ) == ("pending",)
        assert one(
            "SELECT pgcoord.campaign_complete_many(p_message_ids => %s, p_claim_tokens => %s)",
            [second],
            [token],
        ) == (1,)
        assert one("SELECT pgcoord.campaign_due_in()") is not None
        (_, again) = one(
            "SELECT message_id, claim_token FROM pgcoord.campaign_claim(p_worker => 'w')"
        )
        assert one(
            "SELECT pgcoord.campaign_release(p_message_id => %s, p_claim_token => %s)", first, again
        ) == (True,)
        assert one("SELECT pgcoord.campaign_skip_stale(p_older_than => '0 seconds')") == (1,)
        assert one("SELECT pending, sent, skipped, total FROM pgcoord.campaign_progress") == (
            0,
            1,
            1,
            2,
        )
        assert one(
            "SELECT status, last_error FROM pgcoord.campaign_message_status WHERE message_id = %s",
            first,
        ) == ("skipped", "e")
        assert one(
            "SELECT pgcoord.campaign_set_status(p_run_id => %s, p_status => 'finished')", run_id
        ) == ("running",)

        for statement in (
            *(f"SELECT * FROM pgcoord.{table}" for table in TABLES),
            "UPDATE pgcoord.campaign_runs SET status = 'running'",
            "DELETE FROM pgcoord.campaign_outcomes",
            "INSERT INTO pgcoord.campaign_queue (token, run_id, due_at, scheduled_at, message_ids)"
            " VALUES (1, 1, clock_timestamp(), clock_timestamp(), '{1}')",
            "TRUNCATE pgcoord.campaign_messages",
            "SELECT nextval('pgcoord.campaign_token')",
            "SELECT * FROM pgcoord.campaign_give_back("
            "1, 1, clock_timestamp(), '0 s', NULL, FALSE, FALSE)",
            "SELECT pgcoord.campaign_wake(1, clock_timestamp(), clock_timestamp())",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                client.execute(statement)
    assert conn.execute(
        "SELECT status, count(*) FROM pgcoord.campaign_outcomes GROUP BY status ORDER BY status"
    ).fetchall() == [("sent", 1), ("skipped", 1)]
