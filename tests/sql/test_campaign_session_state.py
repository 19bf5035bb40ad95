"""Campaign calls, whatever they answer, leave nothing in the caller's session, and a
claim belongs to its token, not to a connection: a worker behind a transaction-mode
pooler may make each call on another connection, or inside its own transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from campaignkit import (
    SHORT,
    TABLES,
    claim,
    claim_one,
    complete,
    complete_many,
    create,
    due_in,
    enqueue,
    enqueue_many,
    extend,
    fail,
    item,
    progress,
    release,
    set_status,
    skip_stale,
    snooze,
    status_of,
    until_lease_ran_out,
)
from sqlkit import Conn, connect
from test_lock_session_state import bad, scenario_leftovers

STATE: dict[str, Any] = {}  # the scenario's run and current claims


def held(i: int) -> tuple[int, int]:
    return STATE["held"][i]


SCENARIOS: dict[str, dict[str, Callable[[Conn], Any]]] = {
    "campaign_create": {
        "created": lambda c: create(c, "another"),
        "bad argument": bad(lambda c: create(c, "")),
    },
    "campaign_set_status": {
        "paused": lambda c: set_status(c, STATE["run"], "paused"),
        "bad argument": bad(lambda c: set_status(c, STATE["run"], "gone")),
    },
    "campaign_enqueue": {
        "due now, notifying": lambda c: enqueue(c, STATE["run"], [item("+9")]),
        "bad item": bad(lambda c: enqueue(c, STATE["run"], [item("+9"), {"recipient": 1}])),
        "bad timestamp": bad(
            lambda c: enqueue(c, STATE["run"], [{"recipient": "+9", "scheduled_at": "soon"}])
        ),
    },
    "campaign_claim": {
        "fresh, orphaned and then nothing": lambda c: claim(c, limit=100) and claim(c) == [],
        "bad argument": bad(lambda c: claim(c, limit=0)),
    },
    "campaign_complete": {
        "true": lambda c: complete(c, *held(0)),
        "late, true": lambda c: complete(c, *STATE["expired"]),
        "false": lambda c: complete(c, held(0)[0], held(0)[1] + 1000),
    },
    "campaign_complete_many": {
        "some": lambda c: complete_many(c, [held(0)[0], held(1)[0]], [held(0)[1], 1]),
        "bad argument": bad(lambda c: complete_many(c, [1, 2], [1])),
    },
    "campaign_fail": {
        "retry": lambda c: fail(c, *held(0)),
        "false": lambda c: fail(c, held(0)[0], held(0)[1] + 1000),
        "bad argument": bad(lambda c: fail(c, *held(0), retry_after=timedelta(-1))),
    },
    "campaign_snooze": {"true": lambda c: snooze(c, *held(0))},
    "campaign_extend": {
        "live": lambda c: extend(c, *held(0)),
        "bad argument": bad(lambda c: extend(c, *held(0), lease=timedelta(0))),
    },
    "campaign_release": {"true": lambda c: release(c, *held(0))},
    "campaign_skip_stale": {"some": lambda c: skip_stale(c, timedelta(0))},
    "campaign_due_in": {"select": due_in},
    "campaign_progress": {"select": lambda c: progress(c, STATE["run"])},
}


def setup(conn: Conn) -> None:
    for table in TABLES:
        conn.execute(f"DELETE FROM pgcoord.{table}")
    STATE["run"] = run_id = create(conn)
    enqueue_many(conn, run_id, 3)
    expired = claim_one(conn, "crashed", lease=SHORT)
    STATE["expired"] = (expired.message_id, expired.claim_token)
    STATE["held"] = [(c.message_id, c.claim_token) for c in claim(conn, limit=2)]
    enqueue_many(conn, run_id, 2)
    until_lease_ran_out(conn, expired.message_id)


@pytest.mark.parametrize("function", list(SCENARIOS))
def test_calls_leave_no_session_state(db_url: str, conn: Conn, function: str) -> None:
    problems = scenario_leftovers(conn, db_url, SCENARIOS[function], lambda: setup(conn))
    assert problems == [], f"{function} left session state behind"


def test_a_claim_outlives_its_connection_and_each_call_may_use_another(db_url: str) -> None:
    def fresh() -> Conn:
        return connect(db_url)

    with fresh() as c:
        run_id = create(c, retry_backoff=[timedelta(0)])
    with fresh() as c:
        [message_id] = enqueue_many(c, run_id, 1)
    with fresh() as c:
        first = claim_one(c, "worker-a")
    with fresh() as c:
        assert claim(c, "worker-b") == [], "the claim holds without its connection"
    with fresh() as c:
        assert extend(c, message_id, first.claim_token) is not None
    with fresh() as c:
        assert fail(c, message_id, first.claim_token) is not None
    with fresh() as c:
        again = claim_one(c, "worker-b")
        assert (again.message_id, again.attempt) == (message_id, 2)
    with fresh() as c:
        assert complete(c, message_id, first.claim_token) is False
    with fresh() as c:
        assert complete(c, message_id, again.claim_token)
    with fresh() as c:
        assert status_of(c, message_id).status == "sent"


def test_calls_inside_the_callers_transaction_are_undone_with_it(conn: Conn) -> None:
    """A worker may claim and record its own work in one transaction: when that fails, the
    claim is undone with it and the message is due again, as if never claimed."""
    run_id = create(conn)
    [message_id] = enqueue_many(conn, run_id, 1)
    with pytest.raises(RuntimeError), conn.transaction():
        first = claim_one(conn)
        assert complete(conn, message_id, first.claim_token)
        raise RuntimeError("the caller's work failed")
    row = status_of(conn, message_id)
    assert (row.status, row.attempt) == ("pending", 0)
    again = claim_one(conn)
    assert again.attempt == 1
    assert again.claim_token > first.claim_token, "a token is never handed out twice"
    assert complete(conn, message_id, again.claim_token)
