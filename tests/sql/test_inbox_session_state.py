"""The section-2 calls leave no session state behind (advisory locks, temp tables,
settings, cursors, listening), and a claim lives in the tables, not in a connection:
every call works on a fresh connection, as through a transaction-mode pooler."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from inboxkit import (
    MAX_FAILED_TRIES,
    claim,
    claim_one,
    complete,
    due_in,
    extend,
    fail,
    ingest,
    statuses,
    until_lease_ran_out,
)
from sqlkit import Conn, connect
from test_lock_session_state import scenario_leftovers

TOKENS: dict[str, int] = {}  # the current claims of the scenario's setup


def bad(call: Callable[[Conn], Any], sqlstates: frozenset[str] = frozenset({"22004", "22023"})):
    def run(conn: Conn) -> None:
        with pytest.raises(psycopg.Error) as raised:
            call(conn)
        assert raised.value.sqlstate in sqlstates

    return run


def claim_twice(conn: Conn) -> None:
    assert claim(conn, "w", limit=100)
    assert claim(conn, "w") == []


SCENARIOS: dict[str, dict[str, Callable[[Conn], Any]]] = {
    "message_ingest": {
        "first delivery": lambda c: ingest(c, "new", "fresh", debounce=timedelta(minutes=5)),
        "first delivery, notifying": lambda c: ingest(c, "new", "fresh", debounce=timedelta(0)),
        "into a held conversation": lambda c: ingest(c, "new", "held"),
        "repeat": lambda c: ingest(c, "held-1", "held"),
        "conflicting repeat": bad(
            lambda c: ingest(c, "held-1", "held", "other body"), frozenset({"23505"})
        ),
        "bad argument": bad(lambda c: ingest(c, "new", "fresh", payload=None, provider="")),
    },
    "buffer_claim": {
        "fresh, orphaned and then nothing": claim_twice,
        "bad argument": bad(lambda c: claim(c, "w", limit=0)),
    },
    "buffer_complete": {
        "true": lambda c: complete(c, "held", TOKENS["held"]),
        "late, true": lambda c: complete(c, "expired", TOKENS["expired"]),
        "false": lambda c: complete(c, "held", TOKENS["held"] + 1000),
        "bad argument": bad(lambda c: c.execute("SELECT pgcoord.buffer_complete('held', NULL)")),
    },
    "buffer_fail": {
        "true": lambda c: fail(c, "held", TOKENS["held"]),
        "parking": lambda c: fail(c, "doomed", TOKENS["doomed"]),
        "false": lambda c: fail(c, "held", TOKENS["held"] + 1000),
        "bad argument": bad(lambda c: fail(c, "held", TOKENS["held"], retry_in=timedelta(-1))),
    },
    "buffer_extend": {
        "live": lambda c: extend(c, "held", TOKENS["held"]),
        "stale": lambda c: extend(c, "held", TOKENS["held"] + 1000),
        "bad argument": bad(lambda c: extend(c, "held", TOKENS["held"], lease=timedelta(0))),
    },
    "buffer_due_in": {"select": due_in},
    "buffer_status": {"select": statuses},
}


def setup(conn: Conn) -> None:
    conn.execute("DELETE FROM pgcoord.messages")
    conn.execute("DELETE FROM pgcoord.buffers")
    ingest(conn, "doomed-1", "doomed")
    for _ in range(MAX_FAILED_TRIES - 1):
        assert fail(conn, "doomed", claim_one(conn).claim_token)
    TOKENS["doomed"] = claim_one(conn).claim_token
    ingest(conn, "held-1", "held")
    TOKENS["held"] = claim_one(conn).claim_token
    ingest(conn, "expired-1", "expired")
    TOKENS["expired"] = claim_one(conn, lease=timedelta(milliseconds=1)).claim_token
    ingest(conn, "due-1", "due")
    until_lease_ran_out(conn, "expired")


@pytest.mark.parametrize("function", list(SCENARIOS))
def test_calls_leave_no_session_state(db_url: str, conn: Conn, function: str) -> None:
    problems = scenario_leftovers(conn, db_url, SCENARIOS[function], lambda: setup(conn))
    assert problems == [], f"{function} left session state behind"


def test_a_claim_outlives_its_connection_and_each_call_may_use_another(db_url: str) -> None:
    def fresh() -> Conn:
        return connect(db_url)

    with fresh() as c:
        stored = ingest(c, "m1", "c", "hello")
    with fresh() as c:
        assert ingest(c, "m1", "c", "hello").duplicate
    with fresh() as c:
        burst = claim_one(c, "worker-a")
    with fresh() as c:
        assert claim(c, "worker-b") == [], "the claim holds without its connection"
    with fresh() as c:
        assert extend(c, "c", burst.claim_token) is not None
    with fresh() as c:
        assert fail(c, "c", burst.claim_token, "retry", retry_in=timedelta(0))
    with fresh() as c:
        again = claim_one(c, "worker-b")
        assert (again.message_ids, again.attempt) == ([stored.message_id], 2)
    with fresh() as c:
        assert complete(c, "c", burst.claim_token) is False
    with fresh() as c:
        assert complete(c, "c", again.claim_token)
    with fresh() as c:
        assert statuses(c) == []


def test_one_connection_serving_two_workers_keeps_them_apart(conn: Conn) -> None:
    """A pooled connection passes from one worker to the next: the token is the claim,
    never the session."""
    ingest(conn, "a1", "a")
    mine = claim_one(conn, "alice")
    ingest(conn, "b1", "b")
    theirs = claim_one(conn, "bob")
    assert complete(conn, "a", theirs.claim_token) is False
    assert complete(conn, "b", mine.claim_token) is False
    assert complete(conn, "a", mine.claim_token)
    assert complete(conn, "b", theirs.claim_token)


def test_calls_inside_the_callers_transaction_are_undone_with_it(conn: Conn) -> None:
    """A worker may claim and write its answer in one transaction: when that fails, the
    claim is undone with it and the burst is due again, as if never claimed."""
    stored = ingest(conn, "m1", "c")
    with pytest.raises(RuntimeError), conn.transaction():
        burst = claim_one(conn)
        assert complete(conn, "c", burst.claim_token)
        raise RuntimeError("the caller's work failed")
    [row] = statuses(conn)
    assert (row.claimed_by, row.attempt, row.message_count) == (None, 0, 1)
    again = claim_one(conn)
    assert (again.message_ids, again.attempt) == ([stored.message_id], 1)
    assert again.claim_token > burst.claim_token, "a token is never handed out twice"

    with pytest.raises(RuntimeError), conn.transaction():
        assert not ingest(conn, "m2", "c").duplicate
        raise RuntimeError("the webhook handler failed")
    assert not ingest(conn, "m2", "c").duplicate, "the undone delivery was never stored"
    assert complete(conn, "c", again.claim_token)
