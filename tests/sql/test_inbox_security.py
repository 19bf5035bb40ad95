"""Privileges of the inbox: nothing for PUBLIC; a member of pgcoord_client runs the whole
message life through the API and the status view, and never touches the tables."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from inboxkit import HELPERS, SECTION_2
from psycopg import sql
from sqlkit import Conn, execute_privileges, scalar
from test_lock_security import connect_as

STATEMENTS = (
    "SELECT * FROM pgcoord.message_ingest(p_provider => 'wa', p_provider_message_id => 'm1',"
    " p_conversation_key => 'c', p_body => 'hi', p_debounce => '0 seconds')",
    "SELECT * FROM pgcoord.buffer_claim(p_worker => 'w')",
    "SELECT pgcoord.buffer_complete(p_conversation_key => 'c', p_claim_token => 1)",
    "SELECT pgcoord.buffer_fail(p_conversation_key => 'c', p_claim_token => 1, p_error => 'e')",
    "SELECT pgcoord.buffer_extend(p_conversation_key => 'c', p_claim_token => 1)",
    "SELECT pgcoord.buffer_due_in()",
    "SELECT * FROM pgcoord.buffer_status",
)


def test_public_may_not_execute_the_inbox_functions(conn: Conn) -> None:
    privileges = execute_privileges(conn)
    for function in (*SECTION_2, *HELPERS):
        assert privileges[function] == (False, True), function
    assert privileges["buffer_fail_try"] == (False, False), "internal"
    assert privileges["buffer_fail_claim"] == (False, False), "internal"
    for relation in ("pgcoord.messages", "pgcoord.buffers", "pgcoord.buffer_status"):
        assert not scalar(
            conn, "SELECT has_table_privilege('public', %s, 'SELECT, INSERT, UPDATE')", relation
        )
    assert not scalar(
        conn, "SELECT has_sequence_privilege('public', 'pgcoord.claim_token', 'USAGE, UPDATE')"
    )


def test_a_role_without_the_grant_is_refused(db_url: str, conn: Conn, login_role: str) -> None:
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA pgcoord TO {}").format(sql.Identifier(login_role)))
    with connect_as(db_url, login_role) as outsider:
        for statement in STATEMENTS:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                outsider.execute(statement)
    assert scalar(conn, "SELECT count(*) FROM pgcoord.messages") == 0


def test_a_member_of_pgcoord_client_runs_the_inbox_but_not_the_tables(
    db_url: str, conn: Conn, login_role: str
) -> None:
    conn.execute(sql.SQL("GRANT pgcoord_client TO {}").format(sql.Identifier(login_role)))
    with connect_as(db_url, login_role) as client:

        def one(statement: Any, *params: Any) -> tuple[Any, ...]:
            row = client.execute(statement, params).fetchone()
            assert row is not None
            return tuple(row)

        message_id, duplicate, _ = one(STATEMENTS[0])
        assert duplicate is False
        assert one(STATEMENTS[0])[:2] == (message_id, True)
        assert one(STATEMENTS[5]) == (timedelta(0),)
        key, token, ids, bodies, *_ = one(STATEMENTS[1])
        assert (key, ids, bodies) == ("c", [message_id], ["hi"])
        assert one(
            "SELECT pgcoord.buffer_extend(p_conversation_key => 'c', p_claim_token => %s)", token
        )[0]
        assert one(
            "SELECT pgcoord.buffer_fail(p_conversation_key => 'c', p_claim_token => %s,"
            " p_error => 'e', p_retry_in => '0 seconds')",
            token,
        ) == (True,)
        assert one("SELECT conversation_key, attempt, last_error FROM pgcoord.buffer_status") == (
            "c",
            1,
            "e",
        )
        _, token, *_, attempt = one(STATEMENTS[1])
        assert attempt == 2
        assert one(
            "SELECT pgcoord.buffer_complete(p_conversation_key => 'c', p_claim_token => %s)", token
        ) == (True,)

        for statement in (
            "SELECT * FROM pgcoord.messages",
            "SELECT * FROM pgcoord.buffers",
            "INSERT INTO pgcoord.buffers (conversation_key) VALUES ('x')",
            "UPDATE pgcoord.messages SET body = 'forged'",
            "DELETE FROM pgcoord.messages",
            "UPDATE pgcoord.buffers SET due_at = NULL",
            "TRUNCATE pgcoord.buffers",
            "SELECT nextval('pgcoord.claim_token')",
            "SELECT pgcoord.buffer_fail_try(1, 'e', clock_timestamp(), FALSE)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                client.execute(statement)
    assert conn.execute("SELECT state, body FROM pgcoord.messages").fetchall() == [("done", "hi")]
