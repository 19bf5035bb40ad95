"""The driver's surface: sync and async twins, typed results, errors mapped by SQLSTATE,
pools owned or borrowed."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgcoord import (
    AsyncClient,
    Client,
    InvalidArgument,
    Lock,
    LockStatus,
    NullArgument,
    locks,
    locks_async,
)

CALLS = ["lock_acquire", "lock_release", "lock_extend", "lock_is_current", "lock_status"]
# the clients' inbox calls (tests/driver/test_client_inbox.py)
INBOX_CALLS = [
    "message_ingest",
    "buffer_claim",
    "buffer_complete",
    "buffer_fail",
    "buffer_fail_for_good",
    "buffer_extend",
    "buffer_release",
    "buffer_revive",
    "message_prune",
    "message_payloads",
    "buffer_claim_with_payloads",
    "buffer_due_in",
    "buffer_status",
]
# the clients' campaign and rate-limit calls (tests/driver/test_client_campaigns.py)
CAMPAIGN_CALLS = [
    "campaign_create",
    "campaign_set_status",
    "campaign_enqueue",
    "campaign_enqueue_once",
    "campaign_claim",
    "campaign_complete",
    "campaign_complete_many",
    "campaign_fail",
    "campaign_fail_for_good",
    "campaign_snooze",
    "campaign_extend",
    "campaign_release",
    "campaign_skip_stale",
    "campaign_due_in",
    "campaign_progress",
    "campaign_stats",
    "campaign_prune",
    "rate_acquire",
    "rate_pause",
    "rate_status",
]


def public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def parameters(func: Any, skip: int = 0) -> list[tuple[str, Any, Any]]:
    """Name, kind and default of each parameter after the first `skip`."""
    params = list(inspect.signature(func).parameters.values())[skip:]
    return [(p.name, p.kind, p.default) for p in params]


def test_sync_and_async_clients_have_the_same_methods() -> None:
    assert public(Client) == public(AsyncClient)
    calls = {*CALLS, *INBOX_CALLS, *CAMPAIGN_CALLS}
    assert calls | {"lock", "open", "close", "pool"} == public(Client)
    for name in public(Client) - {"pool"}:
        assert parameters(getattr(Client, name)) == parameters(getattr(AsyncClient, name)), name
    for name in [*CALLS, *INBOX_CALLS, *CAMPAIGN_CALLS, "open", "close"]:
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name
        assert not inspect.iscoroutinefunction(getattr(Client, name)), name


def test_async_calls_mirror_the_sync_calls_and_the_clients_drop_only_the_connection() -> None:
    for name in CALLS:
        sync_call, async_call = getattr(locks, name), getattr(locks_async, name)
        assert inspect.iscoroutinefunction(async_call), name
        assert parameters(async_call) == parameters(sync_call), name
        sync_hints = inspect.get_annotations(sync_call)
        async_hints = inspect.get_annotations(async_call)
        assert sync_hints.pop("conn") == "psycopg.Connection[Any]"
        assert async_hints.pop("conn") == "psycopg.AsyncConnection[Any]"
        assert async_hints == sync_hints, name
        assert parameters(getattr(Client, name), skip=1) == parameters(sync_call, skip=1), name
        client_hints = inspect.get_annotations(getattr(Client, name))
        assert client_hints == sync_hints, name


def check_typed(
    lock: Any, extended: Any, current: Any, status: Any, released: Any, owner: str
) -> None:
    assert type(lock) is Lock and dataclasses.is_dataclass(lock)
    assert lock.acquired is True and lock.owner == owner and lock.took_over is False
    assert type(lock.token) is int and isinstance(lock.expires_at, datetime)
    assert lock.expires_at.tzinfo is not None
    assert isinstance(extended, datetime) and extended >= lock.expires_at
    assert current is True
    assert len(status) == 1 and type(status[0]) is LockStatus
    assert (status[0].key, status[0].owner, status[0].token) == ("k", owner, lock.token)
    assert status[0].expired is False
    assert released is True


def test_sync_results_are_typed_dataclasses(client: Client) -> None:
    lock = client.lock_acquire("k", "me", timedelta(seconds=10))
    extended = client.lock_extend("k", "me", timedelta(seconds=20))
    current = client.lock_is_current("k", lock.token)
    status = client.lock_status()
    released = client.lock_release("k", "me")
    check_typed(lock, extended, current, status, released, "me")
    assert client.lock_extend("k", "me") is None
    assert client.lock_is_current("k", lock.token) is False
    assert client.lock_release("k", "me") is False
    assert client.lock_status() == []


def test_async_results_are_typed_dataclasses(db_url: str) -> None:
    async def main() -> None:
        async with AsyncClient(db_url) as client:
            lock = await client.lock_acquire("k", "me", timedelta(seconds=10))
            extended = await client.lock_extend("k", "me", timedelta(seconds=20))
            current = await client.lock_is_current("k", lock.token)
            status = await client.lock_status()
            released = await client.lock_release("k", "me")
            check_typed(lock, extended, current, status, released, "me")
            assert await client.lock_extend("k", "me") is None
            assert await client.lock_is_current("k", lock.token) is False
            assert await client.lock_release("k", "me") is False
            assert await client.lock_status() == []

    asyncio.run(main())


def bad_calls(client: Any) -> list[tuple[Any, type[Exception], str, str]]:
    """(call, exception, sqlstate, argument named in the message); no Python checks."""
    return [
        (lambda: client.lock_acquire("", "o"), InvalidArgument, "22023", "p_key"),
        (lambda: client.lock_release("", "o"), InvalidArgument, "22023", "p_key"),
        (lambda: client.lock_extend("", "o"), InvalidArgument, "22023", "p_key"),
        (lambda: client.lock_is_current("", 1), InvalidArgument, "22023", "p_key"),
        (lambda: client.lock_acquire("k", None), NullArgument, "22004", "p_owner"),
        (lambda: client.lock_extend("k", None), NullArgument, "22004", "p_owner"),
        (lambda: client.lock_is_current("k", None), NullArgument, "22004", "p_token"),
        (lambda: client.lock_acquire("k", "o", timedelta(0)), InvalidArgument, "22023", "p_ttl"),
        (
            lambda: client.lock_acquire("k", "o", wait=timedelta(seconds=-1)),
            InvalidArgument,
            "22023",
            "p_wait",
        ),
    ]


def check_error(exc: BaseException, cls: type[Exception], sqlstate: str, argument: str) -> None:
    assert type(exc) is cls
    assert isinstance(exc, InvalidArgument)
    assert exc.sqlstate == sqlstate
    assert str(exc).startswith(argument + " must")
    assert isinstance(exc.__cause__, psycopg.Error)
    assert exc.__cause__.sqlstate == sqlstate


def test_sync_errors_are_mapped_by_sqlstate(client: Client) -> None:
    for call, cls, sqlstate, argument in bad_calls(client):
        with pytest.raises(InvalidArgument) as caught:
            call()
        check_error(caught.value, cls, sqlstate, argument)
    assert client.lock_status() == []


def test_async_errors_are_mapped_by_sqlstate(db_url: str) -> None:
    async def main() -> None:
        async with AsyncClient(db_url) as client:
            for call, cls, sqlstate, argument in bad_calls(client):
                with pytest.raises(InvalidArgument) as caught:
                    await call()
                check_error(caught.value, cls, sqlstate, argument)
            assert await client.lock_status() == []

    asyncio.run(main())


def test_lock_leaves_argument_checks_to_the_server(client: Client) -> None:
    for kwargs, argument in [
        ({"key": ""}, "p_key"),
        ({"key": "k", "owner": ""}, "p_owner"),
        ({"key": "k", "ttl": timedelta(0)}, "p_ttl"),
        ({"key": "k", "wait": timedelta(seconds=-1)}, "p_wait"),
    ]:
        with pytest.raises(InvalidArgument) as caught, client.lock(**kwargs):
            pytest.fail("entered a lock the server refused")
        check_error(caught.value, InvalidArgument, "22023", argument)
    with pytest.raises(ValueError, match="heartbeat"), client.lock("k", heartbeat=timedelta(0)):
        pytest.fail("entered a lock with a zero heartbeat")
    assert client.lock_status() == []


def test_async_lock_leaves_argument_checks_to_the_server(db_url: str) -> None:
    async def main() -> None:
        async with AsyncClient(db_url) as client:
            with pytest.raises(InvalidArgument) as caught:
                async with client.lock("k", ttl=timedelta(seconds=-1)):
                    pytest.fail("entered a lock the server refused")
            check_error(caught.value, InvalidArgument, "22023", "p_ttl")
            with pytest.raises(NullArgument) as caught:
                async with client.lock(None):  # type: ignore[arg-type]
                    pytest.fail("entered a lock the server refused")
            check_error(caught.value, NullArgument, "22004", "p_key")
            assert await client.lock_status() == []

    asyncio.run(main())


def test_an_owned_pool_is_closed_and_a_borrowed_one_is_not(db_url: str) -> None:
    with Client(db_url) as owner_of_pool:
        assert owner_of_pool.lock_status() == []
    assert owner_of_pool.pool.closed

    with ConnectionPool(db_url, kwargs={"autocommit": True}, min_size=1, open=True) as pool:
        with Client(pool=pool) as borrower:
            assert borrower.pool is pool
            assert borrower.lock_acquire("k", "me").acquired
        assert not pool.closed
        with pool.connection() as conn:
            assert locks.lock_release(conn, "k", "me")

    with pytest.raises(TypeError):
        Client(db_url, pool=pool)


def test_async_owned_pool_is_closed_and_a_borrowed_one_is_not(db_url: str) -> None:
    async def main() -> None:
        async with AsyncClient(db_url) as owner_of_pool:
            assert await owner_of_pool.lock_status() == []
        assert owner_of_pool.pool.closed

        pool = AsyncConnectionPool(db_url, kwargs={"autocommit": True}, min_size=1, open=False)
        async with pool:
            async with AsyncClient(pool=pool) as borrower:
                assert borrower.pool is pool
                assert (await borrower.lock_acquire("k", "me")).acquired
            assert not pool.closed
            async with pool.connection() as conn:
                assert await locks_async.lock_release(conn, "k", "me")

    asyncio.run(main())
