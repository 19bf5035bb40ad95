"""buffer_revive (not in API.md): replaying a conversation's dead batches. Their messages
go back to the conversation's buffer, due at once and ahead of later messages, the tries
start from zero, and the parked rows go."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from inboxkit import (
    MAX_FAILED_TRIES,
    claim,
    claim_one,
    complete,
    fail,
    ingest,
    message_states,
    snapshot,
    statuses,
)
from sqlkit import Conn


def revive(conn: Conn, conversation_key: str | None) -> int:
    row = conn.execute(
        "SELECT pgcoord.buffer_revive(p_conversation_key => %s)", (conversation_key,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def park(conn: Conn, conversation_key: str) -> list[int]:
    """Fail the conversation's next batch until it is parked; its message ids."""
    ids: list[int] = []
    for _ in range(MAX_FAILED_TRIES):
        burst = claim_one(conn)
        assert burst.conversation_key == conversation_key
        ids = burst.message_ids
        assert fail(conn, conversation_key, burst.claim_token, "boom", retry_in=timedelta(0))
    return ids


def test_revived_messages_come_first_in_the_next_batch(conn: Conn) -> None:
    parked = [ingest(conn, f"m{i}", "c").message_id for i in range(2)]
    assert park(conn, "c") == parked
    later = ingest(conn, "m2", "c", debounce=timedelta(hours=1)).message_id
    assert [row.dead for row in statuses(conn, "c")] == [True, False]

    assert revive(conn, "c") == 2

    [row] = statuses(conn, "c")
    assert (row.dead, row.message_count, row.attempt, row.claimed_by) == (False, 3, 0, None)
    burst = claim_one(conn)
    assert burst.message_ids == [*parked, later], "due at once, in arrival order"
    assert burst.attempt == 1, "the tries start again"
    assert complete(conn, "c", burst.claim_token)
    assert message_states(conn, [*parked, later]) == ["done"] * 3
    assert statuses(conn) == []


def test_revived_messages_wait_behind_a_batch_in_flight(conn: Conn) -> None:
    parked = ingest(conn, "m0", "c").message_id
    park(conn, "c")
    fresh = ingest(conn, "m1", "c").message_id
    in_flight = claim_one(conn)
    assert in_flight.message_ids == [fresh]

    assert revive(conn, "c") == 1
    assert claim(conn) == [], "one claim at a time per conversation"
    assert complete(conn, "c", in_flight.claim_token)
    after = claim_one(conn)
    assert after.message_ids == [parked]
    assert complete(conn, "c", after.claim_token)


def test_revive_without_dead_batches_changes_nothing(conn: Conn) -> None:
    ingest(conn, "m0", "c")
    before = snapshot(conn)
    assert revive(conn, "c") == 0
    assert revive(conn, "elsewhere") == 0
    assert snapshot(conn) == before


@pytest.mark.parametrize(
    ("key", "sqlstate"), [(None, "22004"), ("", "22023"), ("x" * 1025, "22023")]
)
def test_bad_arguments_raise_and_change_nothing(conn: Conn, key: str | None, sqlstate: str) -> None:
    ingest(conn, "m0", "c")
    park(conn, "c")
    before = snapshot(conn)
    with pytest.raises(psycopg.Error) as raised:
        revive(conn, key)
    assert raised.value.sqlstate == sqlstate
    assert "p_conversation_key" in str(raised.value)
    assert snapshot(conn) == before
