"""AsyncClient.lock(): a lease held for an `async with` block, kept alive by a task."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from pgcoord import AsyncClient, Lease, LeaseLost, LockNotAcquired, locks_async

FAST = timedelta(milliseconds=50)


def run(
    test: Callable[[AsyncClient, psycopg.AsyncConnection[Any]], Coroutine[Any, Any, None]],
    db_url: str,
    max_size: int = 8,
) -> None:
    """Run `test` with an AsyncClient and an autocommit connection of the test's own."""

    async def main() -> None:
        async with (
            AsyncClient(db_url, max_size=max_size) as client,
            await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn,
        ):
            await test(client, conn)

    asyncio.run(main())


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 10
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def server_now(conn: psycopg.AsyncConnection[Any]) -> datetime:
    row = await (await conn.execute("SELECT clock_timestamp()")).fetchone()
    assert row is not None
    return row[0]


def heartbeats() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("pgcoord-heartbeat")]


async def expire(conn: psycopg.AsyncConnection[Any], key: str) -> None:
    """Make the lease of `key` run out now, as if its holder had stalled."""
    await conn.execute(
        "UPDATE pgcoord.locks SET expires_at = clock_timestamp() - interval '1 second'"
        " WHERE key = %s",
        [key],
    )


def test_a_contender_gets_lock_not_acquired_carrying_the_holder(db_url: str) -> None:
    async def test(client: AsyncClient, conn: psycopg.AsyncConnection[Any]) -> None:
        async with client.lock("k") as lease:
            with pytest.raises(LockNotAcquired) as caught:
                async with client.lock("k"):
                    pytest.fail("two holders of one key")
            assert caught.value.key == "k"
            holder = caught.value.holder
            assert (holder.owner, holder.token) == (lease.owner, lease.token)
            assert [t.get_name() for t in heartbeats()] == ["pgcoord-heartbeat k"]
            assert await client.lock_is_current("k", lease.token)
        assert lease.released is True and not lease.lost
        assert await client.lock_status() == []
        assert heartbeats() == []
        assert lease.remaining == timedelta(0)
        with pytest.raises(LeaseLost, match=r"\(token \d+\) was released by its block"):
            lease.check()

    run(test, db_url)


def test_the_lock_is_released_on_an_exception_and_on_cancellation(db_url: str) -> None:
    async def test(client: AsyncClient, conn: psycopg.AsyncConnection[Any]) -> None:
        with pytest.raises(RuntimeError, match="boom"):
            async with client.lock("k", heartbeat=FAST):
                raise RuntimeError("boom")
        assert await client.lock_status() == []
        assert heartbeats() == []

        entered = asyncio.Event()

        async def hold_forever() -> None:
            async with client.lock("k", heartbeat=FAST):
                entered.set()
                await asyncio.Event().wait()

        holder = asyncio.create_task(hold_forever())
        await entered.wait()
        assert len(await client.lock_status()) == 1
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder
        assert await client.lock_status() == []
        assert heartbeats() == []

    run(test, db_url)


def test_the_heartbeat_keeps_a_short_lease_for_a_longer_block(db_url: str) -> None:
    async def test(client: AsyncClient, conn: psycopg.AsyncConnection[Any]) -> None:
        ttl = timedelta(seconds=1)
        async with client.lock("k", ttl=ttl) as lease:
            granted_until = lease.expires_at
            end = await server_now(conn) + 3 * ttl
            tries = 0
            while await server_now(conn) < end:
                intruder = await locks_async.lock_acquire(conn, "k", "intruder", ttl)
                assert not intruder.acquired
                assert (intruder.owner, intruder.token) == (lease.owner, lease.token)
                tries += 1
                await asyncio.sleep(0.1)
            assert tries >= 10
            assert not lease.lost
            assert lease.expires_at > granted_until + ttl
        assert lease.released is True

    run(test, db_url)


def test_a_lease_taken_over_is_marked_lost_and_exit_spares_the_new_holder(db_url: str) -> None:
    async def test(client: AsyncClient, conn: psycopg.AsyncConnection[Any]) -> None:
        async with client.lock("k", heartbeat=FAST) as lease:
            await expire(conn, "k")
            thief = await locks_async.lock_acquire(conn, "k", "thief")
            assert thief.acquired and thief.took_over and thief.token > lease.token

            async def lost() -> bool:
                return lease.lost and heartbeats() == []

            await wait_until(lost, "the heartbeat to notice and stop")
            with pytest.raises(LeaseLost):
                lease.check()
        assert lease.released is False
        [status] = await client.lock_status()
        assert (status.owner, status.token) == ("thief", thief.token)

    run(test, db_url)


def test_a_nested_lock_of_the_same_key_and_owner_is_refused(db_url: str) -> None:
    async def test(client: AsyncClient, conn: psycopg.AsyncConnection[Any]) -> None:
        async with client.lock("k", owner="svc", ttl=timedelta(minutes=1)) as outer:
            with pytest.raises(LockNotAcquired, match="not re-entrant") as refused:
                async with client.lock("k", owner="svc", ttl=timedelta(seconds=1)):
                    pass
            assert refused.value.holder.token == outer.token
            assert await client.lock_is_current("k", outer.token) and not outer.lost
            [status] = await client.lock_status()  # the inner ttl never reached the server
            assert status.expires_at == outer.expires_at
        assert outer.released is True

    run(test, db_url)


def test_a_lease_never_renews_nor_frees_a_grant_made_since_under_its_owner(db_url: str) -> None:
    async def test(client: AsyncClient, conn: psycopg.AsyncConnection[Any]) -> None:
        async with client.lock("k", owner="svc", heartbeat=FAST) as outer:
            assert await locks_async.lock_release(conn, "k", "svc")
            again = await locks_async.lock_acquire(conn, "k", "svc")
            assert again.acquired and again.token > outer.token

            async def lost() -> bool:
                return outer.lost

            await wait_until(lost, "the heartbeat to see the grant is not its own")
        assert outer.released is False
        [status] = await client.lock_status()
        assert (status.owner, status.token) == ("svc", again.token), "the new grant still held"

    run(test, db_url)


def test_a_lease_whose_release_failed_is_held_no_more(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing(*args: Any) -> bool:
        raise psycopg.OperationalError("the server went away")

    async def test(client: AsyncClient, conn: psycopg.AsyncConnection[Any]) -> None:
        monkeypatch.setattr(locks_async, "_lease_release", failing)
        with pytest.raises(psycopg.OperationalError):
            async with client.lock("k") as lease:
                assert not lease.lost
        assert lease.released is None and lease.lost and lease.remaining == timedelta(0)
        with pytest.raises(LeaseLost):
            lease.check()

    run(test, db_url)


def test_a_waiting_lock_is_granted_promptly_when_the_holder_releases(db_url: str) -> None:
    async def test(client: AsyncClient, conn: psycopg.AsyncConnection[Any]) -> None:
        holder = await locks_async.lock_acquire(conn, "k", "holder", timedelta(minutes=1))

        async def contend() -> tuple[Lease, float]:
            async with client.lock("k", wait=timedelta(seconds=30)) as lease:
                return lease, time.monotonic()

        async def waiting() -> bool:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'active' AND query LIKE '%pgcoord.lock_acquire(%'"
                " AND pid <> pg_backend_pid()"
            )
            row = await cur.fetchone()
            return row is not None and row[0] == 1

        contender = asyncio.create_task(contend())
        await wait_until(waiting, "the contender to wait in lock_acquire")
        assert not contender.done()
        released_at = time.monotonic()
        assert await locks_async.lock_release(conn, "k", "holder")
        lease, granted_at = await asyncio.wait_for(contender, 10)
        assert granted_at - released_at < 1.0
        assert lease.token > holder.token and lease.released is True

    run(test, db_url)


def test_one_winner_per_round_among_concurrent_contenders(db_url: str) -> None:
    contenders, rounds = 8, 15

    async def contend(
        client: AsyncClient, key: str, start: asyncio.Barrier, answered: asyncio.Barrier
    ) -> Lease | LockNotAcquired:
        await start.wait()
        try:
            async with client.lock(key) as lease:
                await answered.wait()
                return lease
        except LockNotAcquired as refused:
            await answered.wait()
            return refused

    async def test(client: AsyncClient, conn: psycopg.AsyncConnection[Any]) -> None:
        for n in range(rounds):
            key = f"race-{n}"
            start, answered = asyncio.Barrier(contenders), asyncio.Barrier(contenders)
            calls = [contend(client, key, start, answered) for _ in range(contenders)]
            outcomes = await asyncio.gather(*calls)
            winners = [o for o in outcomes if isinstance(o, Lease)]
            assert len(winners) == 1, outcomes
            for refused in outcomes:
                if isinstance(refused, LockNotAcquired):
                    holder = refused.holder
                    assert (holder.owner, holder.token) == (winners[0].owner, winners[0].token)
            assert await client.lock_status() == []

    run(test, db_url, max_size=contenders)
