"""Exact interleavings that the scheduler produces only now and then, forced by holding
the lock row with a plain SELECT ... FOR UPDATE from a third session and polling
pg_blocking_pids until each call waits where it should."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlkit import (
    Background,
    Conn,
    acquire,
    connections,
    extend,
    is_current,
    poll,
    scalar,
    status,
    until_expired,
)

TTL = timedelta(seconds=1)
RENEWED = timedelta(seconds=30)


def blocked(observer: Conn, pid: int) -> bool:
    return bool(scalar(observer, "SELECT cardinality(pg_blocking_pids(%s)) > 0", pid))


def renew_by_extend(c: Conn) -> datetime | None:
    return extend(c, "k", "holder", ttl=RENEWED)


def renew_by_acquire(c: Conn) -> datetime | None:
    lock = acquire(c, "k", "holder", ttl=RENEWED)
    return lock.expires_at if lock.acquired else None


@pytest.mark.parametrize(
    "renew", [renew_by_extend, renew_by_acquire], ids=["lock_extend", "lock_acquire"]
)
def test_a_renewal_made_before_the_expiry_is_not_taken_over(
    db_url: str, conn: Conn, renew: Callable[[Conn], Any]
) -> None:
    """The holder reads the clock before its lease ends, but its write lands after a
    would-be taker has read the row as expired. The renewal came first: the taker must
    be refused, not take over the lease the holder has just been told it holds."""
    with connections(db_url, 3) as (row_locker, holder_conn, taker_conn):
        for c in (holder_conn, taker_conn):  # they wait on the row as long as it is held
            c.execute("SET pgcoord.lock_try_timeout = '30s'")
        held = acquire(conn, "k", "holder", ttl=TTL)
        with row_locker.transaction():
            row_locker.execute("SELECT FROM pgcoord.locks WHERE key = 'k' FOR UPDATE")
            holder = Background(lambda: renew(holder_conn))
            poll(lambda: blocked(conn, holder_conn.info.backend_pid), "the renewal to wait")

            until_expired(conn, "k")
            taker = Background(lambda: acquire(taker_conn, "k", "taker"))
            poll(lambda: blocked(conn, taker_conn.info.backend_pid), "the taker to wait")
        new_expiry = holder.join()
        taken = taker.join()

    assert new_expiry is not None, "the renewal was made while the lease was live"
    assert new_expiry - RENEWED < held.expires_at, "precondition: renewed before the expiry"
    now = status(conn, "k")
    assert now is not None
    assert not taken.acquired, (
        f"{taken.owner} took over (took_over={taken.took_over}) a lease renewed until"
        f" {new_expiry}; the lock is now {now}"
    )
    assert (taken.owner, taken.token) == ("holder", held.token)
    assert (now.owner, now.token, now.expires_at) == ("holder", held.token, new_expiry)
    assert is_current(conn, "k", held.token)


def test_a_renewal_committed_late_by_the_holders_transaction_is_not_taken_over(
    db_url: str, conn: Conn
) -> None:
    """The same race with nothing but the API: the holder renews inside its own
    transaction before the expiry and commits after it, while a taker that read the
    row as expired waits for that commit."""
    with connections(db_url, 2) as (holder_conn, taker_conn):
        held = acquire(conn, "k", "holder", ttl=TTL)
        with holder_conn.transaction():
            new_expiry = extend(holder_conn, "k", "holder", ttl=RENEWED)
            assert new_expiry is not None
            until_expired(conn, "k")  # other sessions still see the old expiry
            taker = Background(lambda: acquire(taker_conn, "k", "taker"))
            poll(lambda: blocked(conn, taker_conn.info.backend_pid), "the taker to wait")
        taken = taker.join()

    now = status(conn, "k")
    assert now is not None
    assert not taken.acquired, (
        f"{taken.owner} took over (took_over={taken.took_over}) a lease renewed until"
        f" {new_expiry}; the lock is now {now}"
    )
    assert (now.owner, now.token, now.expires_at) == ("holder", held.token, new_expiry)
