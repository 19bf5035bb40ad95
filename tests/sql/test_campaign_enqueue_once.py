"""campaign_enqueue_once (not in API.md): an enqueue under a key, safe to call again when
the answer of a call was lost. A key the run already has enqueues nothing and answers the
first call's count; concurrent calls with one key enqueue once; a call that rolled back
leaves no key; keys are per run and go with the run when it is pruned."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from campaignkit import TABLES, counts, create, enqueue_once, item, prune, set_status, snapshot
from sqlkit import Background, Conn, connections, fan_out, poll, scalar

ROUNDS = 30
CALLERS = 8


def items(n: int, prefix: str = "r") -> list[dict[str, object]]:
    return [item(f"{prefix}{i}", {"n": i}) for i in range(n)]


def test_a_repeat_enqueues_nothing_and_answers_the_first_count(conn: Conn) -> None:
    run_id = create(conn)
    assert enqueue_once(conn, run_id, "batch-1", items(20)) == (20, False)
    before = snapshot(conn)
    assert enqueue_once(conn, run_id, "batch-1", items(20)) == (20, True)
    # the key says the items are the same: a repeat's own items are not looked at
    assert enqueue_once(conn, run_id, "batch-1", items(3, "other")) == (20, True)
    assert snapshot(conn) == before
    assert counts(conn, run_id)[-1] == 20
    assert enqueue_once(conn, run_id, "batch-2", items(5)) == (5, False)
    assert counts(conn, run_id)[-1] == 25


def test_keys_are_per_run(conn: Conn) -> None:
    first, second = create(conn, "first"), create(conn, "second")
    assert enqueue_once(conn, first, "k", items(2)) == (2, False)
    assert enqueue_once(conn, second, "k", items(3)) == (3, False)
    assert counts(conn, first)[-1] == 2
    assert counts(conn, second)[-1] == 3


def test_a_call_that_failed_leaves_no_key_so_its_retry_enqueues(conn: Conn) -> None:
    run_id = create(conn)
    before = snapshot(conn)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"p_items\[1\]"):
        enqueue_once(conn, run_id, "k", [item("+1"), {"recipient": ""}])
    assert snapshot(conn) == before
    # a transaction that rolled back after the call: no key either (the sequences moved
    # on, as sequences do; every table is as it was)
    with pytest.raises(RuntimeError), conn.transaction():
        assert enqueue_once(conn, run_id, "k", items(4)) == (4, False)
        raise RuntimeError("the caller's transaction fails after the enqueue")
    after = snapshot(conn)
    assert {t: after[t] for t in TABLES} == {t: before[t] for t in TABLES}
    assert enqueue_once(conn, run_id, "k", items(4)) == (4, False)


def test_a_repeat_into_a_run_that_ended_since_answers_the_first_call(conn: Conn) -> None:
    run_id = create(conn)
    assert enqueue_once(conn, run_id, "k", items(2)) == (2, False)
    assert set_status(conn, run_id, "cancelled") == "running"
    assert enqueue_once(conn, run_id, "k", items(2)) == (2, True)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"p_run_id: run .* cancelled"):
        enqueue_once(conn, run_id, "new", items(2))


def test_concurrent_calls_with_one_key_enqueue_once(db_url: str, conn: Conn) -> None:
    run_id = create(conn)
    with connections(db_url, CALLERS) as conns:
        for round_no in range(ROUNDS):
            key = f"round-{round_no}"
            n = 1 + round_no % 16  # a group of one, up to a group of 15 and one more
            answers = fan_out(
                conns, lambda i, c, key=key, n=n: enqueue_once(c, run_id, key, items(n))
            )
            assert sorted(answers) == [(n, False)] + [(n, True)] * (CALLERS - 1), round_no
            stored = scalar(
                conn,
                "SELECT count(*) FROM pgcoord.campaign_messages WHERE run_id = %s",
                run_id,
            )
            assert stored == sum(1 + r % 16 for r in range(round_no + 1)), round_no


def test_a_call_waits_for_one_in_flight_with_its_key_and_enqueues_if_that_rolls_back(
    db_url: str, conn: Conn
) -> None:
    run_id = create(conn)
    with connections(db_url, 2) as (first, second):
        for outcome in ("rollback", "commit"):
            key = f"in-flight-{outcome}"
            first.execute("BEGIN")
            assert enqueue_once(first, run_id, key, items(3)) == (3, False)
            pid = second.info.backend_pid
            waiting = Background(lambda k=key: enqueue_once(second, run_id, k, items(3)))
            poll(
                lambda p=pid: bool(scalar(conn, "SELECT cardinality(pg_blocking_pids(%s)) > 0", p)),
                "the second call to wait for the first",
            )
            assert not waiting.done
            first.execute(outcome.upper())
            duplicate = outcome == "commit"
            assert waiting.join() == (3, duplicate)
    assert counts(conn, run_id)[-1] == 6


def test_a_pruned_run_takes_its_keys_with_it(conn: Conn) -> None:
    run_id = create(conn)
    assert enqueue_once(conn, run_id, "k", items(2)) == (2, False)
    assert set_status(conn, run_id, "cancelled") == "running"
    keys = "SELECT count(*) FROM pgcoord.campaign_enqueue_keys WHERE run_id = %s"
    assert scalar(conn, keys, run_id) == 1

    def pruned() -> bool:
        prune(conn, timedelta(microseconds=1), 100)
        runs = "SELECT count(*) FROM pgcoord.campaign_runs WHERE id = %s"
        return scalar(conn, runs, run_id) == 0

    poll(pruned, "the ended run to be pruned")
    assert scalar(conn, keys, run_id) == 0
