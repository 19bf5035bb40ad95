"""buffer_release (not in API.md): a stopping worker gives its claim back untouched. The
batch is claimable again at once, with the same attempt number, and a stale token is
answered false without changing anything."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from inboxkit import (
    claim,
    claim_one,
    complete,
    fail,
    ingest,
    snapshot,
    status_of,
    until_lease_ran_out,
)
from sqlkit import Conn

SHORT = timedelta(milliseconds=200)


def release(conn: Conn, conversation_key: str | None, token: int | None) -> bool:
    row = conn.execute(
        "SELECT pgcoord.buffer_release(p_conversation_key => %s, p_claim_token => %s)",
        (conversation_key, token),
    ).fetchone()
    assert row is not None
    return bool(row[0])


def test_a_released_batch_comes_back_at_once_with_the_same_attempt(conn: Conn) -> None:
    ingest(conn, "m1", "c")
    first = claim_one(conn, "stopping")
    assert fail(conn, "c", first.claim_token, "boom", retry_in=timedelta(0))
    second = claim_one(conn, "stopping")
    assert second.attempt == 2

    assert release(conn, "c", second.claim_token) is True

    row = status_of(conn, "c")
    assert (row.claimed_by, row.claimed_until, row.attempt, row.last_error) == (
        None,
        None,
        1,
        "boom",
    ), "a release is not a failed try and keeps the last real error"
    third = claim_one(conn, "next")
    assert third.message_ids == first.message_ids
    assert third.attempt == 2, "the same attempt number as the released claim"
    assert third.claim_token > second.claim_token
    assert release(conn, "c", second.claim_token) is False, "the released token is stale"
    assert complete(conn, "c", third.claim_token)
    assert claim(conn) == []


def test_release_of_a_stale_claim_changes_nothing(conn: Conn) -> None:
    ingest(conn, "m1", "c")
    lost = claim_one(conn, "crashed", lease=SHORT)
    until_lease_ran_out(conn, "c")
    taken = claim_one(conn, "rescuer")
    before = snapshot(conn)

    assert release(conn, "c", lost.claim_token) is False
    assert release(conn, "other", taken.claim_token) is False

    assert snapshot(conn) == before
    assert complete(conn, "c", taken.claim_token)


def test_a_late_release_succeeds_while_nobody_reclaimed(conn: Conn) -> None:
    ingest(conn, "m1", "c")
    burst = claim_one(conn, "slow", lease=SHORT)
    until_lease_ran_out(conn, "c")
    assert release(conn, "c", burst.claim_token) is True
    again = claim_one(conn, "next")
    assert again.attempt == 1, "released before anyone found the lease run out: no try lost"


@pytest.mark.parametrize(
    ("key", "token", "sqlstate", "named"),
    [
        (None, 1, "22004", "p_conversation_key"),
        ("", 1, "22023", "p_conversation_key"),
        ("x" * 1025, 1, "22023", "p_conversation_key"),
        ("c", None, "22004", "p_claim_token"),
    ],
)
def test_bad_arguments_raise_and_change_nothing(
    conn: Conn, key: str | None, token: int | None, sqlstate: str, named: str
) -> None:
    ingest(conn, "m1", "c")
    burst = claim_one(conn, "w")
    before = snapshot(conn)
    with pytest.raises(psycopg.Error) as raised:
        release(conn, key, burst.claim_token if token == 1 else token)
    assert raised.value.sqlstate == sqlstate
    assert named in str(raised.value)
    assert snapshot(conn) == before
