"""campaign_enqueue: the defaults, all or nothing, every malformed item named by its index
and field, the runs that take messages, the groups it stores, and the one notification a
call sends when something is due."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from campaignkit import (
    CHANNEL,
    GROUP_SIZE,
    claim,
    counts,
    create,
    enqueue,
    idle,
    item,
    notified,
    set_status,
    snapshot,
    statuses,
)
from sqlkit import Conn, connect, scalar, server_clock

from pgcoord.worker.campaigns import CampaignWork

# an enqueue notifies for what falls due within an idle campaign worker's longest sleep
LONGEST_SLEEP = CampaignWork.max_idle_poll


def test_the_defaults_are_an_empty_payload_and_the_server_clock_at_the_call(conn: Conn) -> None:
    run_id = create(conn)
    with conn.transaction():
        started = scalar(conn, "SELECT now()")
        conn.execute("SELECT pg_sleep(0.2)")
        before = server_clock(conn)
        assert enqueue(conn, run_id, [item("+1"), item("+2", {"text": "hi"})]) == 2
        after = server_clock(conn)
    rows = conn.execute(
        "SELECT recipient, payload, scheduled_at FROM pgcoord.campaign_messages ORDER BY id"
    ).fetchall()
    assert [row[:2] for row in rows] == [("+1", {}), ("+2", {"text": "hi"})]
    assert rows[0][2] == rows[1][2], "one clock reading per call"
    assert started < before <= rows[0][2] <= after


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"payload": {"text": "hi", "n": [1, 2]}},
        {"scheduled_at": "2001-02-03 04:05:06+07:30"},
        {"payload": {}, "scheduled_at": "2999-01-01T00:00:00Z"},
    ],
)
def test_one_item_is_stored_as_the_same_item_in_a_batch(conn: Conn, fields: Any) -> None:
    """An enqueue of one item takes a shorter way (two plain inserts) than one of many:
    the message, its group (of one) and the enqueue's row come out the same."""
    alone, batched = create(conn, "alone"), create(conn, "batched")
    one = {"recipient": "+1", **fields}
    partner = {"recipient": "+2", "scheduled_at": "1999-01-01T00:00:00Z"}  # a group apart
    started = server_clock(conn)
    assert enqueue(conn, alone, [one]) == 1
    assert enqueue(conn, batched, [partner, one]) == 2

    def stored(run_id: int) -> list[Any]:
        return conn.execute(
            "SELECT m.recipient, m.payload, m.scheduled_at,"
            " q.due_at = m.scheduled_at, q.scheduled_at = m.scheduled_at, q.claimed_by,"
            " q.tries, q.snoozes, q.last_error, q.message_ids = ARRAY[m.id]"
            " FROM pgcoord.campaign_messages AS m"
            " JOIN pgcoord.campaign_queue AS q ON m.id = any(q.message_ids)"
            " WHERE m.run_id = %s AND m.recipient = '+1'",
            (run_id,),
        ).fetchall()

    [row] = stored(alone)
    assert row[3:] == (True, True, None, 0, 0, None, True), row
    if "scheduled_at" in fields:
        assert stored(batched) == [row]
    else:  # the server clock at each call
        [other] = stored(batched)
        assert (row[:2], row[3:]) == (other[:2], other[3:])
        assert started <= row[2] <= other[2]
    enqueues = conn.execute(
        "SELECT run_id, messages, last_message_id - first_message_id"
        " FROM pgcoord.campaign_enqueues ORDER BY run_id"
    ).fetchall()
    assert enqueues == [(alone, 1, 0), (batched, 2, 1)]


def test_an_empty_array_enqueues_nothing(conn: Conn) -> None:
    run_id = create(conn)
    before = snapshot(conn)
    assert enqueue(conn, run_id, []) == 0
    assert snapshot(conn) == before


def test_scheduled_at_keeps_its_instant_whatever_the_zone(conn: Conn) -> None:
    run_id = create(conn)
    now = server_clock(conn).replace(microsecond=123456)
    assert (
        enqueue(
            conn,
            run_id,
            [
                {"recipient": "a", "scheduled_at": now.isoformat()},
                {"recipient": "b", "scheduled_at": now.astimezone().isoformat()},
                {"recipient": "c", "scheduled_at": "2001-02-03 04:05:06+07:30"},
            ],
        )
        == 3
    )
    times = [
        row[0]
        for row in conn.execute(
            "SELECT scheduled_at FROM pgcoord.campaign_messages ORDER BY id"
        ).fetchall()
    ]
    assert times[0] == times[1] == now
    assert times[2].isoformat() == "2001-02-02T20:35:06+00:00"


def test_messages_of_one_instant_share_groups_of_15(conn: Conn) -> None:
    run_id = create(conn)
    now = server_clock(conn)
    later = now + timedelta(hours=1)
    items = [item(f"a{i}", scheduled_at=now) for i in range(40)]
    items += [item(f"b{i}", scheduled_at=later) for i in range(3)]
    items.insert(7, item("c", scheduled_at=now - timedelta(seconds=1)))
    assert enqueue(conn, run_id, items) == 44
    groups = conn.execute(
        "SELECT scheduled_at, cardinality(message_ids) FROM pgcoord.campaign_queue"
        " ORDER BY scheduled_at, message_ids[1]"
    ).fetchall()
    assert groups == [
        (now - timedelta(seconds=1), 1),
        (now, GROUP_SIZE),
        (now, GROUP_SIZE),
        (now, 10),
        (later, 3),
    ]
    claimed = claim(conn, limit=16)
    assert [c.recipient for c in claimed] == ["c", *(f"a{i}" for i in range(15))]
    # two groups taken whole, held as one row of the claim
    assert len({c.claim_token for c in claimed}) == 1
    assert conn.execute(
        "SELECT claimed_by IS NULL, cardinality(message_ids) FROM pgcoord.campaign_queue"
        " ORDER BY claimed_by IS NULL, scheduled_at, message_ids[1]"
    ).fetchall() == [(False, 16), (True, GROUP_SIZE), (True, 10), (True, 3)]


# (item, the field named, what the message says); the bad item is always the 3rd (index 2)
MALFORMED: list[tuple[Any, str, str]] = [
    ("text", "p_items[2]", "must be a JSON object"),
    (["+1"], "p_items[2]", "must be a JSON object"),
    (None, "p_items[2]", "must be a JSON object"),
    ({}, "p_items[2].recipient", "got nothing"),
    ({"payload": {}}, "p_items[2].recipient", "1 to 1024 bytes"),
    ({"recipient": ""}, "p_items[2].recipient", "1 to 1024 bytes"),
    ({"recipient": "x" * 1025}, "p_items[2].recipient", "1 to 1024 bytes"),
    ({"recipient": "é" * 513}, "p_items[2].recipient", "1 to 1024 bytes"),
    ({"recipient": 42}, "p_items[2].recipient", "JSON string"),
    ({"recipient": None}, "p_items[2].recipient", "JSON string"),
    ({"recipient": "+1", "payload": []}, "p_items[2].payload", "JSON object"),
    ({"recipient": "+1", "payload": "hi"}, "p_items[2].payload", "JSON object"),
    ({"recipient": "+1", "payload": None}, "p_items[2].payload", "JSON object"),
    ({"recipient": "+1", "scheduled_at": "tomorrow-ish"}, "p_items[2].scheduled_at", "timestamp"),
    ({"recipient": "+1", "scheduled_at": "2025-13-01"}, "p_items[2].scheduled_at", "timestamp"),
    ({"recipient": "+1", "scheduled_at": 1700000000}, "p_items[2].scheduled_at", "JSON string"),
    ({"recipient": "+1", "scheduled_at": None}, "p_items[2].scheduled_at", "JSON string"),
    ({"recipient": "+1", "scheduled_at": "infinity"}, "p_items[2].scheduled_at", "years 1"),
    ({"recipient": "+1", "scheduled_at": "-infinity"}, "p_items[2].scheduled_at", "years 1"),
    ({"recipient": "+1", "scheduled_at": "12000-01-01"}, "p_items[2].scheduled_at", "years 1"),
    ({"recipient": "+1", "schedule_at": "2025-01-01"}, "p_items[2]", "unknown field schedule_at"),
]


@pytest.mark.parametrize(
    ("bad", "field", "says"), MALFORMED, ids=[f"{i}-{m[1]}" for i, m in enumerate(MALFORMED)]
)
def test_a_malformed_item_raises_naming_it_and_nothing_is_stored(
    conn: Conn, bad: Any, field: str, says: str
) -> None:
    run_id = create(conn)
    enqueue(conn, run_id, [item("first")])
    before = snapshot(conn)
    good = [item("a"), item("b", {"x": 1}, server_clock(conn))]
    with pytest.raises(psycopg.errors.InvalidParameterValue) as raised:
        enqueue(conn, run_id, [*good, bad, item("after")])
    message = raised.value.diag.message_primary or ""
    assert message.startswith(f"{field} ") or message.startswith(f"{field}."), message
    assert says in message, message
    assert snapshot(conn) == before


@pytest.mark.parametrize("items", ['"text"', "{}", "1", "null"], ids=str)
def test_p_items_must_be_an_array(conn: Conn, items: str) -> None:
    run_id = create(conn)
    before = snapshot(conn)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="p_items must be a JSON array"):
        conn.execute(
            "SELECT pgcoord.campaign_enqueue(p_run_id => %s, p_items => %s::jsonb)", (run_id, items)
        )
    with pytest.raises(psycopg.errors.NullValueNotAllowed, match="p_items must not be NULL"):
        conn.execute("SELECT pgcoord.campaign_enqueue(p_run_id => %s, p_items => NULL)", (run_id,))
    assert snapshot(conn) == before


@pytest.mark.parametrize("status", ["cancelled", "finished", "unknown"])
def test_an_unknown_cancelled_or_finished_run_takes_nothing(conn: Conn, status: str) -> None:
    run_id = create(conn)
    if status == "unknown":
        run_id += 1000
    else:
        set_status(conn, run_id, status)
    before = snapshot(conn)
    for items in ([item("+1")], []):
        with pytest.raises(psycopg.errors.InvalidParameterValue) as raised:
            enqueue(conn, run_id, items)
        message = raised.value.diag.message_primary or ""
        assert message.startswith("p_run_id"), message
        assert str(run_id) in message, message
    assert snapshot(conn) == before


def test_a_paused_run_takes_messages_that_wait_for_it(conn: Conn) -> None:
    run_id = create(conn)
    set_status(conn, run_id, "paused")
    assert enqueue(conn, run_id, [item("+1"), item("+2")]) == 2
    assert claim(conn) == []
    assert counts(conn, run_id) == (2, 0, 0, 0, 0, 2)
    set_status(conn, run_id, "running")
    assert [c.recipient for c in claim(conn)] == ["+1", "+2"]


def test_ids_follow_the_items_and_the_status_view_shows_each(conn: Conn) -> None:
    run_id = create(conn)
    assert enqueue(conn, run_id, [item(f"+{i}", {"i": i}) for i in range(5)]) == 5
    ids = [
        row[0]
        for row in conn.execute("SELECT id FROM pgcoord.campaign_messages ORDER BY id").fetchall()
    ]
    rows = statuses(conn, ids)
    assert [(r.recipient, r.status, r.attempt, r.run_id) for r in rows] == [
        (f"+{i}", "pending", 0, run_id) for i in range(5)
    ]


def test_an_enqueue_notifies_once_when_something_is_due_soon(db_url: str, conn: Conn) -> None:
    run_id, paused = create(conn), create(conn)
    set_status(conn, paused, "paused")
    with connect(db_url) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        idle(listener)  # a worker of every run, asleep: enqueues notify it
        assert notified(listener) == []

        enqueue(conn, run_id, [item(f"+{i}") for i in range(40)])
        assert notified(listener) == [str(run_id)], "once per call"
        soon = server_clock(conn) + LONGEST_SLEEP - timedelta(seconds=1)
        enqueue(conn, run_id, [item("soon", scheduled_at=soon)])
        assert notified(listener) == [str(run_id)], "due within an idle worker's sleep"
        beyond = server_clock(conn) + LONGEST_SLEEP + timedelta(seconds=1)
        later = server_clock(conn) + timedelta(minutes=5)
        enqueue(conn, run_id, [item("beyond", scheduled_at=beyond)])
        enqueue(conn, run_id, [item("later", scheduled_at=later)])
        enqueue(conn, run_id, [])
        assert notified(listener) == [], "nothing due within an idle worker's sleep"
        enqueue(conn, run_id, [item("later", scheduled_at=later), item("now")])
        assert notified(listener) == [str(run_id)]
        enqueue(conn, paused, [item("+1")])
        assert notified(listener) == [], "a paused run's messages wait"
        set_status(conn, paused, "running")
        assert notified(listener) == [str(paused)], "resumed with a message due"
        set_status(conn, paused, "paused")
        assert notified(listener) == []
        claim(conn, limit=100)  # all but the three due later
        set_status(conn, run_id, "paused")
        set_status(conn, run_id, "running")
        assert notified(listener) == [str(run_id)], "resumed with one due within that sleep"
        waiting = create(conn)
        beyond = server_clock(conn) + LONGEST_SLEEP + timedelta(seconds=1)
        enqueue(conn, waiting, [item("beyond", scheduled_at=beyond)])
        set_status(conn, waiting, "paused")
        set_status(conn, waiting, "running")
        assert notified(listener) == [], "resumed with nothing due within it"
