"""Client.lock(): a lease held for a `with` block, kept alive by a heartbeat thread."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from pgcoord import Client, Lease, LeaseLost, Lock, LockNotAcquired, locks

FAST = timedelta(milliseconds=50)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def server_now(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


def heartbeats() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pgcoord-heartbeat")]


def expire(conn: psycopg.Connection[Any], key: str) -> None:
    """Make the lease of `key` run out now, as if its holder had stalled."""
    conn.execute(
        "UPDATE pgcoord.locks SET expires_at = clock_timestamp() - interval '1 second'"
        " WHERE key = %s",
        [key],
    )


def test_a_contender_gets_lock_not_acquired_carrying_the_holder(client: Client) -> None:
    with client.lock("k") as lease:
        assert re.fullmatch(
            rf"{re.escape(socket.gethostname())}:{os.getpid()}:[0-9a-f]{{8}}", lease.owner
        )
        assert not lease.took_over and not lease.lost
        lease.check()
        with pytest.raises(LockNotAcquired) as caught, client.lock("k"):
            pytest.fail("two holders of one key")
        error = caught.value
        assert error.key == "k"
        assert (error.holder.owner, error.holder.token) == (lease.owner, lease.token)
        assert error.holder.expires_at == lease.expires_at
        assert lease.owner in str(error)
        [status] = client.lock_status()
        assert (status.owner, status.token) == (lease.owner, lease.token)
        assert client.lock_is_current("k", lease.token)
    assert lease.released is True and not lease.lost
    assert client.lock_status() == []
    # released by the block's exit: no longer held, whatever `lost` says of the block
    assert lease.remaining == timedelta(0)
    with pytest.raises(LeaseLost, match=r"\(token \d+\) was released by its block"):
        lease.check()
    assert repr(lease).endswith(" released>")


def test_a_key_taken_in_a_transaction_not_yet_committed_is_refused_without_a_holder(
    client: Client, db_url: str
) -> None:
    """Another connection acquires inside its own transaction and stays open: the block
    is refused within a try's bound, and the error says the holder is not known yet."""
    with psycopg.connect(db_url) as other:  # not autocommit: the grant waits for COMMIT
        assert locks.lock_acquire(other, "k", "other").acquired
        started = time.monotonic()
        with pytest.raises(LockNotAcquired, match="not yet committed") as caught, client.lock("k"):
            pytest.fail("two holders of one key")
        assert time.monotonic() - started < 5
        assert caught.value.holder == Lock(False, None, None, None, False)
        other.commit()
    with pytest.raises(LockNotAcquired, match="held by 'other'"), client.lock("k"):
        pytest.fail("two holders of one key")


def test_the_exit_releases_the_lock_after_the_clients_connections_were_killed(
    client: Client, conn: psycopg.Connection[Any]
) -> None:
    """Killed connections (a failover, an admin) while the block runs: the heartbeat
    carries on, the exit's release still frees the key, and the next call of the client
    finds a live connection."""
    client.lock_status()  # the pool's connection is open and idle
    with client.lock("k", ttl=timedelta(seconds=6), heartbeat=timedelta(seconds=0.2)) as lease:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
        assert killed is not None and killed[0] >= 1  # the client's idle one, at least
        beat = lease.expires_at
        wait_until(lambda: lease.expires_at > beat, "a heartbeat after the kill")
    assert lease.released is True and not lease.lost
    assert client.lock_status() == []


def test_the_lock_is_released_on_an_exception_and_the_heartbeat_stops(client: Client) -> None:
    with pytest.raises(RuntimeError, match="boom"), client.lock("k", "worker-1", heartbeat=FAST):
        assert [t.name for t in heartbeats()] == ["pgcoord-heartbeat k"]
        assert client.lock_status()[0].owner == "worker-1"
        raise RuntimeError("boom")
    assert client.lock_status() == []
    assert heartbeats() == []


def test_the_heartbeat_keeps_a_short_lease_for_a_longer_block(
    client: Client, conn: psycopg.Connection[Any]
) -> None:
    ttl = timedelta(seconds=1)
    with client.lock("k", ttl=ttl) as lease:
        granted_until = lease.expires_at
        end = server_now(conn) + 3 * ttl
        tries = 0
        while server_now(conn) < end:
            intruder = locks.lock_acquire(conn, "k", "intruder", ttl)
            assert not intruder.acquired
            assert (intruder.owner, intruder.token) == (lease.owner, lease.token)
            tries += 1
            time.sleep(0.1)
        assert tries >= 10
        assert not lease.lost
        assert lease.expires_at > granted_until + ttl
        assert client.lock_is_current("k", lease.token)
    assert lease.released is True


def test_a_lease_taken_over_is_marked_lost_and_exit_spares_the_new_holder(
    client: Client, conn: psycopg.Connection[Any]
) -> None:
    with client.lock("k", heartbeat=FAST) as lease:
        expire(conn, "k")
        thief = locks.lock_acquire(conn, "k", "thief")
        assert thief.acquired and thief.took_over and thief.token > lease.token
        wait_until(lambda: lease.lost, "the heartbeat to notice")
        with pytest.raises(LeaseLost) as caught:
            lease.check()
        assert (caught.value.key, caught.value.token) == ("k", lease.token)
        wait_until(lambda: heartbeats() == [], "the heartbeat to stop")
        assert not client.lock_is_current("k", lease.token)
    assert lease.released is False
    [status] = client.lock_status()
    assert (status.owner, status.token) == ("thief", thief.token)
    assert client.lock_is_current("k", thief.token)


def test_a_nested_lock_of_the_same_key_and_owner_is_refused(client: Client) -> None:
    """The server would take it for a renewal of the outer grant (the same token), and
    the inner exit would free the key under the outer block."""
    with client.lock("k", owner="svc", ttl=timedelta(minutes=1)) as outer:
        with (
            pytest.raises(LockNotAcquired, match="not re-entrant") as refused,
            client.lock("k", owner="svc", ttl=timedelta(seconds=1)),
        ):
            pass
        assert refused.value.holder.token == outer.token
        assert client.lock_is_current("k", outer.token) and not outer.lost
        [status] = client.lock_status()  # the inner ttl never reached the server
        assert status.expires_at == outer.expires_at
    assert outer.released is True
    with client.lock("k", owner="svc") as again:  # once the block is over, as before
        assert again.token > outer.token


def test_a_lease_never_renews_nor_frees_a_grant_made_since_under_its_owner(
    client: Client, conn: psycopg.Connection[Any]
) -> None:
    """Another process given the same owner name frees the key and is granted it anew:
    the lease is lost from then on, its heartbeat does not keep the new grant alive as
    its own, and its exit leaves it held."""
    with client.lock("k", owner="svc", heartbeat=FAST) as outer:
        assert locks.lock_release(conn, "k", "svc")
        again = locks.lock_acquire(conn, "k", "svc")
        assert again.acquired and again.token > outer.token
        wait_until(lambda: outer.lost, "the heartbeat to see the grant is not its own")
        with pytest.raises(LeaseLost):
            outer.check()
    assert outer.released is False
    [status] = client.lock_status()
    assert (status.owner, status.token) == ("svc", again.token), "the new grant still held"


def test_a_lease_whose_release_failed_is_held_no_more(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(*args: Any) -> bool:
        raise psycopg.OperationalError("the server went away")

    monkeypatch.setattr(locks, "_lease_release", failing)
    with pytest.raises(psycopg.OperationalError), client.lock("k") as lease:
        assert not lease.lost
    assert lease.released is None and lease.lost and lease.remaining == timedelta(0)
    with pytest.raises(LeaseLost):
        lease.check()


def test_a_lease_deleted_behind_its_back_is_marked_lost(
    client: Client, conn: psycopg.Connection[Any]
) -> None:
    with client.lock("k", heartbeat=FAST) as lease:
        conn.execute("DELETE FROM pgcoord.locks WHERE key = 'k'")
        wait_until(lambda: lease.lost, "the heartbeat to notice")
    assert lease.released is False
    assert client.lock_status() == []


def test_a_waiting_lock_is_granted_promptly_when_the_holder_releases(
    client: Client, conn: psycopg.Connection[Any]
) -> None:
    holder = locks.lock_acquire(conn, "k", "holder", timedelta(minutes=1))

    def contend() -> tuple[Lease, float]:
        with client.lock("k", wait=timedelta(seconds=30)) as lease:
            return lease, time.monotonic()

    def waiting() -> bool:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state = 'active' AND query LIKE '%pgcoord.lock_acquire(%'"
            " AND pid <> pg_backend_pid()"
        ).fetchone()
        return row is not None and row[0] == 1

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(contend)
        wait_until(waiting, "the contender to wait in lock_acquire")
        assert not future.done()
        released_at = time.monotonic()
        assert locks.lock_release(conn, "k", "holder")
        lease, granted_at = future.result(timeout=10)
    assert granted_at - released_at < 1.0
    assert lease.token > holder.token and not lease.took_over
    assert lease.released is True
    assert client.lock_status() == []


def test_one_winner_per_round_among_concurrent_contenders(client: Client) -> None:
    contenders, rounds = 8, 15
    start, answered = threading.Barrier(contenders), threading.Barrier(contenders)

    def contend(key: str) -> Lease | LockNotAcquired:
        start.wait(timeout=10)
        try:
            with client.lock(key) as lease:
                answered.wait(timeout=10)
                return lease
        except LockNotAcquired as refused:
            answered.wait(timeout=10)
            return refused

    with ThreadPoolExecutor(contenders) as pool:
        for n in range(rounds):
            key = f"race-{n}"
            outcomes = list(pool.map(contend, [key] * contenders))
            winners = [o for o in outcomes if isinstance(o, Lease)]
            assert len(winners) == 1, outcomes
            [winner] = winners
            for refused in outcomes:
                if isinstance(refused, LockNotAcquired):
                    assert refused.key == key
                    assert (refused.holder.owner, refused.holder.token) == (
                        winner.owner,
                        winner.token,
                    )
            assert winner.released is True
            assert client.lock_status() == []
