"""Exact interleavings of rate_acquire: a grant not yet committed holds its key's row.
A caller that may be granted waits for it and then decides on what was committed; a
caller that is refused anyway, and a caller of another key, never wait."""

from __future__ import annotations

from datetime import timedelta

import pytest
from ratekit import GRANTED, MICROSECOND, acquire, snapshot, stored, timed_acquire
from sqlkit import Background, Conn, connect, poll, scalar

RATE, BURST = 0.5, 3  # a token every 2 s: the test's own pace adds nothing worth a grant


def blocked_by(observer: Conn, pid: int) -> list[int]:
    value = scalar(observer, "SELECT pg_blocking_pids(%s)", pid)
    assert isinstance(value, list)
    return value


@pytest.mark.parametrize("outcome", ["COMMIT", "ROLLBACK"])
def test_a_possible_grant_waits_for_the_uncommitted_one(db_url: str, outcome: str) -> None:
    with connect(db_url) as holder, connect(db_url) as waiter, connect(db_url) as observer:
        assert acquire(observer, "k", RATE, BURST, 1) == GRANTED  # 2 left
        first = stored(observer, "k")
        assert first is not None and first["tokens"] == 2
        holder.execute("BEGIN")
        assert acquire(holder, "k", RATE, BURST, 2) == GRANTED  # 0 left, not committed

        # the waiter still sees 2 tokens: it may be granted, so it waits for the holder
        waiter_pid = waiter.info.backend_pid
        call = Background(lambda: timed_acquire(waiter, "k", RATE, BURST, 2))
        poll(
            lambda: blocked_by(observer, waiter_pid) == [holder.info.backend_pid],
            "the waiter to wait for the holder's row lock",
        )
        assert not call.done
        holder.execute(outcome)
        timed = call.join()

        bucket = stored(observer, "k")
        assert bucket is not None
        if outcome == "ROLLBACK":
            # granted from the 2 tokens as committed (and what refilled since)
            assert timed.granted
            refill = RATE * (timed.after - first["tokens_at"]).total_seconds()
            assert 0 <= bucket["tokens"] <= refill
        else:
            # refused on the committed bucket, with the exact wait for the tokens missing
            assert not timed.granted
            ready_at = bucket["tokens_at"] + timedelta(seconds=(2 - bucket["tokens"]) / RATE)
            assert timed.before + timed.wait <= ready_at + MICROSECOND
            assert timed.after + timed.wait >= ready_at


def test_a_refusal_and_another_key_never_wait(db_url: str) -> None:
    with connect(db_url) as holder, connect(db_url) as other:
        assert acquire(other, "k", RATE, BURST, 2) == GRANTED  # 1 left
        assert acquire(other, "other", RATE, BURST, 1) == GRANTED
        holder.execute("BEGIN")
        assert acquire(holder, "k", RATE, BURST, 1) == GRANTED  # 0 left, row held
        before = snapshot(other)

        # 1 token as committed: a cost of 2 is refused without touching the held row
        # (the statement timeout fails the test if it waits)
        other.execute("SET statement_timeout = '2s'")
        assert acquire(other, "k", RATE, BURST, 2) > GRANTED
        assert acquire(other, "other", RATE, BURST, 1) == GRANTED
        assert [row for row in snapshot(other) if row[0] == "k"] == [
            row for row in before if row[0] == "k"
        ]
        holder.execute("COMMIT")
