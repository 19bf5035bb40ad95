"""message_prune (not in API.md): retention of answered messages. It deletes only 'done'
messages older than the cutoff, oldest first and at most p_limit per call; waiting,
claimed and parked messages stay, and a pruned message's retry is stored afresh."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from inboxkit import (
    MAX_FAILED_TRIES,
    claim_one,
    complete,
    fail,
    ingest,
    message_states,
    snapshot,
    statuses,
    until_server_time,
)
from sqlkit import Conn

AGE = timedelta(milliseconds=300)


def prune(conn: Conn, older_than: timedelta | None, limit: int | None = 10_000) -> int:
    row = conn.execute(
        "SELECT pgcoord.message_prune(p_older_than => %s, p_limit => %s)", (older_than, limit)
    ).fetchone()
    assert row is not None
    return int(row[0])


def answered(conn: Conn, conversation_key: str, ids: list[str]) -> list[int]:
    """Ingest `ids` into one conversation and complete them in one claim."""
    stored = [ingest(conn, provider_id, conversation_key).message_id for provider_id in ids]
    burst = claim_one(conn)
    assert burst.message_ids == stored
    assert complete(conn, conversation_key, burst.claim_token)
    return stored


def test_prune_deletes_old_done_messages_only_oldest_first(conn: Conn) -> None:
    old = answered(conn, "a", ["a1", "a2", "a3"]) + answered(conn, "b", ["b1", "b2", "b3"])
    parked = ingest(conn, "d1", "dead").message_id
    for _ in range(MAX_FAILED_TRIES):
        assert fail(conn, "dead", claim_one(conn).claim_token, "boom", retry_in=timedelta(0))
    waiting = ingest(conn, "w1", "waiting", debounce=timedelta(hours=1)).message_id
    # received an hour earlier, in the same order (ids still grow with received_at): the
    # recent message stays younger than the cutoff however slow the machine
    conn.execute(
        "UPDATE pgcoord.messages SET received_at = received_at - interval '1 hour'"
        " WHERE id = any(%s)",
        ([*old, parked, waiting],),
    )
    recent = answered(conn, "c", ["c1"])
    buffers_before = statuses(conn)

    cutoff = timedelta(minutes=30)
    assert prune(conn, cutoff, limit=4) == 4
    assert message_states(conn, old) == ["done", "done"], "the oldest four went first"
    assert prune(conn, cutoff, limit=4) == 2
    assert prune(conn, cutoff) == 0

    assert message_states(conn, old) == []
    assert message_states(conn, [parked, waiting]) == ["dead", "waiting"]
    assert message_states(conn, recent) == ["done"], "younger than the cutoff"
    assert statuses(conn) == buffers_before, "buffers are untouched"


def test_a_pruned_message_repeated_is_stored_afresh(conn: Conn) -> None:
    [first] = answered(conn, "a", ["a1"])
    moment = conn.execute("SELECT clock_timestamp()").fetchone()
    assert moment is not None
    until_server_time(conn, moment[0] + AGE)
    assert prune(conn, AGE - timedelta(milliseconds=50)) == 1

    again = ingest(conn, "a1", "a")
    assert not again.duplicate
    assert again.message_id > first
    assert ingest(conn, "a1", "a").duplicate


def test_prune_of_an_empty_inbox_is_zero(conn: Conn) -> None:
    assert prune(conn, timedelta(days=7)) == 0


@pytest.mark.parametrize(
    ("older_than", "limit", "sqlstate", "named"),
    [
        (None, 10, "22004", "p_older_than"),
        (timedelta(0), 10, "22023", "p_older_than"),
        (timedelta(seconds=-1), 10, "22023", "p_older_than"),
        (timedelta(seconds=1), None, "22004", "p_limit"),
        (timedelta(seconds=1), 0, "22023", "p_limit"),
    ],
)
def test_bad_arguments_raise_and_change_nothing(
    conn: Conn, older_than: timedelta | None, limit: int | None, sqlstate: str, named: str
) -> None:
    answered(conn, "a", ["a1"])
    before = snapshot(conn)
    with pytest.raises(psycopg.Error) as raised:
        prune(conn, older_than, limit)
    assert raised.value.sqlstate == sqlstate
    assert named in str(raised.value)
    assert snapshot(conn) == before
