"""Lease semantics of one key: renewal, expiry, take-over, stale holders, fencing."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from sqlkit import (
    Conn,
    acquire,
    connect,
    extend,
    is_current,
    release,
    scalar,
    server_clock,
    status,
    until_expired,
)

SHORT = timedelta(milliseconds=100)
SLACK = timedelta(milliseconds=500)  # round trips and a busy machine


def test_a_free_key_is_granted_and_others_see_the_holder(conn: Conn) -> None:
    before = server_clock(conn)
    lock = acquire(conn, "k", "alice", ttl=timedelta(seconds=10))
    after = server_clock(conn)

    assert lock.acquired and lock.owner == "alice" and not lock.took_over
    assert before + timedelta(seconds=10) <= lock.expires_at <= after + timedelta(seconds=10)
    held = status(conn, "k")
    assert held is not None
    assert (held.owner, held.token, held.expires_at, held.expired) == (
        "alice",
        lock.token,
        lock.expires_at,
        False,
    )
    assert before <= held.acquired_at <= after

    refused = acquire(conn, "k", "bob")
    assert not refused.acquired and not refused.took_over
    assert (refused.owner, refused.token, refused.expires_at) == (
        "alice",
        lock.token,
        lock.expires_at,
    )
    assert status(conn, "k") == held, "a refused acquire changes nothing"


def test_renewal_by_the_holder_keeps_the_token_and_pushes_the_expiry(conn: Conn) -> None:
    first = acquire(conn, "k", "alice", ttl=timedelta(seconds=10))
    first_status = status(conn, "k")
    renewed = acquire(conn, "k", "alice", ttl=timedelta(seconds=60))

    assert renewed.acquired and not renewed.took_over
    assert renewed.token == first.token
    assert renewed.expires_at >= first.expires_at + timedelta(seconds=50)
    held = status(conn, "k")
    assert held is not None and first_status is not None
    assert held.acquired_at == first_status.acquired_at, "a renewal is not a new grant"
    assert held.expires_at == renewed.expires_at


def test_extend_pushes_the_expiry_of_a_live_lease(conn: Conn) -> None:
    lock = acquire(conn, "k", "alice", ttl=timedelta(seconds=10))
    before = server_clock(conn)
    new_expiry = extend(conn, "k", "alice", ttl=timedelta(seconds=60))
    after = server_clock(conn)

    assert new_expiry is not None
    assert before + timedelta(seconds=60) <= new_expiry <= after + timedelta(seconds=60)
    held = status(conn, "k")
    assert held is not None
    assert (held.token, held.expires_at) == (lock.token, new_expiry)
    assert is_current(conn, "k", lock.token)


def test_extend_by_another_owner_or_of_a_free_key_is_null(conn: Conn) -> None:
    lock = acquire(conn, "k", "alice")
    assert extend(conn, "k", "bob") is None
    assert extend(conn, "never-held", "alice") is None
    held = status(conn, "k")
    assert held is not None
    assert (held.owner, held.token, held.expires_at) == ("alice", lock.token, lock.expires_at)


def test_an_expired_lease_is_taken_over_with_a_larger_token(conn: Conn) -> None:
    stale = acquire(conn, "k", "alice", ttl=SHORT)
    until_expired(conn, "k")

    new = acquire(conn, "k", "bob")

    assert new.acquired and new.took_over and new.owner == "bob"
    assert new.token > stale.token
    # the stale holder has lost everything, and cannot disturb the new one
    assert release(conn, "k", "alice") is False
    assert extend(conn, "k", "alice") is None
    assert is_current(conn, "k", stale.token) is False
    assert is_current(conn, "k", new.token) is True
    held = status(conn, "k")
    assert held is not None
    assert (held.owner, held.token, held.expires_at, held.expired) == (
        "bob",
        new.token,
        new.expires_at,
        False,
    )
    refused = acquire(conn, "k", "alice")
    assert not refused.acquired and (refused.owner, refused.token) == ("bob", new.token)


def test_the_same_owner_reacquiring_its_expired_lease_gets_a_new_grant(conn: Conn) -> None:
    stale = acquire(conn, "k", "alice", ttl=SHORT)
    until_expired(conn, "k")
    before = server_clock(conn)

    again = acquire(conn, "k", "alice")

    assert again.acquired and not again.took_over
    assert again.token > stale.token, "an expired lease is a free key: a new grant"
    assert is_current(conn, "k", stale.token) is False
    assert is_current(conn, "k", again.token) is True
    held = status(conn, "k")
    assert held is not None and held.acquired_at >= before


def test_an_expired_lease_not_yet_taken(conn: Conn) -> None:
    lock = acquire(conn, "k", "alice", ttl=SHORT)
    until_expired(conn, "k")

    assert is_current(conn, "k", lock.token) is False
    assert extend(conn, "k", "alice") is None, "extend needs a live lease"
    held = status(conn, "k")
    assert held is not None and held.expired and held.token == lock.token
    assert release(conn, "k", "bob") is False
    assert release(conn, "k", "alice") is True, "the expired holder may still release"
    assert status(conn, "k") is None
    assert release(conn, "k", "alice") is False


def test_release_frees_only_the_holders_lock(conn: Conn) -> None:
    lock = acquire(conn, "k", "alice")
    assert release(conn, "k", "bob") is False
    assert release(conn, "never-held", "alice") is False
    assert is_current(conn, "k", lock.token)

    assert release(conn, "k", "alice") is True
    assert status(conn, "k") is None
    assert is_current(conn, "k", lock.token) is False
    assert release(conn, "k", "alice") is False
    after = acquire(conn, "k", "bob")
    assert after.acquired and not after.took_over, "a released key is free, not taken over"


def test_lock_is_current_is_false_for_unknown_keys_and_tokens(conn: Conn) -> None:
    lock = acquire(conn, "k", "alice")
    assert is_current(conn, "k", lock.token)
    assert not is_current(conn, "k", lock.token + 1)
    assert not is_current(conn, "k", lock.token - 1)
    assert not is_current(conn, "other", lock.token)


def test_tokens_strictly_increase_per_key(conn: Conn) -> None:
    tokens = []
    for i in range(20):
        owner = f"owner-{i % 3}"
        lock = acquire(conn, "k", owner)
        assert lock.acquired
        tokens.append(lock.token)
        assert acquire(conn, "k", owner).token == lock.token  # renewal: same token
        acquire(conn, f"other-{i}", owner)  # grants of other keys interleave
        assert release(conn, "k", owner)
    stale = acquire(conn, "k", "alice", ttl=SHORT)  # then expiry: take-over, and re-grant
    until_expired(conn, "k")
    taken = acquire(conn, "k", "bob", ttl=SHORT)
    until_expired(conn, "k")
    regranted = acquire(conn, "k", "bob")
    tokens += [stale.token, taken.token, regranted.token]

    assert all(a < b for a, b in itertools.pairwise(tokens)), tokens


def test_lock_is_current_fences_a_write(conn: Conn) -> None:
    conn.execute("CREATE TABLE public.fenced (id integer PRIMARY KEY, writer text)")
    conn.execute("INSERT INTO public.fenced VALUES (1, 'nobody')")
    fenced_update = (
        "UPDATE public.fenced SET writer = %s"
        " WHERE id = 1 AND pgcoord.lock_is_current(p_key => 'k', p_token => %s)"
    )

    with conn.transaction():  # the grant and the write share a transaction
        alice = acquire(conn, "k", "alice", ttl=SHORT)
        assert conn.execute(fenced_update, ("alice", alice.token)).rowcount == 1
    until_expired(conn, "k")
    assert conn.execute(fenced_update, ("alice-late", alice.token)).rowcount == 0
    bob = acquire(conn, "k", "bob")
    assert bob.took_over
    assert conn.execute(fenced_update, ("bob", bob.token)).rowcount == 1
    assert conn.execute(fenced_update, ("alice-stale", alice.token)).rowcount == 0
    assert scalar(conn, "SELECT writer FROM public.fenced WHERE id = 1") == "bob"


def test_leases_use_the_server_clock_inside_a_long_transaction(conn: Conn, db_url: str) -> None:
    """now() is the start of the transaction; every lease must come from the clock."""
    with connect(db_url) as other:
        short = acquire(other, "short", "alice", ttl=timedelta(milliseconds=600))
        with conn.transaction():
            started = scalar(conn, "SELECT now()")
            assert started < short.expires_at, "the short lease must outlive the start"
            conn.execute("SELECT pg_sleep(1.2)")

            before = server_clock(conn)
            lock = acquire(conn, "k", "bob", ttl=timedelta(seconds=10))
            after = server_clock(conn)
            assert (
                before + timedelta(seconds=10) <= lock.expires_at <= after + timedelta(seconds=10)
            )
            assert lock.expires_at >= started + timedelta(seconds=11.1), "not now() + p_ttl"

            before = server_clock(conn)
            extended = extend(conn, "k", "bob", ttl=timedelta(seconds=20))
            after = server_clock(conn)
            assert extended is not None
            assert before + timedelta(seconds=20) <= extended <= after + timedelta(seconds=20)

            # the short lease ended after now() but before the clock: it is over
            assert before > short.expires_at
            assert is_current(conn, "short", short.token) is False
            held = status(conn, "short")
            assert held is not None and held.expired
            assert extend(conn, "short", "alice") is None
            taken = acquire(conn, "short", "bob")
            assert taken.acquired and taken.took_over
        assert is_current(other, "short", taken.token)
        assert not is_current(other, "short", short.token)


# the shortest lease there is, and the longest allowed (a longer one raises 22023)
@pytest.mark.parametrize("ttl", [timedelta(microseconds=1), timedelta(days=1)])
def test_extreme_ttls_are_leases_too(conn: Conn, ttl: timedelta) -> None:
    lock = acquire(conn, "k", "alice", ttl=ttl)
    assert lock.acquired
    assert lock.expires_at - SLACK <= server_clock(conn) + ttl <= lock.expires_at + SLACK
