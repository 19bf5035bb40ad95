"""The token bucket of one key, call by call: it starts full, refills at the call's rate
up to the call's burst and never above, answers the exact wait for the missing tokens,
and a refusal spends and writes nothing."""

from __future__ import annotations

from datetime import timedelta

from inboxkit import until_server_time
from ratekit import (
    EPSILON,
    GRANTED,
    MICROSECOND,
    acquire,
    snapshot,
    status,
    stored,
    timed_acquire,
)
from sqlkit import Conn, scalar


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def test_a_new_key_starts_full_and_a_grant_spends_its_cost(conn: Conn) -> None:
    # 1 token in 1000 s: no refill worth a grant within the test
    assert [acquire(conn, "k", 0.001, 5, cost) == GRANTED for cost in (2, 3, 1)] == [
        True,
        True,
        False,
    ]
    bucket = stored(conn, "k")
    assert bucket is not None
    assert 0 <= bucket["tokens"] < 0.01, "5 spent, and a few milliseconds of refill"
    assert (bucket["per_second"], bucket["burst"], bucket["paused_until"]) == (0.001, 5, None)


def test_the_wait_is_exact_for_the_tokens_missing(conn: Conn) -> None:
    """With k tokens short of the cost, the wait is k / rate, counted from the call's own
    clock reading: the server clock before and after the call bound it."""
    rate, burst = 2.0, 5
    assert acquire(conn, "k", rate, burst, 5) == GRANTED
    bucket = stored(conn, "k")
    assert bucket is not None and bucket["tokens"] == 0
    emptied_at = bucket["tokens_at"]

    for cost in (1, 3, 5):
        # cost tokens are there at emptied_at + cost / rate, rounded up to the microsecond
        ready_at = emptied_at + seconds(cost / rate)
        timed = timed_acquire(conn, "k", rate, burst, cost)
        assert not timed.granted
        assert timed.before + timed.wait <= ready_at + MICROSECOND
        assert timed.after + timed.wait >= ready_at
    assert stored(conn, "k") == bucket, "the refusals changed the bucket"

    # asked again at the answered time: granted
    timed = timed_acquire(conn, "k", rate, burst, 1)
    until_server_time(conn, timed.after + timed.wait)
    assert acquire(conn, "k", rate, burst, 1) == GRANTED


def test_a_partly_refilled_bucket_waits_only_for_the_rest(conn: Conn) -> None:
    rate, burst = 4.0, 8
    assert acquire(conn, "k", rate, burst, 8) == GRANTED
    bucket = stored(conn, "k")
    assert bucket is not None
    # about 1.5 tokens back
    until_server_time(conn, bucket["tokens_at"] + seconds(0.375))
    timed = timed_acquire(conn, "k", rate, burst, 6)
    assert not timed.granted
    ready_at = bucket["tokens_at"] + seconds(6 / rate)
    assert timed.before + timed.wait <= ready_at + MICROSECOND
    assert timed.after + timed.wait >= ready_at
    assert timed.wait <= seconds((6 - 1.5) / rate) + MICROSECOND


def test_the_bucket_never_refills_above_its_burst(conn: Conn) -> None:
    rate, burst = 20.0, 3
    assert acquire(conn, "k", rate, burst, 3) == GRANTED
    bucket = stored(conn, "k")
    assert bucket is not None
    # idle for ten bursts' worth of refill
    until_server_time(conn, bucket["tokens_at"] + seconds(10 * burst / rate))

    assert acquire(conn, "k", rate, burst, 1) == GRANTED
    bucket = stored(conn, "k")
    assert bucket is not None
    assert bucket["tokens"] == burst - 1, "one token spent from a bucket refilled to its burst"
    view = status(conn, "k")
    assert view is not None and view["tokens"] <= burst

    # idle again, then many calls at once: at most the burst, plus what refills meanwhile
    until_server_time(conn, bucket["tokens_at"] + seconds(10 * burst / rate))
    row = conn.execute(
        "SELECT clock_timestamp(),"
        " (SELECT count(*) FROM generate_series(1, 20)"
        "  WHERE pgcoord.rate_acquire(p_key => 'k', p_per_second => %s, p_burst => %s)"
        "  = '0 seconds'),"
        " clock_timestamp()",
        (rate, burst),
    ).fetchone()
    assert row is not None
    started, granted, finished = row
    assert burst <= granted <= burst + rate * (finished - started).total_seconds() + EPSILON


def test_the_rate_and_burst_are_the_calls_own(conn: Conn) -> None:
    assert acquire(conn, "k", 0.001, 10, 4) == GRANTED  # 6 left
    # a caller with a smaller burst finds the bucket capped to it
    assert acquire(conn, "k", 0.001, 3, 3) == GRANTED
    bucket = stored(conn, "k")
    assert bucket is not None
    assert 0 <= bucket["tokens"] < 0.01, "capped to 3, and 3 spent"
    assert (bucket["per_second"], bucket["burst"]) == (0.001, 3)
    # a faster rate refills faster from the tokens left
    timed = timed_acquire(conn, "k", 1000.0, 3, 2)
    assert timed.granted or timed.wait <= seconds(0.002) + MICROSECOND


def test_a_refusal_writes_nothing(conn: Conn) -> None:
    assert acquire(conn, "k", 0.01, 2, 2) == GRANTED
    before = snapshot(conn)
    conn.execute("BEGIN")
    try:
        assert acquire(conn, "k", 0.01, 2, 1) > GRANTED
        assert acquire(conn, "k", 0.01, 2, 2) > GRANTED
        # no transaction id: no row version, no row lock, nothing for the WAL
        assert scalar(conn, "SELECT pg_current_xact_id_if_assigned()") is None
    finally:
        conn.execute("COMMIT")
    assert snapshot(conn) == before


def test_a_grant_is_a_heap_only_update(conn: Conn) -> None:
    """A hot key's grants change no indexed column, so every new row version stays out of
    the index (HOT), with room kept free on the table's pages."""
    assert scalar(
        conn, "SELECT reloptions FROM pg_class WHERE oid = 'pgcoord.rates'::regclass"
    ) == ["fillfactor=50"]
    assert acquire(conn, "k", 1000000, 1000000) == GRANTED
    counts = (
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables"
        " WHERE relid = 'pgcoord.rates'::regclass"
    )
    conn.execute("BEGIN")  # the counts are not flushed while the transaction is open
    try:
        before = conn.execute(counts).fetchone()
        conn.execute(
            "SELECT pgcoord.rate_acquire('k', 1000000, 1000000) FROM generate_series(1, 20)"
        )
        after = conn.execute(counts).fetchone()
    finally:
        conn.execute("COMMIT")
    assert before is not None and after is not None
    assert (after[0] - before[0], after[1] - before[1]) == (20, 20)
