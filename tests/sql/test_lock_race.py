"""Many connections fired at once by a barrier: one holder per key, and keys independent."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlkit import (
    Background,
    Conn,
    acquire,
    connections,
    fan_out,
    release,
    status,
    until_expired,
    until_waiting,
)

from pgcoord.types import Lock

CONNECTIONS = 32
ROUNDS = 50


def contend(conns: list[Conn], key: str) -> list[Lock]:
    """Every connection asks for `key` at the same moment, each as its own owner."""
    return fan_out(conns, lambda i, c: acquire(c, key, f"worker-{i}"))


def test_exactly_one_of_32_acquires_and_the_others_see_it(db_url: str, conn: Conn) -> None:
    last_token = 0
    with connections(db_url, CONNECTIONS) as conns:
        for round_no in range(ROUNDS):
            key = "race" if round_no % 2 else f"race-{round_no}"  # reused key, or a fresh one
            locks = contend(conns, key)

            winners = [lock for lock in locks if lock.acquired]
            assert len(winners) == 1, f"round {round_no}: {len(winners)} winners"
            winner = winners[0]
            assert not winner.took_over
            assert winner.token > last_token, "tokens must grow from round to round"
            for lock in locks:
                assert (lock.owner, lock.token, lock.expires_at) == (
                    winner.owner,
                    winner.token,
                    winner.expires_at,
                ), f"round {round_no}: a loser saw {lock}, the winner is {winner}"
                assert not lock.took_over
            held = status(conn, key)
            assert held is not None
            assert (held.owner, held.token) == (winner.owner, winner.token)

            assert release(conn, key, winner.owner)
            last_token = winner.token


def test_exactly_one_of_32_takes_over_an_expired_lease(db_url: str, conn: Conn) -> None:
    with connections(db_url, CONNECTIONS) as conns:
        for round_no in range(20):
            key = f"stale-{round_no}"
            stale = acquire(conn, key, "crashed", ttl=timedelta(milliseconds=1))
            until_expired(conn, key)

            locks = contend(conns, key)

            winners = [lock for lock in locks if lock.acquired]
            assert len(winners) == 1, f"round {round_no}: {len(winners)} winners"
            winner = winners[0]
            assert winner.took_over, "replacing an expired holder is a take-over"
            assert winner.token > stale.token
            for lock in locks:
                assert (lock.owner, lock.token) == (winner.owner, winner.token)
                assert lock.took_over == lock.acquired


def test_release_racing_31_acquirers_hands_the_key_to_at_most_one(db_url: str, conn: Conn) -> None:
    with connections(db_url, CONNECTIONS) as conns:
        for round_no in range(20):
            key = f"handover-{round_no}"
            held = acquire(conn, key, "holder")

            def call(i: int, c: Conn, key: str = key) -> bool | Lock:
                return release(c, key, "holder") if i == 0 else acquire(c, key, f"worker-{i}")

            results = fan_out(conns, call)

            assert results[0] is True
            locks = [r for r in results[1:] if isinstance(r, Lock)]
            winners = [lock for lock in locks if lock.acquired]
            assert len(winners) <= 1
            now = status(conn, key)
            if winners:
                assert now is not None
                assert (now.owner, now.token) == (winners[0].owner, winners[0].token)
                assert winners[0].token > held.token
                assert not winners[0].took_over
            else:
                assert now is None
            for lock in locks:
                if not lock.acquired:
                    # a loser saw either the old holder or the new one, never a mixture
                    seen = (lock.owner, lock.token)
                    assert seen == ("holder", held.token) or (
                        winners and seen == (winners[0].owner, winners[0].token)
                    )


def test_32_connections_on_32_keys_all_acquire(db_url: str) -> None:
    with connections(db_url, CONNECTIONS) as conns:
        for round_no in range(10):
            prefix = f"own-{round_no}"
            locks = fan_out(conns, lambda i, c, prefix=prefix: acquire(c, f"{prefix}-{i}", f"w{i}"))
            assert all(lock.acquired for lock in locks)
            assert all(lock.owner == f"w{i}" for i, lock in enumerate(locks))
            assert len({lock.token for lock in locks}) == CONNECTIONS


def test_other_keys_do_not_wait_on_a_contended_key(db_url: str, conn: Conn) -> None:
    """While one key is held by an open transaction, held by a lease, and waited on,
    acquires and releases of other keys return at once."""
    others = 8
    with connections(db_url, others + 2) as conns:
        waiter_conn, tx_conn, other_conns = conns[0], conns[1], conns[2:]
        for c in other_conns:
            c.execute("SET statement_timeout = '2s'")  # a block fails the test fast
        acquire(conn, "busy", "holder")
        waiter = Background(
            lambda: acquire(waiter_conn, "busy", "waiter", wait=timedelta(seconds=5))
        )
        until_waiting(conn, waiter_conn.info.backend_pid)
        with tx_conn.transaction():  # a grant not yet committed keeps its row locked
            assert acquire(tx_conn, "uncommitted", "tx").acquired

            def timed(i: int, c: Conn) -> list[float]:
                """Calls on other keys (waiting too), a refusal on the busy key: at once."""
                times = []
                for call in (
                    lambda: acquire(c, f"free-{i}", f"worker-{i}").acquired,
                    lambda: acquire(c, "busy", f"worker-{i}").owner == "holder",
                    lambda: release(c, f"free-{i}", f"worker-{i}"),
                    lambda: (
                        acquire(c, f"free-{i}", f"worker-{i}", wait=timedelta(seconds=5)).acquired
                    ),
                ):
                    started = time.monotonic()
                    assert call()
                    times.append(time.monotonic() - started)
                return times

            for times in fan_out(other_conns, timed):
                assert max(times) < 0.5, f"calls took {times} s"
            assert not waiter.done, "the waiter must still be waiting"

        assert release(conn, "busy", "holder")
        granted = waiter.join()
        assert granted.acquired and granted.owner == "waiter"
