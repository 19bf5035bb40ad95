"""A claim from one run holds the pending groups it takes whole as one row when they
agree on tries, snoozes and last error (groups of one, as an enqueue of one message per
call makes): it deletes them and inserts one held row, which its completion deletes, so
a message leaves a dead tuple and not two. Groups that differ, and groups taken while
several runs are running, are held apart; a message given back from a held row takes
its own scheduled_at again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from campaignkit import (
    SHORT,
    Claimed,
    claim,
    complete,
    complete_all,
    create,
    enqueue,
    enqueue_many,
    fail,
    item,
    release,
    skip_stale,
    snooze,
    status_of,
    until_lease_ran_out,
)
from sqlkit import Conn, server_clock

HOUR = timedelta(hours=1)


def queue_writes(conn: Conn) -> tuple[int, int, int]:
    """Rows of campaign_queue inserted, updated and deleted so far in this transaction."""
    row = conn.execute(
        "SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_xact_user_tables"
        " WHERE relid = 'pgcoord.campaign_queue'::regclass"
    ).fetchone()
    assert row is not None
    return (int(row[0]), int(row[1]), int(row[2]))


def writes_of(conn: Conn, call: Callable[[], object]) -> tuple[int, int, int]:
    """What `call` wrote to campaign_queue: rows inserted, updated, deleted."""
    with conn.transaction():
        before = queue_writes(conn)
        call()
        after = queue_writes(conn)
    inserted, updated, deleted = (a - b for a, b in zip(after, before, strict=True))
    return (inserted, updated, deleted)


def singles(conn: Conn, run_id: int, n: int, prefix: str = "s") -> list[int]:
    """n messages enqueued one per call: n groups of one."""
    return [m for i in range(n) for m in enqueue_many(conn, run_id, 1, prefix=f"{prefix}{i}-")]


def test_a_claim_of_groups_of_one_holds_them_as_one_row(conn: Conn) -> None:
    run_id = create(conn)
    ids = singles(conn, run_id, 15)
    claimed: list[Claimed] = []
    # inserted, updated, deleted: the 15 pending groups go, one held row comes
    assert writes_of(conn, lambda: claimed.extend(claim(conn, limit=15))) == (1, 0, 15)
    assert [c.message_id for c in claimed] == ids, "oldest first"
    assert len({c.claim_token for c in claimed}) == 1
    assert {c.attempt for c in claimed} == {1}
    held = conn.execute(
        "SELECT claimed_by, message_ids FROM pgcoord.campaign_queue WHERE run_id = %s", (run_id,)
    ).fetchall()
    assert held == [("w", ids)]
    # and its completion deletes that one row
    assert writes_of(conn, lambda: complete_all(conn, claimed)) == (0, 0, 1)
    assert {status_of(conn, m).status for m in ids} == {"sent"}


def test_one_group_taken_whole_is_held_in_place(conn: Conn) -> None:
    run_id = create(conn)
    enqueue_many(conn, run_id, 15)
    assert writes_of(conn, lambda: claim(conn, limit=15)) == (0, 1, 0)


def test_groups_that_differ_in_tries_snoozes_or_error_are_held_apart(conn: Conn) -> None:
    run_id = create(conn, retry_backoff=[timedelta(0)])
    [failed, snoozed, orphan, fresh] = singles(conn, run_id, 4)
    for message_id, give_back in (
        (failed, lambda c: fail(conn, failed, c.claim_token, "timeout")),
        (snoozed, lambda c: snooze(conn, snoozed, c.claim_token)),
    ):
        [taken] = claim(conn, limit=1)
        assert taken.message_id == message_id
        assert give_back(taken)
    [lost] = claim(conn, limit=1, lease=SHORT)
    assert lost.message_id == orphan
    until_lease_ran_out(conn, orphan)

    claimed = claim(conn, limit=4)
    assert sorted(c.message_id for c in claimed) == sorted([failed, snoozed, orphan, fresh])
    assert len({c.claim_token for c in claimed}) == 4
    attempts = {c.message_id: c.attempt for c in claimed}
    assert attempts == {failed: 2, snoozed: 1, orphan: 2, fresh: 1}
    assert complete_all(conn, claimed) == 4
    ended = {m: status_of(conn, m) for m in attempts}
    assert {m: (s.attempt, s.snoozes, s.last_error) for m, s in ended.items()} == {
        failed: (2, 0, "timeout"),
        snoozed: (1, 1, None),
        orphan: (2, 0, "lease expired"),
        fresh: (1, 0, None),
    }


def test_orphans_of_one_claim_are_taken_again_together(conn: Conn) -> None:
    run_id = create(conn)
    ids = singles(conn, run_id, 3)
    first = claim(conn, limit=3, lease=SHORT)
    until_lease_ran_out(conn, ids[0])
    again = claim(conn, "other", limit=3)
    assert [c.message_id for c in again] == ids
    assert {c.attempt for c in again} == {2}
    [token] = {c.claim_token for c in again}
    assert token > first[0].claim_token
    assert complete(conn, ids[0], first[0].claim_token) is False, "the lost claim is stale"
    assert complete_all(conn, again) == 3


def test_a_message_given_back_from_a_held_row_takes_its_own_scheduled_at(conn: Conn) -> None:
    """The held row's scheduled_at is the earliest of its messages'; skip_stale reads a
    pending group's, so a message given back must take its own again."""
    now = server_clock(conn)
    run_id = create(conn, retry_backoff=[timedelta(0)])
    for recipient, at in (("old", now - 2 * HOUR), ("new", now), ("newer", now)):
        enqueue(conn, run_id, [item(recipient, scheduled_at=at)])
    claimed = {c.recipient: c for c in claim(conn, limit=3)}
    assert len({c.claim_token for c in claimed.values()}) == 1
    # newer: given back from a row of three (a row of its own is inserted); new: the
    # last message of its row once old is sent (the row itself goes back)
    assert fail(conn, claimed["newer"].message_id, claimed["newer"].claim_token) is not None
    assert complete(conn, claimed["old"].message_id, claimed["old"].claim_token)
    assert release(conn, claimed["new"].message_id, claimed["new"].claim_token)

    assert skip_stale(conn, HOUR) == 0, "new and newer were scheduled now"
    assert skip_stale(conn, timedelta(0)) == 2
    assert {status_of(conn, claimed[r].message_id).status for r in ("new", "newer")} == {"skipped"}


def test_with_several_runs_running_each_group_is_held_in_place(conn: Conn) -> None:
    """Each group is then found by a search of its own, which must not find the groups
    taken before it: each is held at once, in place."""
    runs = [create(conn, "a"), create(conn, "b")]
    for n in range(2):
        for run_id in runs:
            enqueue(conn, run_id, [item(f"{run_id}-{n}")])
    claimed: list[Claimed] = []
    assert writes_of(conn, lambda: claimed.extend(claim(conn, limit=4))) == (0, 4, 0)
    assert len({c.claim_token for c in claimed}) == 4
    assert {c.run_id for c in claimed} == set(runs)
    assert complete_all(conn, claimed) == 4


def test_orphans_that_fail_for_good_go_first_and_the_due_groups_are_held_as_one_row(
    conn: Conn,
) -> None:
    """Orphans are taken before the due groups; those that fail for good give no
    message, and the claim goes on to the run's due groups: the first, and the two its
    cursor gives, held as one row."""
    now = server_clock(conn)
    run_id = create(conn, max_retries=0)
    orphans = singles(conn, run_id, 3, prefix="o")
    for message_id in orphans:
        [held] = claim(conn, limit=1, lease=SHORT)
        assert held.message_id == message_id
    until_lease_ran_out(conn, orphans[-1])
    [first] = enqueue_many(conn, run_id, 1, prefix="f", scheduled_at=now - HOUR)
    rest = singles(conn, run_id, 2, prefix="r")

    claimed = claim(conn, limit=3)
    assert [c.message_id for c in claimed] == [first, *rest]
    assert len({c.claim_token for c in claimed}) == 1, "one held row"
    assert {status_of(conn, m).status for m in orphans} == {"failed"}
    assert complete_all(conn, claimed) == 3
