"""Exact interleavings at a queue row, forced by holding it (a plain SELECT ... FOR UPDATE,
or a call inside an open transaction) and polling pg_blocking_pids until the next call
waits on it: a claimer passes a held group without waiting, a late call racing the claim
that replaces it, two calls on one message, completions locking in one order, and an
enqueue racing a cancel."""

from __future__ import annotations

import time

import psycopg
import pytest
from campaignkit import (
    SHORT,
    claim,
    complete,
    complete_many,
    counts,
    create,
    enqueue,
    enqueue_many,
    fail,
    item,
    set_status,
    status_of,
    until_lease_ran_out,
)
from sqlkit import Background, Conn, connections, poll, scalar


def blocked(observer: Conn, pid: int) -> bool:
    return bool(scalar(observer, "SELECT cardinality(pg_blocking_pids(%s)) > 0", pid))


def blockers(observer: Conn, pid: int) -> list[int]:
    value = scalar(observer, "SELECT pg_blocking_pids(%s)", pid)
    assert isinstance(value, list)
    return value


def hold_group(conn: Conn, message_id: int) -> int:
    """Inside the caller's open transaction: lock the queue row holding the message."""
    row = conn.execute(
        "SELECT token FROM pgcoord.campaign_queue WHERE %s = any(message_ids) FOR UPDATE",
        (message_id,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_claimer_passes_a_held_group_without_waiting(db_url: str, conn: Conn) -> None:
    run_id = create(conn)
    first = enqueue_many(conn, run_id, 15)
    second = enqueue_many(conn, run_id, 15)
    with connections(db_url, 2) as (holder, claimer):
        claimer.execute("SET statement_timeout = '2s'")  # a block fails the test fast
        with holder.transaction():
            hold_group(holder, first[0])
            started = time.monotonic()
            taken = claim(claimer, limit=30)
            assert time.monotonic() - started < 1.0
            assert [c.message_id for c in taken] == second
            assert claim(claimer) == []
        assert [c.message_id for c in claim(claimer, limit=30)] == first


@pytest.mark.parametrize("claimer_commits", [True, False], ids=["reclaimed", "rolled-back"])
def test_a_late_complete_racing_the_claim_that_replaces_it(
    db_url: str, conn: Conn, claimer_commits: bool
) -> None:
    """The orphan's reclaim holds the row; the late complete of the old claim waits for
    it. Committed, the old token is stale; rolled back, nobody else has the message and
    the late complete succeeds."""
    run_id = create(conn)
    [message_id] = enqueue_many(conn, run_id, 1)
    [lost] = claim(conn, "slow", lease=SHORT)
    until_lease_ran_out(conn, message_id)
    with connections(db_url, 2) as (rescuer, late):
        rescuer.execute("BEGIN")
        [taken] = claim(rescuer, "rescuer")
        assert (taken.message_id, taken.attempt) == (message_id, 2)
        done = Background(lambda: complete(late, message_id, lost.claim_token))
        poll(lambda: blocked(conn, late.info.backend_pid), "the late complete to wait")
        rescuer.execute("COMMIT" if claimer_commits else "ROLLBACK")
        assert done.join() is (not claimer_commits)
    row = status_of(conn, message_id)
    if claimer_commits:
        assert (row.status, row.claimed_by, row.attempt) == ("processing", "rescuer", 2)
        assert complete(conn, message_id, taken.claim_token)
    else:
        assert (row.status, row.attempt) == ("sent", 1)
        assert complete(conn, message_id, taken.claim_token) is False
    assert counts(conn, run_id) == (0, 0, 1, 0, 0, 1)


def test_a_fail_waiting_on_a_complete_of_the_same_message_finds_it_sent(
    db_url: str, conn: Conn
) -> None:
    run_id = create(conn)
    [message_id, other] = enqueue_many(conn, run_id, 2)
    claimed = {c.message_id: c for c in claim(conn)}
    token = claimed[message_id].claim_token
    with connections(db_url, 2) as (completer, failer):
        with completer.transaction():
            assert complete(completer, message_id, token)
            late = Background(lambda: fail(failer, message_id, token, "too late"))
            poll(lambda: blocked(conn, failer.info.backend_pid), "the fail to wait")
        assert late.join() is None
    assert status_of(conn, message_id).status == "sent"
    assert status_of(conn, other).status == "processing", "its sibling is still held"
    assert complete(conn, other, token)


def test_completions_lock_their_groups_in_token_order(db_url: str, conn: Conn) -> None:
    """Two complete_many over the same two groups, given in opposite orders, both wait on
    the first group and lock nothing else meanwhile: they cannot deadlock."""
    run_id = create(conn)
    enqueue_many(conn, run_id, 30)
    claimed = claim(conn, limit=15) + claim(conn, limit=15)
    tokens = sorted({c.claim_token for c in claimed})
    assert len(tokens) == 2
    forward = [c for c in claimed if c.claim_token == tokens[0]]
    forward += [c for c in claimed if c.claim_token == tokens[1]]
    backward = forward[::-1]
    with connections(db_url, 4) as (holder, one, two, prober):
        with holder.transaction():
            hold_group(holder, forward[0].message_id)
            calls = [
                Background(
                    lambda c=c, order=order: complete_many(
                        c, [m.message_id for m in order], [m.claim_token for m in order]
                    )
                )
                for c, order in ((one, backward), (two, forward))
            ]
            pids = {c.info.backend_pid for c in (holder, one, two)}
            for c in (one, two):
                poll(lambda c=c: blocked(conn, c.info.backend_pid), "both calls to wait")
                # on the holder, or queued behind the other call for the same row
                assert set(blockers(conn, c.info.backend_pid)) <= pids - {c.info.backend_pid}
            with prober.transaction():
                prober.execute("SET LOCAL lock_timeout = '1s'")
                locked = prober.execute(
                    "SELECT token FROM pgcoord.campaign_queue WHERE token = %s FOR UPDATE",
                    (tokens[1],),
                ).fetchall()
                assert locked == [(tokens[1],)], "the second group is free while they wait"
        assert sorted(call.join() for call in calls) == [0, 30]
    assert counts(conn, run_id) == (0, 0, 30, 0, 0, 30)


def test_an_enqueue_waiting_on_a_cancel_is_refused(db_url: str, conn: Conn) -> None:
    run_id = create(conn)
    with connections(db_url, 2) as (canceller, enqueuer):
        with canceller.transaction():
            assert set_status(canceller, run_id, "cancelled") == "running"
            late = Background(lambda: enqueue(enqueuer, run_id, [item("+1")]))
            poll(lambda: blocked(conn, enqueuer.info.backend_pid), "the enqueue to wait")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="cancelled"):
            late.join()
    assert counts(conn, run_id) == (0, 0, 0, 0, 0, 0)


def test_enqueues_into_one_run_do_not_wait_for_each_other(db_url: str, conn: Conn) -> None:
    """An enqueue share-locks its run's row: a second enqueue into the run goes through
    while the first is still open (an exclusive lock made every enqueue into a run wait
    for the one before it to commit), and a cancel still waits for the open one."""
    run_id = create(conn)
    with connections(db_url, 3) as (first, second, canceller):
        second.execute("SET lock_timeout = '2s'")  # a wait fails the test fast
        with first.transaction():
            assert enqueue(first, run_id, [item("+1")]) == 1
            assert enqueue(second, run_id, [item("+2")]) == 1
            cancel = Background(lambda: set_status(canceller, run_id, "cancelled"))
            poll(lambda: blocked(conn, canceller.info.backend_pid), "the cancel to wait")
            assert blockers(conn, canceller.info.backend_pid) == [first.info.backend_pid]
        assert cancel.join() == "running"
    assert counts(conn, run_id)[-1] == 2
