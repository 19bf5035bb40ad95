"""campaign_stats and the snooze counter: each message counts its own snoozes (a snooze in
a claimed group of 15 counts for that message only; a release or a fail is no snooze),
keeps them in its outcome however it ends, and campaign_message_status shows them; a
run's retries and snoozes sum its open and finished messages; the last minute's sends
and the handler times of the last 1000 sent come from the stored metrics."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from campaignkit import (
    GROUP_SIZE,
    SHORT,
    claim,
    claim_one,
    complete,
    complete_all,
    create,
    enqueue_many,
    fail,
    release,
    skip_stale,
    snooze,
    stats,
    stats_of,
    status_of,
    statuses,
    until_lease_ran_out,
)
from sqlkit import Conn, scalar

from pgcoord.types import CampaignStats

NO_BACKOFF = [timedelta(0)]


def outcome(conn: Conn, message_id: int) -> tuple[str, int, int]:
    """status, attempts, snoozes of a finished message, as stored."""
    row = conn.execute(
        "SELECT status, attempts, snoozes FROM pgcoord.campaign_outcomes WHERE message_id = %s",
        (message_id,),
    ).fetchone()
    assert row is not None, f"message {message_id} has no outcome"
    return row


def complete_with(conn: Conn, claimed: list[Any], metrics: list[str]) -> int:
    """complete_many with metrics given as JSON texts (numbers Python cannot hold too)."""
    return int(
        scalar(
            conn,
            "SELECT pgcoord.campaign_complete_many(p_message_ids => %s, p_claim_tokens => %s,"
            " p_metrics => %s::jsonb[])",
            [c.message_id for c in claimed],
            [c.claim_token for c in claimed],
            metrics,
        )
    )


def test_a_snooze_counts_for_its_message_only_and_stays_with_it(conn: Conn) -> None:
    run_id = create(conn, retry_backoff=NO_BACKOFF)
    ids = enqueue_many(conn, run_id, GROUP_SIZE)
    group = claim(conn, limit=GROUP_SIZE)
    assert len({c.claim_token for c in group}) == 1, "one group, one claim"
    snoozed, released, failed, *rest = group
    assert snooze(conn, snoozed.message_id, snoozed.claim_token)
    assert release(conn, released.message_id, released.claim_token)
    assert fail(conn, failed.message_id, failed.claim_token) is not None
    assert [s.snoozes for s in statuses(conn, ids)] == [1] + [0] * (GROUP_SIZE - 1)
    assert stats_of(conn, run_id) == CampaignStats(run_id, 0, 1, 1, None, None)

    assert complete_all(conn, rest) == len(rest)
    again = {c.message_id: c for c in claim(conn, limit=GROUP_SIZE)}
    assert set(again) == {snoozed.message_id, released.message_id, failed.message_id}
    assert snooze(conn, snoozed.message_id, again[snoozed.message_id].claim_token)
    assert complete(conn, released.message_id, again[released.message_id].claim_token)
    assert snooze(conn, failed.message_id, again[failed.message_id].claim_token)
    last = claim_one(conn)
    assert (last.message_id, last.attempt) == (snoozed.message_id, 1), "snoozes are no tries"
    assert complete(conn, last.message_id, last.claim_token)

    assert outcome(conn, snoozed.message_id) == ("sent", 1, 2)
    assert outcome(conn, released.message_id) == ("sent", 1, 0)
    shown = {s.message_id: (s.status, s.attempt, s.snoozes) for s in statuses(conn, ids)}
    assert shown[snoozed.message_id] == ("sent", 1, 2)
    assert shown[failed.message_id] == ("pending", 1, 1)
    assert shown[released.message_id] == ("sent", 1, 0)
    assert {shown[c.message_id] for c in rest} == {("sent", 1, 0)}
    # retries: the open message's failed try; snoozes: 2 finished, 1 open
    assert stats_of(conn, run_id) == CampaignStats(run_id, GROUP_SIZE - 1, 1, 3, None, None)


def one_message_run(conn: Conn, max_retries: int) -> tuple[int, int]:
    """A run of one message, claimed and snoozed once; its id and the message's."""
    run_id = create(conn, max_retries=max_retries, retry_backoff=NO_BACKOFF)
    [message_id] = enqueue_many(conn, run_id, 1)
    claimed = claim_one(conn, run_id=run_id)
    assert snooze(conn, message_id, claimed.claim_token)
    return run_id, message_id


def test_every_way_to_end_keeps_the_snoozes_and_counts_the_failed_tries(conn: Conn) -> None:
    # failed for good after its one retry
    failed_run, failed = one_message_run(conn, max_retries=1)
    for status in ("pending", "failed"):
        result = fail(conn, failed, claim_one(conn, run_id=failed_run).claim_token)
        assert result is not None and result.status == status
    # its leases lost twice: the second lost lease is its last try
    lost_run, lost = one_message_run(conn, max_retries=1)
    for attempt in (1, 2):
        held = claim_one(conn, lease=SHORT, run_id=lost_run)
        assert held.attempt == attempt
        until_lease_ran_out(conn, lost)
    assert claim(conn, run_id=lost_run) == []
    # skipped as stale, after one failed try
    skipped_run, skipped = one_message_run(conn, max_retries=3)
    assert fail(conn, skipped, claim_one(conn, run_id=skipped_run).claim_token) is not None
    # sent after a snooze and two failed tries
    sent_run, sent = one_message_run(conn, max_retries=3)
    for _ in range(2):
        assert fail(conn, sent, claim_one(conn, run_id=sent_run).claim_token) is not None
    assert complete(conn, sent, claim_one(conn, run_id=sent_run).claim_token)
    assert skip_stale(conn, timedelta(0)) == 1

    assert outcome(conn, failed) == ("failed", 2, 1)
    assert outcome(conn, lost) == ("failed", 2, 1)
    assert status_of(conn, lost).last_error == "lease expired"
    assert outcome(conn, skipped) == ("skipped", 1, 1)
    assert outcome(conn, sent) == ("sent", 3, 1)
    assert [(s.run_id, s.retries, s.snoozes) for s in stats(conn)] == [
        (failed_run, 2, 1),
        (lost_run, 2, 1),
        (skipped_run, 1, 1),
        (sent_run, 2, 1),
    ]


def test_the_open_messages_count_by_their_groups_size(conn: Conn) -> None:
    """A group's failed tries count once per message in it (15 messages that failed
    together as an orphan group are 15 retries)."""
    run_id = create(conn, retry_backoff=NO_BACKOFF)
    enqueue_many(conn, run_id, GROUP_SIZE)
    [first, *_] = claim(conn, limit=GROUP_SIZE, lease=SHORT)
    until_lease_ran_out(conn, first.message_id)
    again = claim(conn, limit=GROUP_SIZE)
    assert [c.attempt for c in again] == [2] * GROUP_SIZE
    assert stats_of(conn, run_id).retries == GROUP_SIZE  # the lost lease, counted at the claim


def test_the_last_minute_and_the_handler_times(conn: Conn) -> None:
    run_id = create(conn)
    enqueue_many(conn, run_id, 100)
    claimed = claim(conn, limit=100)
    metrics = [f'{{"handler_ms": {i + 1}, "tokens": 3}}' for i in range(100)]
    assert complete_with(conn, claimed, metrics) == 100
    assert stats_of(conn, run_id) == CampaignStats(run_id, 100, 0, 0, 50.5, pytest.approx(95.05))

    # 40 of them sent over a minute ago: not in the last minute, still among the last 1000
    conn.execute(
        "UPDATE pgcoord.campaign_outcomes SET finished_at = finished_at - interval '61 seconds'"
        " WHERE message_id = any(%s)",
        ([c.message_id for c in claimed[:40]],),
    )
    assert stats_of(conn, run_id) == CampaignStats(run_id, 60, 0, 0, 50.5, pytest.approx(95.05))


def test_handler_times_that_are_no_durations_are_left_out(conn: Conn) -> None:
    run_id = create(conn)
    enqueue_many(conn, run_id, 8)
    metrics = [
        '{"handler_ms": "fast"}',
        '{"handler_ms": -1}',
        '{"handler_ms": 1e13}',
        '{"handler_ms": 1e-400}',  # 0 ms, as a double precision has it
        '{"handler_ms": null}',
        "{}",
        '{"handler_ms": 7}',
        '{"handler_ms": 9}',
    ]
    assert complete_with(conn, claim(conn, limit=8), metrics) == 8
    row = stats_of(conn, run_id)
    assert (row.handler_p50_ms, row.handler_p95_ms) == (7.0, pytest.approx(8.8))


def test_the_handler_times_are_those_of_the_last_1000_sent(conn: Conn) -> None:
    run_id = create(conn)
    enqueue_many(conn, run_id, 1100)
    slow = claim(conn, limit=100)
    assert complete_with(conn, slow, ['{"handler_ms": 1e9}'] * 100) == 100
    # finished a moment later on the server clock: the last 1000 are these
    fast = claim(conn, limit=1000)
    assert complete_with(conn, fast, ['{"handler_ms": 10}'] * 1000) == 1000
    row = stats_of(conn, run_id)
    assert (row.sent_last_minute, row.handler_p50_ms, row.handler_p95_ms) == (1100, 10, 10)


def test_every_run_by_id_and_one_run(conn: Conn) -> None:
    empty = create(conn, "empty")
    waiting = create(conn, "waiting")
    enqueue_many(conn, waiting, 3)
    assert stats(conn) == [
        CampaignStats(empty, 0, 0, 0, None, None),
        CampaignStats(waiting, 0, 0, 0, None, None),
    ]
    assert stats(conn, waiting) == [CampaignStats(waiting, 0, 0, 0, None, None)]
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="p_run_id"):
        stats(conn, waiting + 1000)
