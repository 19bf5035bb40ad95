"""The section-2 signatures exactly as API.md gives them, their defaults at work, the
server's clock behind every timestamp, and the driver's statements against them."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, LiteralString

import pytest
from inboxkit import (
    HELPERS,
    INBOX_CONTRACT,
    MAX_FAILED_TRIES,
    SECTION_2,
    claim,
    claim_one,
    complete,
    due_in,
    fail,
    ingest,
    status_of,
    statuses,
)
from psycopg.types.json import Jsonb
from sqlkit import Conn, scalar, server_clock
from test_lock_contract import CALL, arguments

from pgcoord import sql as driver_sql


def signature(conn: Conn, function: str) -> tuple[str, str]:
    rows = conn.execute(
        "SELECT pg_get_function_arguments(p.oid), pg_get_function_result(p.oid)"
        " FROM pg_proc AS p WHERE p.pronamespace = 'pgcoord'::regnamespace AND p.proname = %s",
        (function,),
    ).fetchall()
    assert len(rows) == 1, f"{function} must have exactly one signature (no overloads)"
    return rows[0]


@pytest.mark.parametrize("function", SECTION_2)
def test_the_signature_is_the_contract(conn: Conn, function: str) -> None:
    assert signature(conn, function) == INBOX_CONTRACT[function]


def test_the_due_in_helper_takes_nothing_and_answers_an_interval(conn: Conn) -> None:
    assert signature(conn, "buffer_due_in") == ("", "interval")


def test_named_calls_in_any_order_with_only_the_required_arguments(conn: Conn) -> None:
    row = conn.execute(
        "SELECT message_id, duplicate FROM pgcoord.message_ingest(p_body => 'hi',"
        " p_conversation_key => 'c', p_provider_message_id => 'm1', p_provider => 'wa')"
    ).fetchone()
    assert row is not None and row[1] is False
    message_id = row[0]
    again = conn.execute(
        "SELECT message_id, duplicate FROM pgcoord.message_ingest(p_max_wait => '1 minute',"
        " p_debounce => '0 seconds', p_payload => '{}', p_body => 'hi',"
        " p_conversation_key => 'c', p_provider_message_id => 'm1', p_provider => 'wa')"
    ).fetchone()
    assert again == (message_id, True)
    conn.execute(
        "SELECT FROM pgcoord.message_ingest(p_debounce => '0 seconds',"
        " p_body => 'there', p_conversation_key => 'c', p_provider_message_id => 'm2',"
        " p_provider => 'wa')"
    )

    burst = conn.execute(
        "SELECT conversation_key, claim_token, message_ids, bodies"
        " FROM pgcoord.buffer_claim(p_worker => 'w')"
    ).fetchone()
    assert burst is not None and burst[0] == "c"
    assert (burst[2][0], burst[3]) == (message_id, ["hi", "there"])
    token = burst[1]
    assert scalar(
        conn, "SELECT pgcoord.buffer_extend(p_claim_token => %s, p_conversation_key => 'c')", token
    )
    assert scalar(
        conn,
        "SELECT pgcoord.buffer_extend(p_lease => '1 minute', p_claim_token => %s,"
        " p_conversation_key => 'c')",
        token,
    )
    assert scalar(
        conn,
        "SELECT pgcoord.buffer_fail(p_error => 'e', p_claim_token => %s,"
        " p_conversation_key => 'c', p_retry_in => '0 seconds')",
        token,
    )
    again_claimed = conn.execute(
        "SELECT claim_token, attempt FROM pgcoord.buffer_claim("
        "p_lease => '1 minute', p_limit => 1, p_worker => 'w')"
    ).fetchone()
    assert again_claimed is not None and again_claimed[1] == 2
    assert scalar(
        conn,
        "SELECT pgcoord.buffer_complete(p_claim_token => %s, p_conversation_key => 'c')",
        again_claimed[0],
    )
    assert statuses(conn) == []


def test_the_ingest_defaults_are_no_payload_10_s_debounce_and_60_s_cap(conn: Conn) -> None:
    row = conn.execute(
        "SELECT message_id, received_at FROM pgcoord.message_ingest("
        "p_provider => 'wa', p_provider_message_id => 'm1', p_conversation_key => 'a',"
        " p_body => 'x')"
    ).fetchone()
    assert row is not None
    message_id, received_at = row
    assert scalar(conn, "SELECT payload FROM pgcoord.messages WHERE id = %s", message_id) == {}
    assert status_of(conn, "a").flush_at == received_at + timedelta(seconds=10)

    # a debounce longer than the default cap: the cap decides
    capped = conn.execute(
        "SELECT received_at FROM pgcoord.message_ingest("
        "p_provider => 'wa', p_provider_message_id => 'm2', p_conversation_key => 'b',"
        " p_body => 'x', p_debounce => '1 hour')"
    ).fetchone()
    assert capped is not None
    assert status_of(conn, "b").flush_at == capped[0] + timedelta(seconds=60)


def test_the_claim_defaults_are_10_conversations_and_a_60_s_lease(conn: Conn) -> None:
    for i in range(12):
        ingest(conn, f"m{i}", f"c{i:02}")
    before = server_clock(conn)
    rows = conn.execute(
        "SELECT conversation_key, claim_token FROM pgcoord.buffer_claim(p_worker => 'w')"
    ).fetchall()
    after = server_clock(conn)
    assert len(rows) == 10
    for key, _ in rows:
        until = status_of(conn, key).claimed_until
        assert until is not None
        assert before + timedelta(seconds=60) <= until <= after + timedelta(seconds=60)

    key, token = rows[0]
    before = server_clock(conn)
    extended = scalar(
        conn,
        "SELECT pgcoord.buffer_extend(p_conversation_key => %s, p_claim_token => %s)",
        key,
        token,
    )
    assert before + timedelta(seconds=60) <= extended <= server_clock(conn) + timedelta(seconds=60)

    before = server_clock(conn)
    assert scalar(
        conn,
        "SELECT pgcoord.buffer_fail(p_conversation_key => %s, p_claim_token => %s, p_error => 'e')",
        key,
        token,
    )
    retry_at = status_of(conn, key).flush_at
    assert retry_at is not None
    assert before + timedelta(seconds=60) <= retry_at <= server_clock(conn) + timedelta(seconds=60)
    assert len(claim(conn)) == 2, "the other two conversations; the failed one waits"


def test_times_come_from_the_server_clock_not_the_transaction_start(conn: Conn) -> None:
    """A call late in a long transaction stamps and leases from the clock at the call."""
    delay = timedelta(milliseconds=300)
    lease = timedelta(seconds=5)
    with conn.transaction():
        started = scalar(conn, "SELECT now()")
        conn.execute("SELECT pg_sleep(%s)", (delay.total_seconds(),))
        first = ingest(conn, "m1", "c")
        assert first.received_at >= started + delay
        assert status_of(conn, "c").flush_at == first.received_at

        conn.execute("SELECT pg_sleep(%s)", (delay.total_seconds(),))
        burst = claim_one(conn, lease=lease)
        claimed_until = status_of(conn, "c").claimed_until
        assert claimed_until is not None and claimed_until >= started + 2 * delay + lease
        assert burst.first_message_at == first.received_at

        conn.execute("SELECT pg_sleep(%s)", (delay.total_seconds(),))
        extended = scalar(
            conn,
            "SELECT pgcoord.buffer_extend(p_conversation_key => 'c', p_claim_token => %s,"
            " p_lease => %s)",
            burst.claim_token,
            lease,
        )
        assert extended >= started + 3 * delay + lease


def test_the_driver_calls_each_function_in_named_notation() -> None:
    contract = INBOX_CONTRACT | {
        "buffer_due_in": ("", "interval"),
        "buffer_release": ("p_conversation_key text, p_claim_token bigint", "boolean"),
        "buffer_fail_for_good": (
            "p_conversation_key text, p_claim_token bigint, p_error text",
            "boolean",
        ),
        "buffer_failed": (
            "p_conversation_key text, p_claim_token bigint, p_error text,"
            " p_retry_in interval DEFAULT '00:01:00'::interval",
            "boolean",
        ),
        "buffer_revive": ("p_conversation_key text", "integer"),
        "message_prune": ("p_older_than interval, p_limit integer DEFAULT 10000", "integer"),
        "message_payloads": ("p_message_ids bigint[]", "TABLE(message_id bigint, payload jsonb)"),
    }
    statements = [v for k, v in vars(driver_sql).items() if k.isupper() and isinstance(v, str)]
    called = set()
    for statement in statements:
        for function, argument_list in CALL.findall(statement):
            if function not in contract:
                continue
            called.add(function)
            allowed = arguments(contract[function][0]) if contract[function][0] else {}
            names = []
            for argument in filter(str.strip, argument_list.split(",")):
                match = re.fullmatch(r"\s*(\w+)\s*=>\s*\S.*", argument, re.DOTALL)
                assert match, f"{function}: positional argument {argument!r} in {statement!r}"
                names.append(match[1])
            assert set(names) <= set(allowed), f"{function}: unknown argument in {names}"
            required = {name for name, has_default in allowed.items() if not has_default}
            assert required <= set(names), f"{function}: missing {required - set(names)}"
    assert called == {*SECTION_2, *HELPERS}, "every section-2 function has a driver statement"


def test_the_driver_statements_run_against_the_contract(conn: Conn) -> None:
    values: dict[str, Any] = {
        "provider": "wa",
        "provider_message_id": "m1",
        "conversation_key": "c",
        "body": "hello",
        "payload": Jsonb({"from": "+1"}),
        "debounce": timedelta(0),
        "max_wait": timedelta(seconds=5),
        "worker": "w",
        "limit": 5,
        "lease": timedelta(seconds=30),
        "error": "e",
        "retry_in": timedelta(0),
    }

    def run(statement: LiteralString) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in conn.execute(statement, values).fetchall()]

    [(message_id, duplicate, _)] = run(driver_sql.MESSAGE_INGEST)
    assert duplicate is False
    values["message_ids"] = [message_id]
    assert run(driver_sql.MESSAGE_PAYLOADS) == [(message_id, {"from": "+1"})]
    assert run(driver_sql.BUFFER_DUE_IN) == [(timedelta(0),)]
    [burst] = run(driver_sql.BUFFER_CLAIM)
    assert burst[:4] == ("c", burst[1], [message_id], ["hello"]) and burst[6] == 1
    values["claim_token"] = burst[1]
    assert run(driver_sql.BUFFER_EXTEND)[0][0] is not None
    [status] = run(driver_sql.BUFFER_STATUS)
    assert status[:2] == ("c", 1) and status[5] == "w"
    assert run(driver_sql.BUFFER_FAIL) == [(True,)]
    [burst] = run(driver_sql.BUFFER_CLAIM)
    assert burst[6] == 2
    values["claim_token"] = burst[1]
    assert run(driver_sql.BUFFER_COMPLETE) == [(True,)]
    assert run(driver_sql.BUFFER_STATUS) == []


def test_due_in_is_null_without_buffers_zero_when_due_and_the_wait_otherwise(conn: Conn) -> None:
    """buffer_due_in (the workers' sleep): NULL when nothing is buffered."""
    seen = {"empty database": due_in(conn)}
    ingest(conn, "m1", "c")
    seen["a buffer due now"] = due_in(conn)
    burst = claim_one(conn, lease=timedelta(seconds=20))
    seen["a claim with a 20 s lease"] = due_in(conn)
    assert complete(conn, "c", burst.claim_token)
    seen["all completed"] = due_in(conn)

    ingest(conn, "m2", "d")
    for _ in range(MAX_FAILED_TRIES):
        assert fail(conn, "d", claim_one(conn).claim_token)
    assert [row.dead for row in statuses(conn)] == [True]
    seen["only a dead batch"] = due_in(conn)

    ingest(conn, "m3", "later", debounce=timedelta(seconds=10))
    seen["a flush in 10 s"] = due_in(conn)

    problems = []
    for label, expected in {
        "empty database": None,
        "a buffer due now": timedelta(0),
        "all completed": None,
        "only a dead batch": None,
    }.items():
        if seen[label] != expected:
            problems.append(f"{label}: {seen[label]!r}, expected {expected!r}")
    for label, seconds in {"a claim with a 20 s lease": 20, "a flush in 10 s": 10}.items():
        value = seen[label]
        if value is None or not timedelta(seconds=seconds - 2) < value <= timedelta(
            seconds=seconds
        ):
            problems.append(f"{label}: {seen[label]!r}, expected about {seconds} s")
    assert problems == [], "buffer_due_in: " + "; ".join(problems)
