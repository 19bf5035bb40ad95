"""A campaign message's life: order and due times, run statuses, the retry policy, lost
leases, late calls, stale tokens, snooze, release, extend, skip_stale and the counts."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from campaignkit import (
    LONG,
    SHORT,
    claim,
    claim_one,
    complete,
    complete_all,
    complete_many,
    counts,
    create,
    due_in,
    enqueue,
    enqueue_many,
    extend,
    fail,
    fail_for_good,
    item,
    release,
    set_status,
    skip_stale,
    snapshot,
    snooze,
    status_of,
    statuses,
    until_lease_ran_out,
)
from inboxkit import until_server_time
from sqlkit import Conn, scalar, server_clock

HOUR = timedelta(hours=1)

STATUSES = ("running", "paused", "cancelled", "finished")


def test_oldest_due_first_and_enqueue_order_at_the_same_instant(conn: Conn) -> None:
    run_id = create(conn)
    now = server_clock(conn)
    at = [now - timedelta(seconds=s) for s in (3, 1, 2)]
    enqueue(conn, run_id, [item("c", scheduled_at=at[0]), item("a", scheduled_at=at[1])])
    enqueue(conn, run_id, [item("b", scheduled_at=at[2]), item("d", scheduled_at=at[0])])
    enqueue(conn, run_id, [item(f"e{i}", scheduled_at=at[1]) for i in range(20)])
    order = [claim_one(conn).recipient for _ in range(24)]
    assert order == ["c", "d", "b", "a", *(f"e{i}" for i in range(20))]
    assert claim(conn) == []


def test_a_message_is_claimed_once_its_scheduled_time_has_come(conn: Conn) -> None:
    run_id = create(conn)
    due_at = server_clock(conn) + timedelta(milliseconds=400)
    enqueue(conn, run_id, [item("later", scheduled_at=due_at)])
    enqueue(conn, run_id, [item("now")])
    assert [c.recipient for c in claim(conn)] == ["now"]
    while True:
        before = server_clock(conn)
        found = claim(conn)
        after = server_clock(conn)
        if found:
            assert [c.recipient for c in found] == ["later"]
            assert after >= due_at and found[0].scheduled_at == due_at
            break
        assert before < due_at, f"nothing claimed at {before}, due since {due_at}"


def test_only_running_runs_are_claimed_and_the_others_keep_their_messages(conn: Conn) -> None:
    runs = {status: create(conn, status) for status in STATUSES}
    for status, run_id in runs.items():
        enqueue(conn, run_id, [item(f"{status}-{i}") for i in range(3)])
        if status != "running":
            set_status(conn, run_id, status)
    claimed = claim(conn, limit=100)
    assert {c.recipient.split("-")[0] for c in claimed} == {"running"}
    for status in ("paused", "cancelled", "finished"):
        assert claim(conn, run_id=runs[status]) == []
        assert counts(conn, runs[status]) == (3, 0, 0, 0, 0, 3), "pending rows stay as they are"
    assert due_in(conn) is not None and due_in(conn, runs["paused"]) is None

    assert set_status(conn, runs["paused"], "running") == "paused"
    assert {c.recipient for c in claim(conn, limit=100)} == {f"paused-{i}" for i in range(3)}


@pytest.mark.parametrize("start", STATUSES)
@pytest.mark.parametrize("target", STATUSES)
def test_status_transitions(conn: Conn, start: str, target: str) -> None:
    run_id = create(conn)
    if start != "running":
        set_status(conn, run_id, start)
    before = snapshot(conn)
    if start == target:
        assert set_status(conn, run_id, target) == start, "the same status again is a no-op"
        assert snapshot(conn) == before
    elif start in {"cancelled", "finished"}:
        with pytest.raises(psycopg.errors.InvalidParameterValue) as raised:
            set_status(conn, run_id, target)
        assert "p_status" in str(raised.value) and start in str(raised.value)
        assert snapshot(conn) == before
    else:
        assert set_status(conn, run_id, target) == start
        assert scalar(conn, "SELECT status FROM pgcoord.campaign_runs WHERE id = %s", run_id) == (
            target
        )


def test_the_backoff_follows_the_list_its_last_element_repeats_and_retry_after_may_win(
    conn: Conn,
) -> None:
    backoff = [timedelta(milliseconds=100), timedelta(milliseconds=250)]
    run_id = create(conn, max_retries=5, retry_backoff=backoff)
    [message_id] = enqueue_many(conn, run_id, 1)
    expected = [
        (None, backoff[0]),  # retry 1
        (timedelta(milliseconds=10), backoff[1]),  # retry 2: the backoff is later
        (None, backoff[1]),  # retry 3: the last element repeats
        (timedelta(milliseconds=400), timedelta(milliseconds=400)),  # Retry-After is later
        (timedelta(0), backoff[1]),  # retry 5
    ]
    for attempt, (retry_after, wait) in enumerate(expected, start=1):
        claimed = claim_one(conn)
        assert (claimed.message_id, claimed.attempt) == (message_id, attempt)
        before = server_clock(conn)
        result = fail(conn, message_id, claimed.claim_token, f"try {attempt}", retry_after)
        after = server_clock(conn)
        assert result is not None and result.status == "pending"
        assert result.next_attempt_at is not None
        assert before + wait <= result.next_attempt_at <= after + wait, attempt
        row = status_of(conn, message_id)
        assert (row.status, row.attempt, row.last_error) == ("pending", attempt, f"try {attempt}")
        assert row.next_attempt_at == result.next_attempt_at
        assert claim(conn) == [], "not before its retry time"
        until_server_time(conn, result.next_attempt_at)

    last = claim_one(conn)
    assert last.attempt == 6
    result = fail(conn, message_id, last.claim_token, "the last try")
    assert result is not None and (result.status, result.next_attempt_at) == ("failed", None)


@pytest.mark.parametrize("max_retries", [0, 2])
def test_after_its_last_retry_a_message_fails_for_good_with_its_error(
    conn: Conn, max_retries: int
) -> None:
    run_id = create(conn, max_retries=max_retries, retry_backoff=[timedelta(0)])
    [message_id] = enqueue_many(conn, run_id, 1)
    for attempt in range(1, max_retries + 2):
        claimed = claim_one(conn)
        assert (claimed.message_id, claimed.attempt) == (message_id, attempt)
        result = fail(conn, message_id, claimed.claim_token, f"error {attempt}")
        assert result is not None
        if attempt <= max_retries:
            assert result.status == "pending"
    assert (result.status, result.next_attempt_at) == ("failed", None)
    row = status_of(conn, message_id)
    assert (row.status, row.attempt, row.last_error) == (
        "failed",
        max_retries + 1,
        f"error {attempt}",
    )
    assert row.finished_at is not None and row.next_attempt_at is None
    assert row.sent_at is None, "never sent"
    [other] = enqueue_many(conn, run_id, 1)
    assert [c.message_id for c in claim(conn)] == [other], "never claimed again"
    assert counts(conn, run_id) == (0, 1, 0, 1, 0, 2)
    assert fail(conn, message_id, claimed.claim_token) is None, "its token is stale now"


def test_fail_for_good_ends_a_message_at_once_with_its_error_whatever_retries_are_left(
    conn: Conn,
) -> None:
    run_id = create(conn, max_retries=3, retry_backoff=[timedelta(0)])
    ids = enqueue_many(conn, run_id, 3)  # one group: the others stay claimed, then pending
    claimed = {c.message_id: c for c in claim(conn)}
    first, second, third = (claimed[i] for i in ids)
    assert fail(conn, ids[0], first.claim_token, "gateway 503") is not None  # try 1
    again = claim_one(conn, run_id=run_id)
    assert (again.message_id, again.attempt) == (ids[0], 2)

    assert fail_for_good(conn, ids[0], again.claim_token, "not a WhatsApp number")
    row = status_of(conn, ids[0])
    assert (row.status, row.attempt, row.last_error) == ("failed", 2, "not a WhatsApp number")
    assert row.finished_at is not None and row.next_attempt_at is None and row.sent_at is None
    assert fail_for_good(conn, ids[0], again.claim_token) is False, "its token is stale now"
    # the rest of the claim is untouched: still held by its token, then completed
    assert complete(conn, ids[1], second.claim_token)
    assert fail_for_good(conn, ids[2], third.claim_token, "blocked")
    assert status_of(conn, ids[2]).attempt == 1
    assert claim(conn) == [], "never claimed again"
    assert counts(conn, run_id) == (0, 0, 1, 2, 0, 3)


def test_a_late_fail_for_good_succeeds_while_no_other_claim_took_over(conn: Conn) -> None:
    run_id = create(conn)
    [message_id] = enqueue_many(conn, run_id, 1)
    late = claim_one(conn, "slow", lease=SHORT)
    until_lease_ran_out(conn, message_id)
    assert fail_for_good(conn, message_id, late.claim_token, "refused")
    row = status_of(conn, message_id)
    assert (row.status, row.attempt) == ("failed", 1), "the lost lease and this are one try"


def test_a_snooze_spends_no_try(conn: Conn) -> None:
    run_id = create(conn, max_retries=1, retry_backoff=[timedelta(0)])
    [message_id] = enqueue_many(conn, run_id, 1)
    for _ in range(3):
        claimed = claim_one(conn)
        assert claimed.attempt == 1
        assert snooze(conn, message_id, claimed.claim_token)
        assert status_of(conn, message_id).attempt == 0
    claimed = claim_one(conn)
    before = server_clock(conn)
    assert snooze(conn, message_id, claimed.claim_token, timedelta(seconds=20))
    next_at = status_of(conn, message_id).next_attempt_at
    assert next_at is not None
    assert before + timedelta(seconds=20) <= next_at <= server_clock(conn) + timedelta(seconds=20)
    assert claim(conn) == []
    conn.execute(
        "UPDATE pgcoord.campaign_queue SET due_at = clock_timestamp() WHERE %s = any(message_ids)",
        (message_id,),
    )
    claimed = claim_one(conn)
    assert claimed.attempt == 1
    result = fail(conn, message_id, claimed.claim_token)
    assert result is not None and result.status == "pending", "its one retry is left"


def test_a_lost_lease_counts_one_try(conn: Conn) -> None:
    run_id = create(conn)
    [message_id] = enqueue_many(conn, run_id, 1)
    lost = claim_one(conn, "crashed", lease=SHORT)
    until_lease_ran_out(conn, message_id)
    row = status_of(conn, message_id)
    assert (row.status, row.claimed_by) == ("processing", "crashed"), "an orphan until claimed"

    taken = claim_one(conn, "rescuer")
    assert (taken.message_id, taken.attempt) == (message_id, 2)
    assert taken.claim_token > lost.claim_token
    row = status_of(conn, message_id)
    assert (row.attempt, row.claimed_by, row.last_error) == (2, "rescuer", "lease expired")
    assert complete(conn, message_id, taken.claim_token)
    assert status_of(conn, message_id).attempt == 2


def test_a_lost_lease_and_the_late_fail_that_follows_it_are_one_try(conn: Conn) -> None:
    run_id = create(conn, retry_backoff=[timedelta(0)])
    [message_id] = enqueue_many(conn, run_id, 1)
    late = claim_one(conn, lease=SHORT)
    until_lease_ran_out(conn, message_id)
    result = fail(conn, message_id, late.claim_token, "timed out")
    assert result is not None and result.status == "pending"
    again = claim_one(conn)
    assert again.attempt == 2, "one try, not two"
    assert status_of(conn, message_id).last_error == "timed out"


def test_an_orphan_whose_lost_lease_was_its_last_try_fails_for_good(conn: Conn) -> None:
    run_id = create(conn, max_retries=1, retry_backoff=[timedelta(0)])
    [message_id, *others] = enqueue_many(conn, run_id, 3)
    first = claim_one(conn)
    assert fail(conn, message_id, first.claim_token) is not None
    assert {c.message_id for c in claim(conn, limit=2)} == set(others)
    last = claim_one(conn, lease=SHORT)
    assert (last.message_id, last.attempt) == (message_id, 2)
    until_lease_ran_out(conn, message_id)

    assert claim(conn) == [], "not sent again"
    row = status_of(conn, message_id)
    assert (row.status, row.attempt, row.last_error) == ("failed", 2, "lease expired")
    assert complete(conn, message_id, last.claim_token) is False
    assert counts(conn, run_id) == (0, 2, 0, 1, 0, 3)


def test_a_claim_fills_its_limit_past_orphans_that_fail_for_good(conn: Conn) -> None:
    """Orphans come first, the oldest first; those that fail for good give no message,
    so the claim goes on past them: as many as it asks for."""
    run_id = create(conn, max_retries=0)
    orphans = [m for n in range(3) for m in enqueue_many(conn, run_id, 1, prefix=f"o{n}")]
    held = [c for _ in orphans for c in claim(conn, limit=1, lease=SHORT)]
    assert [c.message_id for c in held] == orphans, "three claims, three held groups"
    until_lease_ran_out(conn, orphans[-1])
    waiting = enqueue_many(conn, run_id, 4, prefix="w")  # due after the orphans

    assert [c.message_id for c in claim(conn, limit=2)] == waiting[:2]
    for message_id in orphans:
        row = status_of(conn, message_id)
        assert (row.status, row.last_error) == ("failed", "lease expired")
    assert counts(conn, run_id) == (2, 2, 0, 3, 0, 7)


def test_an_orphan_comes_back_before_the_backlog_that_fell_due_while_its_lease_ran(
    conn: Conn,
) -> None:
    """Its worker died. It was claimed as the oldest due, and is claimed again first
    (its lost lease a try), not behind every message that fell due before its lease
    ran out: oldest scheduled_at first."""
    now = server_clock(conn)
    run_id = create(conn)
    [orphan] = enqueue_many(conn, run_id, 1, prefix="o", scheduled_at=now - 2 * HOUR)
    held = claim_one(conn, lease=SHORT)
    assert held.message_id == orphan
    backlog = enqueue_many(conn, run_id, 30, prefix="b", scheduled_at=now - HOUR)
    until_lease_ran_out(conn, orphan)

    claimed = claim(conn, "other", limit=16)
    assert [(c.message_id, c.attempt) for c in claimed] == [
        (orphan, 2),
        *((m, 1) for m in backlog[:15]),
    ]
    assert complete(conn, orphan, held.claim_token) is False, "the lost claim is stale"
    assert complete_all(conn, claimed) == 16


def test_late_calls_succeed_while_no_other_claim_took_over(conn: Conn) -> None:
    run_id = create(conn, retry_backoff=[timedelta(0)])
    ids = enqueue_many(conn, run_id, 7)
    held = {c.message_id: c for c in claim(conn, "slow", limit=7, lease=SHORT)}
    until_lease_ran_out(conn, ids[0])
    tokens = {message_id: c.claim_token for message_id, c in held.items()}

    assert extend(conn, ids[0], tokens[ids[0]], LONG) is not None
    assert complete(conn, ids[1], tokens[ids[1]])
    assert complete_many(conn, ids[2:4], [tokens[i] for i in ids[2:4]]) == 2
    failed = fail(conn, ids[4], tokens[ids[4]])
    assert failed is not None and failed.status == "pending"
    assert snooze(conn, ids[5], tokens[ids[5]])
    assert release(conn, ids[6], tokens[ids[6]])
    assert [row.status for row in statuses(conn, ids)] == [
        "processing",
        "sent",
        "sent",
        "sent",
        "pending",
        "pending",
        "pending",
    ]
    assert complete(conn, ids[0], tokens[ids[0]]), "the extended lease is live again"


def test_stale_tokens_are_refused_by_every_call_and_change_nothing(conn: Conn) -> None:
    run_id = create(conn)
    ids = enqueue_many(conn, run_id, 3)
    lost = {c.message_id: c.claim_token for c in claim(conn, "crashed", lease=SHORT)}
    until_lease_ran_out(conn, ids[0])
    taken = {c.message_id: c.claim_token for c in claim(conn, "rescuer")}
    assert taken.keys() == lost.keys() == set(ids)

    before = snapshot(conn)
    for message_id in ids:
        token = lost[message_id]
        assert complete(conn, message_id, token) is False
        assert complete_many(conn, [message_id], [token]) == 0
        assert fail(conn, message_id, token) is None
        assert fail_for_good(conn, message_id, token) is False
        assert snooze(conn, message_id, token) is False
        assert extend(conn, message_id, token) is None
        assert release(conn, message_id, token) is False
        # the current token with another message, and a token never handed out
        other = ids[(ids.index(message_id) + 1) % 3]
        assert complete(conn, other, taken[message_id] + 1000) is False
    assert snapshot(conn) == before

    assert complete_many(conn, ids, [taken[i] for i in ids]) == 3
    for message_id in ids:
        assert complete(conn, message_id, taken[message_id]) is False, "completing twice"
        assert release(conn, message_id, taken[message_id]) is False


def test_a_message_given_back_is_no_longer_held_by_its_token(conn: Conn) -> None:
    run_id = create(conn, retry_backoff=[timedelta(0)])
    ids = enqueue_many(conn, run_id, 3)
    claimed = claim(conn, limit=3)
    token = claimed[0].claim_token
    assert {c.claim_token for c in claimed} == {token}, "one group, one token"
    assert release(conn, ids[0], token)
    assert snooze(conn, ids[1], token)
    assert fail(conn, ids[2], token) is not None
    for message_id in ids:
        assert complete(conn, message_id, token) is False
    again = claim(conn, limit=3)
    assert sorted(c.message_id for c in again) == ids
    assert min(c.claim_token for c in again) > token
    assert {c.message_id: c.attempt for c in again} == {ids[0]: 1, ids[1]: 1, ids[2]: 2}


def test_release_gives_a_claim_back_due_at_once_without_a_try(conn: Conn) -> None:
    run_id = create(conn, max_retries=0)
    [message_id] = enqueue_many(conn, run_id, 1)
    for _ in range(3):
        claimed = claim_one(conn)
        assert claimed.attempt == 1
        assert release(conn, message_id, claimed.claim_token)
        assert due_in(conn) == timedelta(0)
    claimed = claim_one(conn)
    assert complete(conn, message_id, claimed.claim_token)


def test_messages_claimed_with_one_token_share_one_lease(conn: Conn) -> None:
    run_id = create(conn)
    ids = enqueue_many(conn, run_id, 20)
    claimed = claim(conn, limit=15, lease=SHORT) + claim(conn, limit=5, lease=SHORT)
    tokens = sorted({c.claim_token for c in claimed})
    assert len(tokens) == 2, "two claims"
    first = [c for c in claimed if c.claim_token == tokens[0]]
    until = extend(conn, first[0].message_id, tokens[0], LONG)
    assert until is not None
    by_id = {row.message_id: row for row in statuses(conn, ids)}
    assert {by_id[c.message_id].claimed_until for c in first} == {until}
    until_lease_ran_out(conn, next(c.message_id for c in claimed if c.claim_token == tokens[1]))
    retaken = claim(conn, "other", limit=20)
    assert {c.claim_token for c in retaken} != {tokens[1]}
    assert sorted(c.message_id for c in retaken) == sorted(
        c.message_id for c in claimed if c.claim_token == tokens[1]
    )
    assert complete_all(conn, first) == 15


def test_a_claim_of_part_of_a_group_leaves_the_rest_due_in_order(conn: Conn) -> None:
    run_id = create(conn)
    ids = enqueue_many(conn, run_id, 15)
    parts = [claim(conn, limit=n) for n in (4, 6, 10)]
    assert [[c.message_id for c in part] for part in parts] == [ids[:4], ids[4:10], ids[10:]]
    assert len({part[0].claim_token for part in parts}) == 3
    assert sum(complete_all(conn, part) for part in parts) == 15
    assert counts(conn, run_id) == (0, 0, 15, 0, 0, 15)


def test_claims_follow_the_due_time_across_runs_or_stay_in_one(conn: Conn) -> None:
    now = server_clock(conn)
    a, b = create(conn, "a"), create(conn, "b")
    enqueue(conn, a, [item("a-new", scheduled_at=now - timedelta(seconds=1))])
    enqueue(conn, b, [item("b-old", scheduled_at=now - timedelta(seconds=5))])
    enqueue(conn, a, [item("a-old", scheduled_at=now - timedelta(seconds=3))])
    assert [c.recipient for c in claim(conn, run_id=a, limit=1)] == ["a-old"]
    assert [(c.recipient, c.run_id) for c in claim(conn, limit=5)] == [("b-old", b), ("a-new", a)]


def test_skip_stale_skips_old_pending_messages_of_running_runs(conn: Conn) -> None:
    now = server_clock(conn)
    hour = timedelta(hours=1)
    fresh, strict, paused = (
        create(conn, "fresh", stale_after=10 * hour),
        create(conn, "strict", stale_after=hour),
        create(conn, "paused", stale_after=hour),
    )
    for run_id in (fresh, strict, paused):
        enqueue(
            conn,
            run_id,
            [item("old", scheduled_at=now - 2 * hour), item("new", scheduled_at=now)],
        )
    enqueue(conn, strict, [item("held", scheduled_at=now - 3 * hour)])
    held = claim_one(conn, run_id=strict)
    assert held.recipient == "held"
    set_status(conn, paused, "paused")

    assert skip_stale(conn) == 1, "strict's old message; held and paused ones stay"
    assert counts(conn, strict) == (1, 1, 0, 0, 1, 3)
    assert counts(conn, fresh) == (2, 0, 0, 0, 0, 2)
    assert skip_stale(conn) == 0
    assert skip_stale(conn, timedelta(minutes=30)) == 1, "fresh's old message"
    assert skip_stale(conn, timedelta(0)) >= 2, "everything pending scheduled before now"
    assert counts(conn, paused) == (2, 0, 0, 0, 0, 2)
    assert complete(conn, held.message_id, held.claim_token)
    rows = conn.execute(
        "SELECT recipient, status FROM pgcoord.campaign_message_status WHERE run_id = %s"
        " ORDER BY message_id",
        (strict,),
    ).fetchall()
    assert rows == [("old", "skipped"), ("new", "skipped"), ("held", "sent")]


def test_progress_counts_every_state(conn: Conn) -> None:
    run_id = create(conn, "progress", max_retries=0)
    other = create(conn, "other")
    enqueue_many(conn, other, 5)
    enqueue_many(conn, run_id, 40)
    assert counts(conn, run_id) == (40, 0, 0, 0, 0, 40)
    claimed = claim(conn, limit=30, run_id=run_id)
    assert counts(conn, run_id) == (10, 30, 0, 0, 0, 40)
    assert complete_all(conn, claimed[:20]) == 20
    assert fail(conn, claimed[20].message_id, claimed[20].claim_token) is not None
    assert skip_stale(conn, timedelta(0)) == 15, "the 10 pending of run and 5 of other"
    assert counts(conn, run_id) == (0, 9, 20, 1, 10, 40)
    row = conn.execute(
        "SELECT name, status FROM pgcoord.campaign_progress WHERE run_id = %s", (run_id,)
    ).fetchone()
    assert row == ("progress", "running")


def test_due_in_tells_an_idle_worker_how_long_to_sleep(conn: Conn) -> None:
    seen = {"no run": due_in(conn)}
    run_id = create(conn)
    seen["an empty run"] = due_in(conn)
    enqueue(conn, run_id, [item("later", scheduled_at=server_clock(conn) + timedelta(seconds=20))])
    seen["a message in 20 s"] = due_in(conn)
    enqueue(conn, run_id, [item("now")])
    seen["a message due now"] = due_in(conn)
    claimed = claim_one(conn, lease=timedelta(seconds=10))
    seen["a lease ending in 10 s"] = due_in(conn)
    set_status(conn, run_id, "paused")
    seen["a paused run"] = due_in(conn)
    set_status(conn, run_id, "running")
    assert complete(conn, claimed.message_id, claimed.claim_token)
    seen["the message in 20 s again"] = due_in(conn, run_id)

    problems = []
    for label, expected in {
        "no run": None,
        "an empty run": None,
        "a message due now": timedelta(0),
        "a paused run": None,
    }.items():
        if seen[label] != expected:
            problems.append(f"{label}: {seen[label]!r}, expected {expected!r}")
    for label, seconds in {
        "a message in 20 s": 20,
        "a lease ending in 10 s": 10,
        "the message in 20 s again": 20,
    }.items():
        value = seen[label]
        if value is None or not timedelta(seconds=seconds - 3) < value <= timedelta(
            seconds=seconds
        ):
            problems.append(f"{label}: {value!r}, expected about {seconds} s")
    assert problems == [], "campaign_due_in: " + "; ".join(problems)


def test_complete_many_counts_each_current_message_once(conn: Conn) -> None:
    run_id = create(conn)
    ids = enqueue_many(conn, run_id, 20)
    claimed = claim(conn, limit=20)
    token = {c.message_id: c.claim_token for c in claimed}
    stale = claim(conn, limit=1)  # nothing left: every message is held
    assert stale == []
    pairs = [(ids[0], token[ids[0]]), (ids[0], token[ids[0]]), (ids[1], token[ids[1]] + 99)]
    pairs += [(i, token[i]) for i in ids[2:17]]
    pairs += [(ids[17], token[ids[1]] + 99), (ids[17], token[ids[17]])]
    metrics = [{"n": n} for n in range(len(pairs))]
    assert complete_many(conn, [p[0] for p in pairs], [p[1] for p in pairs], metrics) == 17
    sent = {row.message_id: row for row in statuses(conn, ids) if row.status == "sent"}
    assert sorted(sent) == [ids[0], *ids[2:18]]
    assert sent[ids[2]].metrics == {"n": 3}
    assert all(row.sent_at is not None and row.sent_at == row.finished_at for row in sent.values())
    assert all(row.sent_at is None for row in statuses(conn, ids) if row.status != "sent")
    assert counts(conn, run_id) == (0, 3, 17, 0, 0, 20)
