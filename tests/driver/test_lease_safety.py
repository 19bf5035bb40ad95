"""A lease never claims more than it may have.

- The heartbeat has connections of its own: eight `lock(wait=...)` callers holding every
  connection of the client's pool (the default of 8) while they wait for the held key do
  not stop it, so the key is never taken over; and the holder's exit frees the key at
  once, though the callers still hold every pool connection.
- A lease whose heartbeat cannot get through (blocked on the server, or queued behind a
  pooler's busy server connections) reports itself lost by its own safe time, before the
  server's expiry lets another owner take the key; a renewal that arrives after that
  restores nothing.

Sync Client and AsyncClient both; and through PgBouncer in transaction mode.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from pgcoord import AsyncClient, Client, Lease, LeaseLost, LockNotAcquired
from pgcoord.lease import heartbeat_interval
from pgcoord.types import Lock

TTL = timedelta(seconds=3)  # heartbeat every second; the safe time is 2.7 s
WAITERS = 8  # the client's default pool size
WAIT = timedelta(seconds=30)  # the waiters' p_wait: longer than any test here

Outcome = tuple[Lease | LockNotAcquired, float]  # and the monotonic time it came


def poll(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def scalar(conn: psycopg.Connection[Any], query: Any, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def server_now(conn: psycopg.Connection[Any]) -> datetime:
    value: datetime = scalar(conn, "SELECT clock_timestamp()")
    return value


def waiting_in_acquire(observer: psycopg.Connection[Any]) -> int:
    """How many backends of the database are inside a waiting lock_acquire."""
    count: int = scalar(
        observer,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND state = 'active' AND wait_event = 'PgSleep' AND query LIKE %s",
        "%pgcoord.lock_acquire(%",
    )
    return count


def holder(observer: psycopg.Connection[Any], key: str) -> tuple[str, int] | None:
    row = observer.execute(
        "SELECT owner, token FROM pgcoord.lock_status WHERE key = %s", (key,)
    ).fetchone()
    return None if row is None else (row[0], row[1])


def held_for(
    observer: psycopg.Connection[Any], lease: Lease, seconds: float, waiters: list[Any]
) -> None:
    """Watch for `seconds` (server clock) that the lease stays ours and not lost, while
    every waiter is still waiting."""
    end = server_now(observer) + timedelta(seconds=seconds)
    while server_now(observer) < end:
        assert not lease.lost, "the heartbeat was starved"
        assert holder(observer, lease.key) == (lease.owner, lease.token)
        assert not any(w.done() for w in waiters), "a waiter got the key while it was held"
        time.sleep(0.05)
    assert lease.remaining > timedelta(0)


def assert_taken_in_turn(outcomes: list[Outcome], released_at: float) -> None:
    """Every waiter got the key after the holder's exit, each from the one before (none
    by taking over an expired lease), long before its own wait ran out."""
    leases = [lease for lease, _ in outcomes]
    assert all(isinstance(lease, Lease) for lease in leases), leases
    assert not any(lease.took_over for lease in leases if isinstance(lease, Lease))
    assert all(at - released_at < WAIT.total_seconds() / 2 for _, at in outcomes)


def test_eight_waiters_on_the_pool_do_not_starve_the_heartbeat(db_url: str) -> None:
    with (
        Client(db_url) as client,
        psycopg.connect(db_url, autocommit=True) as observer,
        ThreadPoolExecutor(WAITERS) as threads,
    ):
        start = threading.Barrier(WAITERS)

        def wait_for_it() -> Outcome:
            start.wait(10)
            with client.lock("k", wait=WAIT) as lease:
                return lease, time.monotonic()

        with client.lock("k", ttl=TTL) as lease:
            waiters = [threads.submit(wait_for_it) for _ in range(WAITERS)]
            poll(lambda: waiting_in_acquire(observer) == WAITERS, "8 waiters in lock_acquire")
            assert client.pool.get_stats()["pool_available"] == 0
            held_for(observer, lease, 2 * TTL.total_seconds(), waiters)
            released_at = time.monotonic()
        assert lease.released is True and not lease.lost
        assert_taken_in_turn([w.result(timeout=20) for w in waiters], released_at)


def test_eight_waiters_on_the_pool_do_not_starve_the_async_heartbeat(db_url: str) -> None:
    async def main() -> None:
        async with AsyncClient(db_url) as client:
            start = asyncio.Barrier(WAITERS)

            async def wait_for_it() -> Outcome:
                await start.wait()
                async with client.lock("k", wait=WAIT) as lease:
                    return lease, time.monotonic()

            async with client.lock("k", ttl=TTL) as lease:
                waiters = [asyncio.create_task(wait_for_it()) for _ in range(WAITERS)]
                with psycopg.connect(db_url, autocommit=True) as observer:
                    await asyncio.to_thread(
                        poll, lambda: waiting_in_acquire(observer) == WAITERS, "8 waiters"
                    )
                    assert client.pool.get_stats()["pool_available"] == 0
                    await asyncio.to_thread(
                        held_for, observer, lease, 2 * TTL.total_seconds(), waiters
                    )
                released_at = time.monotonic()
            assert lease.released is True and not lease.lost
            outcomes = await asyncio.wait_for(asyncio.gather(*waiters), 20)
            assert_taken_in_turn(outcomes, released_at)

    asyncio.run(main())


@contextmanager
def row_locked(db_url: str, key: str) -> Iterator[psycopg.Connection[Any]]:
    """Hold the row lock of `key`'s lease in an open transaction for the block, so that
    every heartbeat of it waits on the server; roll back on exit."""
    with psycopg.connect(db_url) as blocker:
        blocker.execute("SELECT FROM pgcoord.locks WHERE key = %s FOR UPDATE", (key,))
        try:
            yield blocker
        finally:
            blocker.rollback()


def extend_blocked_by(observer: psycopg.Connection[Any], blocker: psycopg.Connection[Any]) -> bool:
    """Whether a lease's heartbeat (lock_extend_token) waits on `blocker`'s row lock."""
    return bool(
        scalar(
            observer,
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database()"
            " AND %s = ANY (pg_blocking_pids(pid)) AND query LIKE %s",
            blocker.info.backend_pid,
            "%pgcoord.lock_extend_token(%",
        )
    )


def lost_before_the_server_expiry(lease: Lease, observer: psycopg.Connection[Any]) -> None:
    """Wait until the lease says lost; the server clock read right after must still be
    before the server's expiry of the lease, the first moment another owner could take
    the key."""
    poll(lambda: lease.lost, "the lease to report itself lost")
    now = server_now(observer)
    assert now < lease.expires_at, (now, lease.expires_at)
    assert lease.remaining == timedelta(0)
    with pytest.raises(LeaseLost):
        lease.check()


def heartbeat_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pgcoord-heartbeat")]


def expiry(observer: psycopg.Connection[Any], key: str) -> datetime:
    value: datetime = scalar(observer, "SELECT expires_at FROM pgcoord.locks WHERE key = %s", key)
    return value


def test_a_blocked_heartbeat_reports_the_lease_lost_before_it_expires(db_url: str) -> None:
    with (
        Client(db_url) as client,
        psycopg.connect(db_url, autocommit=True) as observer,
    ):
        with client.lock("k", ttl=TTL) as lease:
            granted_until = lease.expires_at
            assert not lease.lost and lease.remaining > timedelta(seconds=2)
            with row_locked(db_url, "k") as blocker:
                poll(lambda: extend_blocked_by(observer, blocker), "the heartbeat to wait")
                lost_before_the_server_expiry(lease, observer)
            # the blocked renewal now ends on a live lease: the server renews it, yet the
            # lease stays lost (its safe time had passed) and its heartbeat stops
            poll(lambda: expiry(observer, "k") > granted_until, "the late renewal")
            poll(lambda: not heartbeat_threads(), "the heartbeat to stop")
            assert lease.lost and lease.expires_at > granted_until
        assert lease.released is True and lease.lost


def test_a_blocked_async_heartbeat_reports_the_lease_lost_before_it_expires(
    db_url: str,
) -> None:
    async def main() -> None:
        async with AsyncClient(db_url) as client:
            async with client.lock("k", ttl=TTL) as lease:
                granted_until = lease.expires_at
                with (
                    psycopg.connect(db_url, autocommit=True) as observer,
                    row_locked(db_url, "k") as blocker,
                ):
                    await asyncio.to_thread(
                        poll, lambda: extend_blocked_by(observer, blocker), "the heartbeat"
                    )
                    await asyncio.to_thread(lost_before_the_server_expiry, lease, observer)
                with psycopg.connect(db_url, autocommit=True) as observer:
                    await asyncio.to_thread(
                        poll, lambda: expiry(observer, "k") > granted_until, "the late renewal"
                    )
                deadline = time.monotonic() + 15
                while any(
                    t.get_name().startswith("pgcoord-heartbeat") for t in asyncio.all_tasks()
                ):
                    assert time.monotonic() < deadline, "the heartbeat did not stop"
                    await asyncio.sleep(0.01)
                assert lease.lost and lease.expires_at > granted_until
            assert lease.released is True and lease.lost

    asyncio.run(main())


def contend(
    client: Client, threads: ThreadPoolExecutor, wait: timedelta = WAIT
) -> list[Future[Outcome | Exception]]:
    start = threading.Barrier(WAITERS)

    def wait_for_it() -> Outcome | Exception:
        start.wait(10)
        try:
            with client.lock("k", wait=wait) as lease:
                return lease, time.monotonic()
        except Exception as exc:
            return exc

    return [threads.submit(wait_for_it) for _ in range(WAITERS)]


def test_through_the_pooler_a_starved_lease_reports_itself_lost_before_a_takeover(
    db_url: str, pooled_db_url: str
) -> None:
    """The pooler's four server connections are all taken by waiters; the holder's
    heartbeat queues behind them in the pooler and the lease runs out on the server. The
    lease says so before the server's expiry, and a waiter then takes the key over with
    a larger token. (Each waiter's release queues in the pooler too, so the key then
    goes from one waiter to the next by takeovers: see docs/poolers.md on p_wait.)"""
    with (
        Client(pooled_db_url) as client,
        psycopg.connect(db_url, autocommit=True) as observer,
        ThreadPoolExecutor(WAITERS) as threads,
    ):
        with client.lock("k", ttl=TTL) as lease:
            waiters = contend(client, threads, wait=2 * TTL)
            poll(lambda: waiting_in_acquire(observer) >= 4, "the pooler's connections taken")
            lost_before_the_server_expiry(lease, observer)
            outcomes = [w.result(timeout=60) for w in waiters]
        assert lease.released is False and lease.lost
    takeovers = [o[0] for o in outcomes if isinstance(o, tuple) and o[0].took_over]
    assert takeovers, outcomes
    assert min(taken.token for taken in takeovers) > lease.token
    assert all(isinstance(o, tuple | LockNotAcquired) for o in outcomes), outcomes


def test_through_the_pooler_a_direct_heartbeat_keeps_the_lease(
    db_url: str, pooled_db_url: str
) -> None:
    """`heartbeat_conninfo` a direct connection: the waiters occupy the pooler, the
    heartbeat does not go through it, and the lease holds."""
    with (
        Client(pooled_db_url, heartbeat_conninfo=db_url) as client,
        psycopg.connect(db_url, autocommit=True) as observer,
        ThreadPoolExecutor(WAITERS) as threads,
    ):
        with client.lock("k", ttl=TTL) as lease:
            waiters = contend(client, threads)
            poll(lambda: waiting_in_acquire(observer) >= 4, "the pooler's connections taken")
            held_for(observer, lease, 2 * TTL.total_seconds(), waiters)
            released_at = time.monotonic()
        assert lease.released is True and not lease.lost
        outcomes = [w.result(timeout=30) for w in waiters]
    assert all(isinstance(o, tuple) for o in outcomes), outcomes
    assert_taken_in_turn([o for o in outcomes if isinstance(o, tuple)], released_at)


def grant(seconds: float = 3.0) -> Lock:
    return Lock(True, "me", 7, datetime.now().astimezone() + timedelta(seconds=seconds), False)


def test_the_safe_time_is_the_ttl_less_the_margin_from_when_the_grant_was_sent() -> None:
    sent = time.monotonic()
    lease = Lease("k", grant(), timedelta(seconds=10), sent)
    assert timedelta(seconds=8.5) < lease.remaining <= timedelta(seconds=9)
    assert not lease.lost
    renewed = grant(10)
    assert lease.extended(renewed.expires_at, sent + 0.5)  # answered in time: moves on
    assert lease.expires_at == renewed.expires_at
    assert timedelta(seconds=9) < lease.remaining <= timedelta(seconds=9.5)


def test_a_lease_past_its_safe_time_is_lost_and_a_late_renewal_restores_nothing() -> None:
    sent = time.monotonic() - 0.95  # ttl 1 s: the safe time (0.9 s) has passed
    lease = Lease("k", grant(), timedelta(seconds=1), sent)
    assert lease.lost and lease.remaining == timedelta(0)
    assert "lost" in repr(lease)
    with pytest.raises(LeaseLost):
        lease.check()
    assert not lease.extended(grant(30).expires_at, time.monotonic())
    assert lease.lost


def test_a_lost_renewal_is_lost_at_once() -> None:
    lease = Lease("k", grant(), timedelta(minutes=1), time.monotonic())
    assert not lease.extended(None, time.monotonic())
    assert lease.lost and lease.remaining == timedelta(0)


def test_a_lease_released_in_time_stays_not_lost_once_its_ttl_has_passed() -> None:
    """`lost` says whether the lease was lost during its block: a clean exit fixes it."""
    sent = time.monotonic()
    lease = Lease("k", grant(), timedelta(seconds=1), sent)
    lease.ended(True)
    later = sent + 60  # long past the ttl, without waiting for it
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("pgcoord.lease.time.monotonic", lambda: later)
        assert not lease.lost and lease.remaining == timedelta(0)
        assert "released" in repr(lease)
        with pytest.raises(LeaseLost, match="released by its block"):
            lease.check()


def test_a_lease_lost_before_a_clean_exit_stays_lost() -> None:
    sent = time.monotonic() - 0.95  # ttl 1 s: the safe time (0.9 s) has passed
    lease = Lease("k", grant(), timedelta(seconds=1), sent)
    lease.ended(True)  # the key was still free: the exit released it
    assert lease.lost and lease.released is True


@pytest.mark.parametrize("heartbeat", [timedelta(seconds=9), timedelta(seconds=30)])
def test_a_heartbeat_as_long_as_the_safe_time_is_refused(heartbeat: timedelta) -> None:
    """The lease would be lost before its first renewal (ttl 10 s: safe for 9 s)."""
    with pytest.raises(ValueError, match="heartbeat must be shorter than 9 s"):
        heartbeat_interval(timedelta(seconds=10), heartbeat)
    assert heartbeat_interval(timedelta(seconds=10), timedelta(seconds=8.9)) == 8.9
    assert heartbeat_interval(timedelta(seconds=10), None) == pytest.approx(10 / 3)
