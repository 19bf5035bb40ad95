"""lock_acquire with p_wait: granted promptly after a release, false after p_wait, and
never holding a row lock that the holder would wait on."""

from __future__ import annotations

import queue
import time
from datetime import timedelta

import psycopg
import pytest
from sqlkit import (
    Background,
    Conn,
    acquire,
    connect,
    connections,
    extend,
    release,
    scalar,
    status,
    until_waiting,
)

from pgcoord.types import Lock

PROMPT = 0.5  # seconds: "at once", on a busy machine


def test_a_waiter_gets_the_lock_promptly_after_the_release(db_url: str, conn: Conn) -> None:
    held = acquire(conn, "k", "holder")
    with connect(db_url) as waiter_conn:
        waiter = Background(lambda: acquire(waiter_conn, "k", "waiter", wait=timedelta(seconds=10)))
        # long enough that a waiter whose retries space out would be caught napping
        until_waiting(conn, waiter_conn.info.backend_pid, for_at_least=timedelta(seconds=1.2))
        assert scalar(conn, "SELECT pg_blocking_pids(%s)", waiter_conn.info.backend_pid) == []

        row = conn.execute(
            "SELECT pgcoord.lock_release(p_key => 'k', p_owner => 'holder'), clock_timestamp()"
        ).fetchone()
        released_at = time.monotonic()
        assert row is not None and row[0] is True
        granted = waiter.join()

    assert granted.acquired and granted.owner == "waiter" and not granted.took_over
    assert granted.token > held.token
    assert waiter.finished_at is not None
    assert waiter.finished_at - released_at < PROMPT
    now = status(conn, "k")
    assert now is not None and now.token == granted.token
    server_delay = (now.acquired_at - row[1]).total_seconds()
    # a try that began while the release's DELETE was uncommitted waits for it, then wins
    # with a clock read a moment before the release's own: hence the small negative slack
    assert -0.05 < server_delay < PROMPT, f"granted {server_delay:.3f} s after the release"


def test_a_waiter_takes_over_a_lease_that_expires_while_it_waits(conn: Conn) -> None:
    held = acquire(conn, "k", "holder", ttl=timedelta(milliseconds=300))
    granted = acquire(conn, "k", "waiter", wait=timedelta(seconds=10))

    assert granted.acquired and granted.took_over and granted.token > held.token
    now = status(conn, "k")
    assert now is not None
    delay = (now.acquired_at - held.expires_at).total_seconds()
    assert 0 <= delay < PROMPT, f"taken over {delay:.3f} s after the expiry"


@pytest.mark.parametrize("wait", [timedelta(milliseconds=300), timedelta(seconds=1)])
def test_a_waiter_on_a_key_that_never_frees_answers_false_after_p_wait(
    conn: Conn, wait: timedelta
) -> None:
    held = acquire(conn, "k", "holder")
    started = time.monotonic()
    refused = acquire(conn, "k", "waiter", wait=wait)
    elapsed = time.monotonic() - started

    assert not refused.acquired and not refused.took_over
    assert (refused.owner, refused.token, refused.expires_at) == (
        "holder",
        held.token,
        held.expires_at,
    )
    assert wait.total_seconds() <= elapsed < wait.total_seconds() + PROMPT


def test_without_p_wait_a_refusal_is_immediate(conn: Conn) -> None:
    acquire(conn, "k", "holder")
    started = time.monotonic()
    assert not acquire(conn, "k", "other").acquired
    assert time.monotonic() - started < PROMPT


def test_the_holder_never_waits_on_a_waiter(db_url: str, conn: Conn) -> None:
    """A waiting acquire holds no row lock: the holder's extend and release go through."""
    with connections(db_url, 2) as (holder_conn, waiter_conn):
        holder_conn.execute("SET statement_timeout = '1s'")  # a block fails fast, not hangs
        held = acquire(holder_conn, "k", "holder", ttl=timedelta(seconds=30))
        waiter = Background(lambda: acquire(waiter_conn, "k", "waiter", wait=timedelta(seconds=10)))
        until_waiting(conn, waiter_conn.info.backend_pid)

        for _ in range(20):  # many heartbeats, landing between and during the waiter's tries
            started = time.monotonic()
            try:
                new_expiry = extend(holder_conn, "k", "holder", ttl=timedelta(seconds=30))
                renewed = acquire(holder_conn, "k", "holder", ttl=timedelta(seconds=30))
            except psycopg.errors.QueryCanceled:
                pytest.fail("the holder's extend or renewal waited on the waiter")
            assert new_expiry is not None
            assert renewed.acquired and renewed.token == held.token
            assert time.monotonic() - started < PROMPT
            time.sleep(0.01)  # spread the heartbeats over the waiter's retry cycle
        assert not waiter.done

        started = time.monotonic()
        try:
            assert release(holder_conn, "k", "holder") is True
        except psycopg.errors.QueryCanceled:
            pytest.fail("the holder's release waited on the waiter")
        assert time.monotonic() - started < PROMPT
        granted = waiter.join()
    assert granted.acquired and granted.owner == "waiter"


def test_waiters_get_the_key_one_at_a_time(db_url: str, conn: Conn) -> None:
    """Eight waiters on one key: each release hands it to exactly one of them."""
    waiters = 8
    results: queue.Queue[Lock] = queue.Queue()
    acquire(conn, "k", "holder")
    with connections(db_url, waiters) as conns:
        threads = [
            Background(
                lambda i=i, c=c: results.put(
                    acquire(c, "k", f"waiter-{i}", wait=timedelta(seconds=20))
                )
            )
            for i, c in enumerate(conns)
        ]
        for c in conns:
            until_waiting(conn, c.info.backend_pid)

        owner, tokens = "holder", []
        for _ in range(waiters):
            assert results.empty(), "nobody gets a held key"
            assert release(conn, "k", owner)
            granted = results.get(timeout=5)
            assert granted.acquired and not granted.took_over
            now = status(conn, "k")
            assert now is not None and (now.owner, now.token) == (granted.owner, granted.token)
            owner = granted.owner
            tokens.append(granted.token)
        for thread in threads:
            thread.join()
        assert results.empty()
    assert sorted(tokens) == tokens and len(set(tokens)) == waiters
    assert release(conn, "k", owner)


@pytest.mark.parametrize("how", ["new key", "freed key", "takeover"])
@pytest.mark.parametrize("wait", [timedelta(0), timedelta(milliseconds=300)])
def test_a_key_written_by_a_transaction_not_yet_committed_bounds_the_wait(
    db_url: str, conn: Conn, how: str, wait: timedelta
) -> None:
    """A caller's own transaction that acquires a key (new, freed, or expired and taken
    over) and stays open: another acquire of that key waits on its row no longer than
    p_wait plus a try's 1 s, and answers not granted, its holder not known yet
    (owner, token and expires_at NULL). Once that transaction commits, the holder is
    answered as always."""
    if how == "takeover":
        acquire(conn, "k", "old", ttl=timedelta(milliseconds=1))
        conn.execute("SELECT pg_sleep(0.01)")  # its lease runs out, on the server's clock
    elif how == "freed key":
        acquire(conn, "k", "old")
        assert release(conn, "k", "old")
    with connections(db_url, 2) as (holder_conn, other_conn):
        other_conn.execute("SET statement_timeout = '5s'")  # a wait unbounded fails, not hangs
        with holder_conn.transaction():
            granted = acquire(holder_conn, "k", "holder")
            assert granted.acquired
            started = time.monotonic()
            try:
                answer = acquire(other_conn, "k", "other", wait=wait)
            except psycopg.errors.QueryCanceled:
                pytest.fail("the acquire waited on the open transaction")
            elapsed = time.monotonic() - started
            assert answer == Lock(False, None, None, None, False)  # type: ignore[arg-type]
            assert wait.total_seconds() <= elapsed < wait.total_seconds() + 1 + PROMPT
        answer = acquire(other_conn, "k", "other", wait=wait)
        assert not answer.acquired
        assert (answer.owner, answer.token) == ("holder", granted.token)


def test_the_session_may_let_a_try_wait_longer_on_a_writer_and_keeps_its_own_timeout(
    db_url: str, conn: Conn
) -> None:
    """pgcoord.lock_try_timeout replaces a try's 1 s; the caller's own lock_timeout is
    as it was once the call has ended (the function's setting is the call's alone)."""
    with connections(db_url, 2) as (holder_conn, other_conn):
        other_conn.execute("SET lock_timeout = '7s'")
        other_conn.execute("SET pgcoord.lock_try_timeout = '400ms'")
        with holder_conn.transaction():
            assert acquire(holder_conn, "k", "holder").acquired
            started = time.monotonic()
            answer = acquire(other_conn, "k", "other")
            elapsed = time.monotonic() - started
        assert not answer.acquired and answer.owner is None
        assert 0.4 <= elapsed < 0.4 + PROMPT
        assert scalar(other_conn, "SHOW lock_timeout") == "7s"
