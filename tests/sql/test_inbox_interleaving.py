"""Exact interleavings at a conversation's buffer row, forced by holding the row (a plain
SELECT ... FOR UPDATE, or a call inside an open transaction) and polling pg_blocking_pids
until the next call waits on it."""

from __future__ import annotations

import time

import pytest
from inboxkit import (
    MAX_FAILED_TRIES,
    claim,
    claim_one,
    complete,
    fail,
    ingest,
    message_states,
    status_of,
    statuses,
)
from sqlkit import Background, Conn, connections, poll, scalar

from pgcoord.types import Ingested


def blocked(observer: Conn, pid: int) -> bool:
    return bool(scalar(observer, "SELECT cardinality(pg_blocking_pids(%s)) > 0", pid))


def hold_row(conn: Conn, conversation_key: str) -> None:
    """Inside the caller's open transaction: lock the conversation's open buffer row."""
    row = conn.execute(
        "SELECT id FROM pgcoord.buffers WHERE conversation_key = %s AND NOT dead FOR UPDATE",
        (conversation_key,),
    ).fetchone()
    assert row is not None


def test_a_claimer_skips_a_locked_conversation_without_waiting(db_url: str, conn: Conn) -> None:
    ingest(conn, "a1", "a")
    ingest(conn, "b1", "b")
    with connections(db_url, 2) as (holder, claimer):
        claimer.execute("SET statement_timeout = '2s'")  # a block fails the test fast
        with holder.transaction():
            hold_row(holder, "a")
            started = time.monotonic()
            [burst] = claim(claimer)
            assert time.monotonic() - started < 1.0
            assert burst.conversation_key == "b"
            assert claim(claimer) == []
        [burst] = claim(claimer)
        assert burst.conversation_key == "a"


def test_a_message_arriving_while_a_claim_commits_waits_for_the_next_flush(
    db_url: str, conn: Conn
) -> None:
    first = ingest(conn, "m1", "c")
    with connections(db_url, 2) as (claimer, ingester):
        with claimer.transaction():
            [burst] = claim(claimer)
            late = Background(lambda: ingest(ingester, "m2", "c"))
            poll(lambda: blocked(conn, ingester.info.backend_pid), "the ingest to wait")
        arrived: Ingested = late.join()
    assert burst.message_ids == [first.message_id]
    assert not arrived.duplicate
    assert message_states(conn, [first.message_id, arrived.message_id]) == ["claimed", "waiting"]
    held = status_of(conn, "c")
    assert (held.message_count, held.claimed_by) == (2, "w")

    assert complete(conn, "c", burst.claim_token)
    assert claim_one(conn).message_ids == [arrived.message_id]


@pytest.mark.parametrize(
    "ending",
    ["complete", "fifth fail, nothing waiting", "fifth fail, a message waiting"],
)
def test_a_message_arriving_while_the_buffer_row_goes_away_is_kept(
    db_url: str, conn: Conn, ending: str
) -> None:
    """The complete deletes the conversation's buffer row, or the 5th fail parks it (and
    moves the waiting messages to a fresh row): an ingest waiting on that row must land
    in the conversation's open buffer, whichever it is by then."""
    batch = ingest(conn, "m1", "c")
    tries = 1 if ending == "complete" else MAX_FAILED_TRIES
    for _ in range(tries - 1):
        assert fail(conn, "c", claim_one(conn).claim_token)
    burst = claim_one(conn)
    assert burst.attempt == tries
    waiting = [ingest(conn, "m2", "c")] if ending.endswith("waiting") else []

    with connections(db_url, 3) as (holder, ender, ingester):
        with holder.transaction():
            hold_row(holder, "c")
            end = Background(
                lambda: (
                    complete(ender, "c", burst.claim_token)
                    if ending == "complete"
                    else fail(ender, "c", burst.claim_token, "last")
                )
            )
            poll(lambda: blocked(conn, ender.info.backend_pid), "the complete or fail to wait")
            late = Background(lambda: ingest(ingester, "m3", "c"))
            poll(lambda: blocked(conn, ingester.info.backend_pid), "the ingest to wait")
        assert end.join() is True
        arrived: Ingested = late.join()

    assert not arrived.duplicate
    assert message_states(conn, [batch.message_id]) == ["done" if ending == "complete" else "dead"]
    rows = statuses(conn, "c")
    assert [row.dead for row in rows] == ([] if ending == "complete" else [True]) + [False]
    fresh = rows[-1]
    expected = [*waiting, arrived]
    assert fresh.message_count == len(expected)
    assert fresh.first_message_at == expected[0].received_at
    assert fresh.last_message_at == arrived.received_at
    assert (fresh.claimed_by, fresh.attempt) == (None, 0)

    after = claim_one(conn)
    assert after.message_ids == [m.message_id for m in expected]
    assert after.attempt == 1
    assert complete(conn, "c", after.claim_token)
