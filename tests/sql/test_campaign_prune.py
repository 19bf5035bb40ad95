"""campaign_prune (not in API.md): retention of ended runs. It deletes the messages of
runs finished or cancelled before the cutoff, with their outcomes and open work, the run
that ended first first, about p_limit per call (open work in whole groups, so at most
p_limit + 14), and each run with its last message. Running and paused runs, and runs
that ended after the cutoff, are never touched; a run pruned over several calls shows
consistent progress; a claim held on a pruned run is stale; two pruners released
together delete each message once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from campaignkit import (
    GROUP_SIZE,
    TABLES,
    claim,
    complete,
    complete_all,
    complete_many,
    counts,
    create,
    enqueue_many,
    extend,
    fail,
    prune,
    release,
    set_status,
    skip_stale,
    snapshot,
    snooze,
)
from sqlkit import Conn, connections, fan_out, poll, scalar, server_clock

AGE = timedelta(milliseconds=300)
CUTOFF = AGE - timedelta(milliseconds=50)


def ended(conn: Conn, run_id: int, status: str = "finished") -> None:
    assert set_status(conn, run_id, status) == "running"


def until_older_than_age(conn: Conn) -> None:
    """Return once every run ended so far ended more than AGE ago, by the server clock."""
    last = scalar(conn, "SELECT max(status_changed_at) FROM pgcoord.campaign_runs")
    poll(lambda: server_clock(conn) > last + AGE, "the ended runs to age")


def rows_of(conn: Conn, run_ids: list[int]) -> dict[str, Any]:
    """What the tables hold of the runs `run_ids`."""
    state = snapshot(conn)
    return {
        table: [
            row
            for row in state[table]
            if (row[0] if table in ("campaign_runs", "campaign_enqueues") else row[1]) in run_ids
        ]
        for table in TABLES
    }


def runs(conn: Conn) -> list[int]:
    return [r for (r,) in conn.execute("SELECT id FROM pgcoord.campaign_runs ORDER BY id")]


def test_only_runs_ended_before_the_cutoff_are_pruned_the_first_ended_first(conn: Conn) -> None:
    first = create(conn, "first")  # finished: 3 sent, 2 left pending
    enqueue_many(conn, first, 5)
    assert complete_all(conn, claim(conn, limit=3, run_id=first)) == 3
    cancelled = create(conn, "cancelled")  # cancelled with 4 pending
    enqueue_many(conn, cancelled, 4)
    running, paused = create(conn, "running"), create(conn, "paused")
    enqueue_many(conn, running, 2)
    enqueue_many(conn, paused, 2)
    assert set_status(conn, paused, "paused") == "running"
    ended(conn, first)
    ended(conn, cancelled, "cancelled")
    until_older_than_age(conn)
    recent = create(conn, "recent")  # ended after the cutoff
    enqueue_many(conn, recent, 1)
    ended(conn, recent)
    kept = rows_of(conn, [running, paused, recent])

    assert prune(conn, CUTOFF, limit=5) == 5, "the run that ended first, all of it"
    assert runs(conn) == [cancelled, running, paused, recent]
    assert rows_of(conn, [first]) == rows_of(conn, [])
    assert counts(conn, cancelled) == (4, 0, 0, 0, 0, 4), "the next run is untouched"
    assert prune(conn, CUTOFF, limit=5) == 4
    assert prune(conn, CUTOFF, limit=5) == 0
    assert runs(conn) == [running, paused, recent]
    assert rows_of(conn, [first, cancelled]) == rows_of(conn, [])
    assert rows_of(conn, [running, paused, recent]) == kept


def test_a_run_pruned_over_several_calls_shows_consistent_progress(conn: Conn) -> None:
    run_id = create(conn, max_retries=0)
    ids = enqueue_many(conn, run_id, 30)
    held = claim(conn, limit=10, run_id=run_id)
    assert [c.message_id for c in held] == ids[:10]
    assert complete_all(conn, held[:9]) == 9
    result = fail(conn, held[9].message_id, held[9].claim_token, "gone")
    assert result is not None and result.status == "failed"
    assert skip_stale(conn, timedelta(0)) == 20
    ended(conn, run_id)
    until_older_than_age(conn)
    assert counts(conn, run_id) == (0, 0, 9, 1, 20, 30)

    assert prune(conn, CUTOFF, limit=15) == 15, "the first 15 by id: 9 sent, 1 failed, 5 skipped"
    assert counts(conn, run_id) == (0, 0, 0, 0, 15, 15)
    assert prune(conn, CUTOFF, limit=14) == 14
    assert counts(conn, run_id) == (0, 0, 0, 0, 1, 1)
    assert prune(conn, CUTOFF, limit=14) == 1
    assert run_id not in runs(conn)
    assert rows_of(conn, [run_id]) == rows_of(conn, [])


def test_open_work_goes_in_whole_groups_each_started_within_the_limit(conn: Conn) -> None:
    run_id = create(conn)
    enqueue_many(conn, run_id, 40)  # one instant: groups of 15, 15 and 10
    assert scalar(conn, "SELECT count(*) FROM pgcoord.campaign_queue") == 3
    ended(conn, run_id, "cancelled")
    until_older_than_age(conn)
    assert prune(conn, CUTOFF, limit=16) == 2 * GROUP_SIZE, "the second group started at 15"
    assert counts(conn, run_id) == (10, 0, 0, 0, 0, 10)
    assert prune(conn, CUTOFF, limit=1) == 10, "at most limit + 14"
    assert run_id not in runs(conn)


def test_messages_of_runs_enqueued_in_turns_are_found_and_no_others(conn: Conn) -> None:
    pruned, other = create(conn, "pruned"), create(conn, "other")
    for _ in range(3):
        enqueue_many(conn, pruned, 2)
        enqueue_many(conn, other, 2)
    ended(conn, pruned)
    ended(conn, other)
    kept = rows_of(conn, [other])
    until_older_than_age(conn)
    assert prune(conn, CUTOFF, limit=6) == 6
    assert runs(conn) == [other]
    assert rows_of(conn, [other]) == kept
    assert prune(conn, CUTOFF) == 6
    assert runs(conn) == []


def test_an_ended_run_without_messages_is_deleted_and_counts_nothing(conn: Conn) -> None:
    run_id = create(conn)
    ended(conn, run_id, "cancelled")
    until_older_than_age(conn)
    assert prune(conn, CUTOFF) == 0
    assert runs(conn) == []


def test_a_claim_held_on_a_pruned_run_is_stale(conn: Conn) -> None:
    run_id = create(conn)
    enqueue_many(conn, run_id, 4)
    [a, b, c, d] = claim(conn, limit=4)
    ended(conn, run_id, "cancelled")
    until_older_than_age(conn)
    assert prune(conn, CUTOFF) == 4
    assert complete(conn, a.message_id, a.claim_token) is False
    assert complete_many(conn, [b.message_id], [b.claim_token]) == 0
    assert fail(conn, c.message_id, c.claim_token, "late") is None
    assert snooze(conn, d.message_id, d.claim_token) is False
    assert extend(conn, d.message_id, d.claim_token) is None
    assert release(conn, d.message_id, d.claim_token) is False
    assert rows_of(conn, [run_id]) == rows_of(conn, [])


def test_two_pruners_and_a_late_completion_released_together(db_url: str, conn: Conn) -> None:
    """Round after round: ended runs, one of them cancelled while a worker holds its
    messages; two pruners and the worker's completion start at once. Each message is
    deleted once (the pruners' counts add up), the completion lands whole or not at all,
    and nothing of the ended runs is left."""
    for round_no in range(8):
        ids = []
        for i in range(4):
            run_id = create(conn, f"r{round_no}-{i}")
            ids.append(run_id)
            enqueue_many(conn, run_id, 20)
        held = claim(conn, limit=GROUP_SIZE, run_id=ids[0])
        for run_id in ids:
            ended(conn, run_id, "cancelled")
        until_older_than_age(conn)

        def act(i: int, c: Conn, held: list[Any] = held) -> int:
            if i == 2:
                return complete_all(c, held)
            return sum(iter(lambda: prune(c, CUTOFF, limit=25), 0))

        with connections(db_url, 3) as conns:
            first, second, completed = fan_out(conns, act)
        assert completed in (0, GROUP_SIZE), f"round {round_no}: the completion in part"
        assert first + second == 80, f"round {round_no}: each message deleted once"
        assert runs(conn) == [], f"round {round_no}"
        assert rows_of(conn, ids) == rows_of(conn, [])
