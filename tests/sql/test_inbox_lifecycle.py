"""A claim's life: complete, fail and retry, a lease that runs out, stale tokens, and the
batch parked as dead after its 5th failed try."""

from __future__ import annotations

from datetime import timedelta

import pytest
from inboxkit import (
    MAX_FAILED_TRIES,
    claim,
    claim_one,
    claim_when_due,
    complete,
    extend,
    fail,
    fail_for_good,
    ingest,
    message_states,
    snapshot,
    status_of,
    statuses,
    until_lease_ran_out,
)
from sqlkit import Conn, scalar, server_clock

SHORT = timedelta(milliseconds=100)


def test_a_message_arriving_during_processing_gets_a_flush_of_its_own(conn: Conn) -> None:
    first = [ingest(conn, f"m{i}", "c") for i in range(2)]
    burst = claim_one(conn)
    assert burst.message_ids == [m.message_id for m in first]

    late = ingest(conn, "m2", "c")
    assert claim(conn) == [], "one claim at a time per conversation"
    held = status_of(conn, "c")
    assert (held.message_count, held.claimed_by, held.attempt) == (3, "w", 1)
    assert held.flush_at == late.received_at, "the late message's own flush"

    assert complete(conn, "c", burst.claim_token)
    assert message_states(conn, [*burst.message_ids, late.message_id]) == [
        "done",
        "done",
        "waiting",
    ]
    row = status_of(conn, "c")
    assert (row.message_count, row.first_message_at, row.claimed_by, row.attempt) == (
        1,
        late.received_at,
        None,
        0,
    )
    assert not complete(conn, "c", burst.claim_token), "completing twice"

    second = claim_one(conn)
    assert (second.message_ids, second.bodies, second.attempt) == ([late.message_id], ["m2"], 1)
    assert second.claim_token > burst.claim_token
    assert second.first_message_at == second.last_message_at == late.received_at
    assert complete(conn, "c", second.claim_token)
    assert statuses(conn) == []


def test_extend_pushes_the_lease_and_keeps_others_away(conn: Conn) -> None:
    ingest(conn, "m1", "c")
    burst = claim_one(conn, lease=timedelta(milliseconds=300))
    before = server_clock(conn)
    until = extend(conn, "c", burst.claim_token, lease=timedelta(seconds=20))
    assert until is not None
    assert before + timedelta(seconds=20) <= until <= server_clock(conn) + timedelta(seconds=20)
    assert status_of(conn, "c").claimed_until == until
    assert claim(conn, "other") == []
    assert complete(conn, "c", burst.claim_token)


def test_a_stale_token_changes_nothing_once_another_claim_took_over(conn: Conn) -> None:
    messages = [ingest(conn, f"m{i}", "c") for i in range(2)]
    lost = claim_one(conn, "crashed", lease=SHORT)
    until_lease_ran_out(conn, "c")

    taken = claim_one(conn, "rescuer")
    assert taken.message_ids == lost.message_ids == [m.message_id for m in messages]
    assert taken.claim_token > lost.claim_token
    assert taken.attempt == 2, "the lost lease counts as a failed try"
    row = status_of(conn, "c")
    assert (row.claimed_by, row.attempt) == ("rescuer", 2)
    assert row.last_error is not None and "crashed" in row.last_error

    before = snapshot(conn)
    assert complete(conn, "c", lost.claim_token) is False
    assert fail(conn, "c", lost.claim_token) is False
    assert extend(conn, "c", lost.claim_token) is None
    assert complete(conn, "c", 0) is False
    assert complete(conn, "elsewhere", taken.claim_token) is False, "the token is per conversation"
    assert snapshot(conn) == before

    assert complete(conn, "c", taken.claim_token)
    assert message_states(conn, taken.message_ids) == ["done", "done"]


@pytest.mark.parametrize("late_call", ["complete", "extend", "fail"])
def test_a_late_call_succeeds_while_nobody_reclaimed(conn: Conn, late_call: str) -> None:
    """API.md edge case: the lease ran out, but no other claim replaced it."""
    ingest(conn, "m1", "c")
    burst = claim_one(conn, "slow", lease=SHORT)
    until_lease_ran_out(conn, "c")

    if late_call == "complete":
        assert complete(conn, "c", burst.claim_token) is True
        assert statuses(conn) == []
        assert message_states(conn, burst.message_ids) == ["done"]
    elif late_call == "extend":
        assert extend(conn, "c", burst.claim_token, lease=timedelta(seconds=20)) is not None
        assert claim(conn, "other") == [], "the extended lease holds again"
        assert complete(conn, "c", burst.claim_token) is True
    else:
        assert fail(conn, "c", burst.claim_token, "late", retry_in=timedelta(0)) is True
        again = claim_one(conn, "other")
        assert again.attempt == 2, "a lost lease and the fail that follows it are one try"
        assert status_of(conn, "c").last_error == "late"
        assert complete(conn, "c", again.claim_token)
    assert claim(conn) == []


def test_a_lost_lease_then_the_late_fail_counts_once(conn: Conn) -> None:
    """The late fail comes after another claim took the batch: it is refused, and the
    try was counted once, by the claim that found the lease run out."""
    ingest(conn, "m1", "c")
    lost = claim_one(conn, "slow", lease=SHORT)
    until_lease_ran_out(conn, "c")
    taken = claim_one(conn, "rescuer")
    assert taken.attempt == 2
    assert fail(conn, "c", lost.claim_token, "late") is False
    assert status_of(conn, "c").attempt == 2

    assert fail(conn, "c", taken.claim_token, "second", retry_in=timedelta(0))
    third = claim_one(conn)
    assert third.attempt == 3
    assert third.message_ids == lost.message_ids


def test_fail_offers_the_same_batch_again_after_retry_in_not_before(conn: Conn) -> None:
    retry_in = timedelta(milliseconds=300)
    messages = [ingest(conn, f"m{i}", "c", f"body {i}") for i in range(3)]
    burst = claim_one(conn)
    later = ingest(conn, "m3", "c", "body 3")  # waits behind the batch

    before = server_clock(conn)
    assert fail(conn, "c", burst.claim_token, "provider down", retry_in=retry_in)
    after = server_clock(conn)
    row = status_of(conn, "c")
    assert row.flush_at is not None and before + retry_in <= row.flush_at <= after + retry_in
    assert (row.claimed_by, row.attempt, row.last_error, row.message_count) == (
        None,
        1,
        "provider down",
        4,
    )
    assert fail(conn, "c", burst.claim_token) is False, "the claim was given back"
    assert complete(conn, "c", burst.claim_token) is False

    tries = claim_when_due(conn, row.flush_at)
    [retry] = tries[-1].bursts
    assert retry.message_ids == [m.message_id for m in messages], "the same batch, no more"
    assert retry.bodies == ["body 0", "body 1", "body 2"]
    assert retry.first_message_at == messages[0].received_at
    assert retry.last_message_at == messages[-1].received_at
    assert retry.attempt == 2
    assert retry.claim_token > burst.claim_token

    assert complete(conn, "c", retry.claim_token)
    after_retry = claim_one(conn)
    assert (after_retry.message_ids, after_retry.attempt) == ([later.message_id], 1)


@pytest.mark.parametrize("fifth", ["buffer_fail", "lost lease"])
def test_the_fifth_failed_try_parks_the_batch_and_later_messages_go_on(
    conn: Conn, fifth: str
) -> None:
    batch = [ingest(conn, f"m{i}", "c", f"body {i}") for i in range(2)]
    tokens = []
    newer = []
    for attempt in range(1, MAX_FAILED_TRIES + 1):
        lease = SHORT if attempt == MAX_FAILED_TRIES and fifth == "lost lease" else None
        burst = claim_one(conn, f"w{attempt}", lease=lease or timedelta(seconds=30))
        assert (burst.message_ids, burst.attempt) == ([m.message_id for m in batch], attempt)
        tokens.append(burst.claim_token)
        if attempt >= 3:  # messages arriving meanwhile wait behind the batch
            newer.append(ingest(conn, f"n{attempt}", "c", f"newer {attempt}"))
        if attempt < MAX_FAILED_TRIES or fifth == "buffer_fail":
            assert fail(conn, "c", burst.claim_token, f"error {attempt}")
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)

    if fifth == "lost lease":
        until_lease_ran_out(conn, "c")
        assert claim(conn) == [], "the claim that finds the 5th lost lease parks the batch"
        last_error = f"lease expired (claimed by w{MAX_FAILED_TRIES})"
    else:
        last_error = f"error {MAX_FAILED_TRIES}"

    dead, fresh = statuses(conn, "c")
    assert dead.dead and not fresh.dead
    assert (dead.message_count, dead.attempt, dead.last_error) == (2, 5, last_error)
    assert (dead.first_message_at, dead.last_message_at) == (
        batch[0].received_at,
        batch[-1].received_at,
    )
    assert (dead.flush_at, dead.claimed_by, dead.claimed_until) == (None, None, None)
    assert (fresh.message_count, fresh.attempt, fresh.claimed_by, fresh.last_error) == (
        3,
        0,
        None,
        None,
    )
    assert fresh.first_message_at == newer[0].received_at
    assert fresh.flush_at == newer[-1].received_at
    assert message_states(conn, [m.message_id for m in batch]) == ["dead", "dead"]
    assert message_states(conn, [m.message_id for m in newer]) == ["waiting"] * 3

    for token in tokens:
        assert complete(conn, "c", token) is False
        assert fail(conn, "c", token) is False
        assert extend(conn, "c", token) is None

    after = claim_one(conn)
    assert after.message_ids == [m.message_id for m in newer], "a fresh buffer, claimable"
    assert after.bodies == ["newer 3", "newer 4", "newer 5"]
    assert after.attempt == 1
    assert complete(conn, "c", after.claim_token)

    [still] = statuses(conn, "c")
    assert still.dead and still.message_count == 2
    assert claim(conn) == []
    again = ingest(conn, "m-after", "c")
    [burst] = claim(conn)
    assert burst.message_ids == [again.message_id], "the dead batch never comes back"


def test_fail_for_good_parks_the_batch_at_once_and_later_messages_go_on(conn: Conn) -> None:
    batch = [ingest(conn, f"m{i}", "c") for i in range(2)]
    assert fail(conn, "c", claim_one(conn).claim_token, "gateway 503")  # try 1
    burst = claim_one(conn)
    newer = ingest(conn, "n1", "c", "newer")  # waits behind the batch
    assert fail_for_good(conn, "c", burst.claim_token, "the customer blocked the bot")
    dead, fresh = statuses(conn, "c")
    assert dead.dead and not fresh.dead
    assert (dead.message_count, dead.attempt, dead.last_error) == (
        2,
        2,
        "the customer blocked the bot",
    )
    assert message_states(conn, [m.message_id for m in batch]) == ["dead", "dead"]
    assert fail_for_good(conn, "c", burst.claim_token) is False, "its token is stale now"
    assert complete(conn, "c", burst.claim_token) is False
    [after] = claim(conn)
    assert after.message_ids == [newer.message_id] and after.attempt == 1


def test_a_late_fail_for_good_succeeds_while_nobody_reclaimed(conn: Conn) -> None:
    ingest(conn, "m1", "c")
    late = claim_one(conn, lease=SHORT)
    until_lease_ran_out(conn, "c")
    assert fail_for_good(conn, "c", late.claim_token)
    [dead] = statuses(conn, "c")
    assert dead.dead and dead.attempt == 1, "the lost lease and this are one try"
    assert claim(conn) == []


def test_a_parked_batch_with_nothing_behind_it_leaves_only_the_dead_row(conn: Conn) -> None:
    ingest(conn, "m1", "c")
    for _ in range(MAX_FAILED_TRIES):
        assert fail(conn, "c", claim_one(conn).claim_token, "nope")
    [dead] = statuses(conn)
    assert dead.dead and dead.attempt == 5 and dead.last_error == "nope"
    assert claim(conn) == []


def test_buffer_failed_says_which_try_parked_the_batch(conn: Conn) -> None:
    """The worker's fail: False while the batch comes back, True on the try that parks it
    (the 5th), None for a claim no longer current, which changes nothing."""
    ingest(conn, "m", "c", "body")
    answers = []
    for attempt in range(1, MAX_FAILED_TRIES + 1):
        burst = claim_one(conn, f"w{attempt}")
        answers.append(
            scalar(
                conn,
                "SELECT pgcoord.buffer_failed(p_conversation_key => %s, p_claim_token => %s,"
                " p_error => %s, p_retry_in => %s)",
                "c",
                burst.claim_token,
                f"error {attempt}",
                timedelta(0),
            )
        )
    assert answers == [False] * (MAX_FAILED_TRIES - 1) + [True]
    [dead] = statuses(conn, "c")
    before = (dead.dead, dead.attempt, dead.last_error)
    stale = scalar(
        conn,
        "SELECT pgcoord.buffer_failed(p_conversation_key => %s, p_claim_token => %s,"
        " p_error => %s)",
        "c",
        burst.claim_token,
        "late",
    )
    assert stale is None
    [dead] = statuses(conn, "c")
    assert (dead.dead, dead.attempt, dead.last_error) == before == (True, 5, "error 5")
