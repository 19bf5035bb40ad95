"""A lease's heartbeat and release by its grant (lock_extend_token, lock_release_token:
beyond the contract, what the driver's Lease sends): they touch the grant of that token
only, never one made since under the same owner name, also when the grant changes
between a check and the write (one statement settles it on the row)."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg
import pytest
from sqlkit import (
    Conn,
    acquire,
    connections,
    fan_out,
    release,
    scalar,
    server_clock,
    status,
    until_expired,
)

from pgcoord.types import Lock

SHORT = timedelta(milliseconds=100)
LONG = timedelta(seconds=30)
ROUNDS = 20


def extend_token(conn: Conn, key: str, token: int, ttl: timedelta = LONG) -> datetime | None:
    value = scalar(
        conn,
        "SELECT pgcoord.lock_extend_token(p_key => %s, p_token => %s, p_ttl => %s)",
        key,
        token,
        ttl,
    )
    assert value is None or isinstance(value, datetime)
    return value


def release_token(conn: Conn, key: str, token: int) -> bool:
    value = scalar(
        conn, "SELECT pgcoord.lock_release_token(p_key => %s, p_token => %s)", key, token
    )
    assert isinstance(value, bool)
    return value


def test_extend_token_pushes_the_expiry_of_its_live_grant_only(conn: Conn) -> None:
    lock = acquire(conn, "k", "svc", ttl=timedelta(seconds=5))
    before = server_clock(conn)
    expires_at = extend_token(conn, "k", lock.token)
    assert expires_at is not None and expires_at >= before + LONG
    assert extend_token(conn, "k", lock.token + 1) is None, "another token"
    assert extend_token(conn, "other", lock.token) is None, "another key"
    held = status(conn, "k")
    assert held is not None and held.expires_at == expires_at


def test_neither_touches_a_grant_made_since_under_the_same_owner(conn: Conn) -> None:
    first = acquire(conn, "k", "svc")
    assert release(conn, "k", "svc")  # a nested lock()'s exit, by owner
    again = acquire(conn, "k", "svc")  # the same owner name, granted anew
    assert again.token > first.token
    held = status(conn, "k")
    assert extend_token(conn, "k", first.token) is None
    assert release_token(conn, "k", first.token) is False
    assert status(conn, "k") == held, "the new grant is as it was"
    assert release_token(conn, "k", again.token) is True
    assert status(conn, "k") is None


def test_release_token_frees_a_grant_run_out_but_not_taken_over(conn: Conn) -> None:
    lock = acquire(conn, "k", "svc", ttl=SHORT)
    until_expired(conn, "k")
    assert extend_token(conn, "k", lock.token) is None, "extend needs a live grant"
    assert release_token(conn, "k", lock.token) is True
    assert status(conn, "k") is None


def test_after_a_takeover_the_old_token_changes_nothing(conn: Conn) -> None:
    old = acquire(conn, "k", "svc", ttl=SHORT)
    until_expired(conn, "k")
    new = acquire(conn, "k", "other")
    assert new.took_over
    held = status(conn, "k")
    assert extend_token(conn, "k", old.token) is None
    assert release_token(conn, "k", old.token) is False
    assert status(conn, "k") == held


def test_a_release_racing_a_new_grant_under_the_same_owner_never_frees_it(db_url: str) -> None:
    """The old grant runs out; its holder's release and a new acquire by the same owner
    name go at once: whichever wins, the new grant, once made, stays held."""
    with connections(db_url, 2) as conns:
        setup = conns[0]
        for round_ in range(ROUNDS):
            key = f"race-{round_}"
            old = acquire(setup, key, "svc", ttl=SHORT)
            until_expired(setup, key)

            def call(i: int, conn: Conn, key: str = key, token: int = old.token) -> object:
                return release_token(conn, key, token) if i == 0 else acquire(conn, key, "svc")

            released, grant = fan_out(conns, call)
            assert isinstance(grant, Lock) and grant.acquired, "a run-out grant blocks none"
            held = status(setup, key)
            assert held is not None and held.token == grant.token, (round_, released)


@pytest.mark.parametrize(
    ("call", "argument", "sqlstate"),
    [
        ("SELECT pgcoord.lock_extend_token('k', NULL)", "p_token", "22004"),
        ("SELECT pgcoord.lock_extend_token('k', 1, interval '0')", "p_ttl", "22023"),
        ("SELECT pgcoord.lock_extend_token('k', 1, interval '2 days')", "p_ttl", "22023"),
        ("SELECT pgcoord.lock_extend_token('', 1)", "p_key", "22023"),
        ("SELECT pgcoord.lock_release_token('k', NULL)", "p_token", "22004"),
        ("SELECT pgcoord.lock_release_token(NULL, 1)", "p_key", "22004"),
    ],
)
def test_bad_arguments_are_named_and_change_nothing(
    conn: Conn, call: str, argument: str, sqlstate: str
) -> None:
    lock = acquire(conn, "k", "svc")
    held = status(conn, "k")
    with pytest.raises(psycopg.Error) as bad:
        conn.execute(call)
    assert bad.value.sqlstate == sqlstate and argument in str(bad.value)
    assert status(conn, "k") == held and held is not None and held.token == lock.token
