"""Debounce and its cap, against the server clock: the flush is due at the last message +
p_debounce, never later than the first buffered message + p_max_wait; a claim finds
nothing before the flush and the whole burst after it."""

from __future__ import annotations

from datetime import datetime, timedelta

from inboxkit import (
    claim,
    claim_one,
    claim_when_due,
    complete,
    ingest,
    status_of,
    statuses,
    timed_claim,
)
from sqlkit import Conn, connect

from pgcoord.types import Batch, Ingested

DEBOUNCE = timedelta(milliseconds=200)
MAX_WAIT = timedelta(milliseconds=500)
GAP = timedelta(milliseconds=90)


def flush_of(messages: list[Ingested], debounce: timedelta, max_wait: timedelta) -> datetime:
    return min(messages[-1].received_at + debounce, messages[0].received_at + max_wait)


def assert_burst_of(burst: Batch, key: str, messages: list[Ingested], bodies: list[str]) -> None:
    assert burst.conversation_key == key
    assert burst.message_ids == [m.message_id for m in messages]
    assert burst.bodies == bodies
    assert burst.first_message_at == messages[0].received_at
    assert burst.last_message_at == messages[-1].received_at
    assert burst.attempt == 1


def test_messages_arriving_within_the_debounce_flush_together(conn: Conn) -> None:
    """Messages every ~90 ms with a 200 ms debounce and a 500 ms cap: the flush moves with
    every message until the cap holds it; claims before it find nothing, the one after
    it gets every message, in order."""
    messages = [ingest(conn, "m0", "c", "msg 0", debounce=DEBOUNCE, max_wait=MAX_WAIT)]
    first = status_of(conn, "c")
    assert (first.message_count, first.first_message_at, first.last_message_at) == (
        1,
        messages[0].received_at,
        messages[0].received_at,
    )
    assert first.flush_at == messages[0].received_at + DEBOUNCE
    assert (first.claimed_by, first.claimed_until, first.attempt, first.dead) == (
        None,
        None,
        0,
        False,
    )
    messages.append(ingest(conn, "m1", "c", "msg 1", debounce=DEBOUNCE, max_wait=MAX_WAIT))
    moved = status_of(conn, "c")
    assert moved.message_count == 2
    assert moved.flush_at == flush_of(messages, DEBOUNCE, MAX_WAIT), "the second message moves it"

    # the cap bounds the wait; the loop's guard is the server clock, not a count
    deadline = messages[0].received_at + MAX_WAIT + timedelta(seconds=10)
    while True:
        due = flush_of(messages, DEBOUNCE, MAX_WAIT)
        timed = timed_claim(conn)
        if timed.bursts:
            assert timed.after >= due, f"claimed by {timed.after}, due at {due}"
            break
        assert timed.before < due, f"nothing claimed at {timed.before}, due since {due}"
        if len(messages) < 8 and timed.after >= messages[-1].received_at + GAP:
            n = len(messages)
            messages.append(
                ingest(conn, f"m{n}", "c", f"msg {n}", debounce=DEBOUNCE, max_wait=MAX_WAIT)
            )
            row = status_of(conn, "c")
            assert (row.message_count, row.first_message_at, row.last_message_at) == (
                len(messages),
                messages[0].received_at,
                messages[-1].received_at,
            )
            assert row.flush_at == flush_of(messages, DEBOUNCE, MAX_WAIT)
            repeat = ingest(conn, f"m{n}", "c", f"msg {n}", debounce=timedelta(0))
            assert repeat.duplicate
            assert status_of(conn, "c") == row, "a repeat moves no flush"
        assert timed.after < deadline, "the buffer never became due"

    [burst] = timed.bursts
    assert_burst_of(burst, "c", messages, [f"msg {i}" for i in range(len(messages))])
    assert complete(conn, "c", burst.claim_token)
    assert statuses(conn) == []


def test_the_cap_holds_the_flush_at_first_message_plus_max_wait(conn: Conn) -> None:
    """Debounce 10 s, cap 400 ms: the cap alone decides, however many messages come, and
    a message arriving while the burst is processed opens its own window."""
    debounce, max_wait = timedelta(seconds=10), timedelta(milliseconds=400)
    messages = []
    for i in range(4):
        messages.append(
            ingest(conn, f"m{i}", "c", f"msg {i}", debounce=debounce, max_wait=max_wait)
        )
        assert status_of(conn, "c").flush_at == messages[0].received_at + max_wait
    tries = claim_when_due(conn, messages[0].received_at + max_wait)
    [burst] = tries[-1].bursts
    assert_burst_of(burst, "c", messages, [f"msg {i}" for i in range(4)])
    assert tries[-1].after < messages[-1].received_at + debounce, "the cap, not the debounce"

    late = ingest(conn, "m4", "c", "msg 4", debounce=debounce, max_wait=max_wait)
    held = status_of(conn, "c")
    assert held.message_count == 5 and held.claimed_by == "w"
    assert held.flush_at == late.received_at + max_wait, "a window of its own"
    assert held.first_message_at == messages[0].received_at
    assert held.last_message_at == late.received_at
    assert claim(conn) == [], "the conversation is being processed"
    assert complete(conn, "c", burst.claim_token)

    row = status_of(conn, "c")
    assert (row.message_count, row.first_message_at, row.claimed_by) == (
        1,
        late.received_at,
        None,
    )
    assert row.flush_at == late.received_at + max_wait
    tries = claim_when_due(conn, late.received_at + max_wait)
    [second] = tries[-1].bursts
    assert_burst_of(second, "c", [late], ["msg 4"])
    assert second.claim_token > burst.claim_token


def test_each_conversation_keeps_its_own_window(conn: Conn) -> None:
    slow_debounce = timedelta(seconds=30)
    slow = ingest(conn, "s0", "slow", debounce=slow_debounce)
    fast = ingest(conn, "f0", "fast", debounce=timedelta(0))
    assert status_of(conn, "fast").flush_at == fast.received_at
    assert status_of(conn, "slow").flush_at == slow.received_at + slow_debounce

    burst = claim_one(conn)
    assert burst.conversation_key == "fast", "the slow window is not due yet"
    more_fast = ingest(conn, "f1", "fast", debounce=timedelta(0))
    assert complete(conn, "fast", burst.claim_token)
    [burst] = claim(conn)
    assert burst.message_ids == [more_fast.message_id], "the later message flushes on its own"
    assert complete(conn, "fast", burst.claim_token)

    assert status_of(conn, "slow").flush_at == slow.received_at + slow_debounce
    assert [row.conversation_key for row in statuses(conn)] == ["slow"]


def test_listeners_are_told_of_a_new_window_due_within_a_second(db_url: str, conn: Conn) -> None:
    """message_ingest notifies pgcoord_buffers when it opens a window due within a second
    (an idle worker polls at least that often), and only then."""
    with connect(db_url) as listener:
        listener.execute("LISTEN pgcoord_buffers")
        steps = {
            "a new window due now": (lambda: ingest(conn, "a1", "a"), 1),
            "a second message in that window": (lambda: ingest(conn, "a2", "a"), 0),
            "a repeat": (lambda: ingest(conn, "a1", "a"), 0),
            "a new window due in 10 s": (
                lambda: ingest(conn, "b1", "b", debounce=timedelta(seconds=10)),
                0,
            ),
            "a new window due in 500 ms": (
                lambda: ingest(conn, "c1", "c", debounce=timedelta(milliseconds=500)),
                1,
            ),
            "a new window capped to 200 ms": (
                lambda: ingest(conn, "d1", "d", debounce=timedelta(seconds=10), max_wait=MAX_WAIT),
                1,
            ),
            "a claim": (lambda: claim(conn), 0),
            "a message behind a claimed batch": (lambda: ingest(conn, "a3", "a"), 0),
        }
        seen = {}
        for n, (step, (action, _)) in enumerate(steps.items()):
            action()
            sentinel = f"sentinel {n}"  # delivered after anything the step's commit sent
            conn.execute("SELECT pg_notify('pgcoord_buffers', %s)", (sentinel,))
            payloads = []
            for notify in listener.notifies(timeout=5):
                if notify.payload == sentinel:
                    break
                payloads.append(notify.payload)
            else:
                raise AssertionError(f"{step}: the sentinel never arrived")
            seen[step] = len(payloads)
    assert seen == {step: expected for step, (_, expected) in steps.items()}
