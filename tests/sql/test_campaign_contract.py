"""The section-3 signatures exactly as API.md gives them (and the worker's helpers), named
calls in any order, the defaults at work, the server's clock behind every time, and real
rows filling the test's row types."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from campaignkit import (
    CAMPAIGN_CONTRACT,
    CAMPAIGN_HELPERS,
    DEFAULT_BACKOFF,
    Claimed,
    MessageStatus,
    Progress,
    claim,
    claim_one,
    create,
    enqueue,
    fail,
    item,
    progress,
    status_of,
    statuses,
)
from psycopg.rows import class_row
from sqlkit import Conn, scalar, server_clock
from test_catalog import dataclass_columns, holds
from test_inbox_contract import signature


@pytest.mark.parametrize("function", list(CAMPAIGN_CONTRACT))
def test_the_signature_is_the_contract(conn: Conn, function: str) -> None:
    assert signature(conn, function) == CAMPAIGN_CONTRACT[function]


@pytest.mark.parametrize("function", list(CAMPAIGN_HELPERS))
def test_the_helpers_signatures(conn: Conn, function: str) -> None:
    assert signature(conn, function) == CAMPAIGN_HELPERS[function]


def test_named_calls_in_any_order_with_only_the_required_arguments(conn: Conn) -> None:
    run_id = scalar(conn, "SELECT pgcoord.campaign_create(p_name => 'spring')")
    assert (
        scalar(
            conn,
            "SELECT pgcoord.campaign_create(p_stale_after => '2 hours', p_retry_backoff => '{1 s}',"
            " p_max_retries => 0, p_name => 'other')",
        )
        > run_id
    )
    assert (
        scalar(
            conn,
            "SELECT pgcoord.campaign_enqueue(p_items => %s, p_run_id => %s)",
            '[{"recipient": "+1"}, {"payload": {"a": 1}, "recipient": "+2"}]',
            run_id,
        )
        == 2
    )
    rows = conn.execute(
        "SELECT message_id, claim_token, recipient FROM pgcoord.campaign_claim("
        "p_run_id => %s, p_lease => '1 minute', p_limit => 1, p_worker => 'w')",
        (run_id,),
    ).fetchall()
    assert [row[2] for row in rows] == ["+1"]
    [(first, token, _)] = rows
    assert scalar(
        conn,
        "SELECT pgcoord.campaign_extend(p_claim_token => %s, p_message_id => %s)",
        token,
        first,
    )
    assert scalar(
        conn,
        "SELECT pgcoord.campaign_snooze(p_delay => '0 seconds', p_claim_token => %s,"
        " p_message_id => %s)",
        token,
        first,
    )
    # the snoozed message is due again, after the one enqueued with it
    [(second, second_token, recipient)] = conn.execute(
        "SELECT message_id, claim_token, recipient FROM pgcoord.campaign_claim("
        "p_worker => 'w', p_limit => 1)"
    ).fetchall()
    assert recipient == "+2"
    assert scalar(
        conn,
        "SELECT pgcoord.campaign_complete(p_claim_token => %s, p_message_id => %s)",
        second_token,
        second,
    )
    [(again, token)] = conn.execute(
        "SELECT message_id, claim_token FROM pgcoord.campaign_claim(p_worker => 'w')"
    ).fetchall()
    assert again == first
    assert conn.execute(
        "SELECT status FROM pgcoord.campaign_fail(p_error => 'e', p_claim_token => %s,"
        " p_message_id => %s, p_retry_after => '0 seconds')",
        (token, first),
    ).fetchall() == [("pending",)]
    assert (
        scalar(
            conn, "SELECT pgcoord.campaign_release(p_claim_token => 1, p_message_id => %s)", first
        )
        is False
    )
    assert scalar(conn, "SELECT pgcoord.campaign_skip_stale()") == 0
    assert (
        scalar(
            conn,
            "SELECT pgcoord.campaign_complete_many(p_claim_tokens => '{}', p_message_ids => '{}')",
        )
        == 0
    )
    assert (
        scalar(
            conn,
            "SELECT pgcoord.campaign_set_status(p_status => 'paused', p_run_id => %s)",
            run_id,
        )
        == "running"
    )
    assert scalar(conn, "SELECT pgcoord.campaign_due_in()") is None
    assert scalar(conn, "SELECT pgcoord.campaign_due_in(p_run_id => %s)", run_id) is None


def test_the_create_defaults_are_3_retries_5_15_30_minutes_and_1_hour_stale(conn: Conn) -> None:
    run_id = scalar(conn, "SELECT pgcoord.campaign_create(p_name => 'defaults')")
    row = conn.execute(
        "SELECT status, max_retries, retry_backoff, stale_after FROM pgcoord.campaign_runs"
        " WHERE id = %s",
        (run_id,),
    ).fetchone()
    assert row == ("running", 3, list(DEFAULT_BACKOFF), timedelta(hours=1))

    # and at work: the first retry waits 5 minutes, the 4th try fails for good
    enqueue(conn, run_id, [item("+1")])
    now = server_clock(conn)
    first = claim_one(conn)
    result = fail(conn, first.message_id, first.claim_token)
    assert result is not None and result.status == "pending"
    assert result.next_attempt_at is not None
    assert now + timedelta(minutes=5) <= result.next_attempt_at
    assert result.next_attempt_at <= server_clock(conn) + timedelta(minutes=5)


def test_the_claim_defaults_are_15_messages_and_a_5_minute_lease(conn: Conn) -> None:
    run_id = create(conn)
    enqueue(conn, run_id, [item(f"+{i}") for i in range(20)])
    before = server_clock(conn)
    rows = conn.execute(
        "SELECT message_id, claim_token FROM pgcoord.campaign_claim(p_worker => 'w')"
    ).fetchall()
    after = server_clock(conn)
    assert len(rows) == 15
    for row in statuses(conn, [message_id for message_id, _ in rows]):
        assert row.claimed_until is not None
        assert before + timedelta(minutes=5) <= row.claimed_until <= after + timedelta(minutes=5)

    message_id, token = rows[0]
    before = server_clock(conn)
    extended = scalar(
        conn,
        "SELECT pgcoord.campaign_extend(p_message_id => %s, p_claim_token => %s)",
        message_id,
        token,
    )
    assert before + timedelta(minutes=5) <= extended <= server_clock(conn) + timedelta(minutes=5)

    assert scalar(
        conn,
        "SELECT pgcoord.campaign_complete(p_message_id => %s, p_claim_token => %s)",
        message_id,
        token,
    )
    assert status_of(conn, message_id).metrics == {}, "p_metrics defaults to {}"
    ids = [message_id for message_id, _ in rows[1:]]
    tokens = [token for _, token in rows[1:]]
    assert (
        scalar(
            conn,
            "SELECT pgcoord.campaign_complete_many(p_message_ids => %s, p_claim_tokens => %s)",
            ids,
            tokens,
        )
        == 14
    )
    assert all(row.metrics == {} for row in statuses(conn, ids)), "NULL p_metrics stores {}"


def test_times_come_from_the_server_clock_not_the_transaction_start(conn: Conn) -> None:
    """Calls late in a long transaction stamp, schedule and lease from the clock at the call."""
    delay = timedelta(milliseconds=300)
    run_id = create(conn, retry_backoff=[timedelta(seconds=10)])
    with conn.transaction():
        started = scalar(conn, "SELECT now()")
        conn.execute("SELECT pg_sleep(%s)", (delay.total_seconds(),))
        enqueue(conn, run_id, [item("+1")])
        conn.execute("SELECT pg_sleep(%s)", (delay.total_seconds(),))
        claimed = claim_one(conn, lease=timedelta(seconds=5))
        assert claimed.scheduled_at >= started + delay
        row = status_of(conn, claimed.message_id)
        assert row.claimed_until is not None
        assert row.claimed_until >= started + 2 * delay + timedelta(seconds=5)

        conn.execute("SELECT pg_sleep(%s)", (delay.total_seconds(),))
        result = fail(conn, claimed.message_id, claimed.claim_token)
        assert result is not None and result.next_attempt_at is not None
        assert result.next_attempt_at >= started + 3 * delay + timedelta(seconds=10)


def test_real_rows_fill_the_row_types_with_their_types(conn: Conn) -> None:
    run_id = create(conn)
    enqueue(conn, run_id, [item(f"+{i}", {"i": i}) for i in range(4)])
    claimed = claim(conn, limit=3)
    values: list[Any] = list(claimed)
    values.append(fail(conn, claimed[0].message_id, claimed[0].claim_token))
    assert scalar(
        conn,
        "SELECT pgcoord.campaign_complete(p_message_id => %s, p_claim_token => %s,"
        " p_metrics => '{\"ms\": 3}')",
        claimed[1].message_id,
        claimed[1].claim_token,
    )
    values.append(progress(conn, run_id))
    with conn.cursor(row_factory=class_row(MessageStatus)) as cur:
        cur.execute("SELECT * FROM pgcoord.campaign_message_status ORDER BY message_id")
        values += cur.fetchall()
    assert {type(value).__name__ for value in values} == {
        "Claimed",
        "Failed",
        "Progress",
        "MessageStatus",
    }
    assert [row.status for row in values if isinstance(row, MessageStatus)] == [
        "pending",
        "sent",
        "processing",
        "pending",
    ]
    for value in values:
        for name, hint in dataclass_columns(type(value)):
            assert holds(getattr(value, name), hint), (type(value).__name__, name, hint)
    assert isinstance(values[0], Claimed) and isinstance(values[-5], Progress)
