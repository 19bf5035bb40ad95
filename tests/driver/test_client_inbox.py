"""The inbox calls of Client and AsyncClient: the calls of `inbox` / `inbox_async` over a
pooled connection, with the same names, arguments and typed results."""

from __future__ import annotations

import asyncio
import inspect
from datetime import datetime, timedelta
from typing import Any

import pytest

from pgcoord import (
    AsyncClient,
    Batch,
    BufferStatus,
    Client,
    Conflict,
    Ingested,
    InvalidArgument,
    inbox,
    inbox_async,
)

CALLS = [
    "message_ingest",
    "buffer_claim",
    "buffer_complete",
    "buffer_fail",
    "buffer_extend",
    "buffer_due_in",
    "buffer_status",
    "buffer_release",
    "message_prune",
    "buffer_revive",
]
NOW = timedelta(0)
HOUR = timedelta(hours=1)


def signature(func: Any, skip: int) -> tuple[list[tuple[str, Any, Any]], dict[str, Any]]:
    """Parameters (name, kind, default) after the first `skip`, and the annotations but
    the connection's."""
    params = list(inspect.signature(func).parameters.values())[skip:]
    hints = {k: v for k, v in inspect.get_annotations(func).items() if k != "conn"}
    return [(p.name, p.kind, p.default) for p in params], hints


@pytest.mark.parametrize("name", CALLS)
def test_client_calls_are_the_inbox_calls_without_the_connection(name: str) -> None:
    assert signature(getattr(Client, name), skip=1) == signature(getattr(inbox, name), skip=1)
    assert signature(getattr(AsyncClient, name), skip=1) == signature(
        getattr(inbox_async, name), skip=1
    )
    assert inspect.iscoroutinefunction(getattr(AsyncClient, name))
    assert not inspect.iscoroutinefunction(getattr(Client, name))


def check_round(calls: list[Any]) -> None:
    """The results of one round of calls (see the two tests below)."""
    first, repeat, claimed, extended, failed, due_in, status, again, done, stale, end = calls
    assert type(first) is Ingested and first.duplicate is False
    assert repeat == Ingested(first.message_id, True, first.received_at)
    [burst] = claimed
    assert type(burst) is Batch
    assert (burst.conversation_key, burst.bodies, burst.attempt) == ("c", ["hello"], 1)
    assert burst.message_ids == [first.message_id]
    assert isinstance(extended, datetime) and extended.tzinfo is not None
    assert failed is True
    assert due_in == NOW  # given back with no delay: due now
    [row] = status
    assert type(row) is BufferStatus
    assert (row.conversation_key, row.attempt, row.last_error, row.claimed_by) == (
        "c",
        1,
        "try again",
        None,
    )
    [retry] = again
    assert (retry.attempt, retry.message_ids) == (2, burst.message_ids)
    assert retry.claim_token > burst.claim_token
    assert done is True
    assert stale is False  # the first claim is no longer current
    assert end == []


def test_sync_client_inbox_round(client: Client) -> None:
    calls: list[Any] = [
        client.message_ingest("p", "m1", "c", "hello", {"k": 1}, debounce=NOW),
        client.message_ingest("p", "m1", "c", "hello", debounce=NOW),
    ]
    [burst] = claimed = client.buffer_claim("w", 5, HOUR)
    calls += [
        claimed,
        client.buffer_extend("c", burst.claim_token, HOUR),
        client.buffer_fail("c", burst.claim_token, "try again", NOW),
        client.buffer_due_in(),
        client.buffer_status(),
    ]
    [retry] = again = client.buffer_claim("w")
    calls += [
        again,
        client.buffer_complete("c", retry.claim_token),
        client.buffer_complete("c", burst.claim_token),
        client.buffer_status(),
    ]
    check_round(calls)


def test_async_client_inbox_round(db_url: str) -> None:
    async def main() -> None:
        async with AsyncClient(db_url) as client:
            calls: list[Any] = [
                await client.message_ingest("p", "m1", "c", "hello", {"k": 1}, debounce=NOW),
                await client.message_ingest("p", "m1", "c", "hello", debounce=NOW),
            ]
            [burst] = claimed = await client.buffer_claim("w", 5, HOUR)
            calls += [
                claimed,
                await client.buffer_extend("c", burst.claim_token, HOUR),
                await client.buffer_fail("c", burst.claim_token, "try again", NOW),
                await client.buffer_due_in(),
                await client.buffer_status(),
            ]
            [retry] = again = await client.buffer_claim("w")
            calls += [
                again,
                await client.buffer_complete("c", retry.claim_token),
                await client.buffer_complete("c", burst.claim_token),
                await client.buffer_status(),
            ]
            check_round(calls)

    asyncio.run(main())


def test_client_inbox_errors_are_mapped(client: Client, db_url: str) -> None:
    client.message_ingest("p", "m1", "c", "hello")
    with pytest.raises(Conflict) as conflict:
        client.message_ingest("p", "m1", "c", "changed")
    assert conflict.value.sqlstate == "23505"
    with pytest.raises(InvalidArgument) as invalid:
        client.buffer_claim("")
    assert invalid.value.sqlstate == "22023"
    assert str(invalid.value).startswith("p_worker must")

    async def main() -> None:
        async with AsyncClient(db_url) as aclient:
            with pytest.raises(InvalidArgument) as caught:
                await aclient.buffer_claim("w", 0)
            assert str(caught.value).startswith("p_limit must")

    asyncio.run(main())


def test_clients_release_and_prune(client: Client, db_url: str) -> None:
    client.message_ingest("p", "m1", "c", "hello", debounce=NOW)
    [burst] = client.buffer_claim("w")
    assert client.buffer_release("c", burst.claim_token) is True
    assert client.buffer_release("c", burst.claim_token) is False
    [again] = client.buffer_claim("w")
    assert again.attempt == 1, "a release is not a failed try"
    assert client.buffer_complete("c", again.claim_token)
    assert client.message_prune(HOUR) == 0, "younger than an hour"

    async def main() -> int:
        async with AsyncClient(db_url) as aclient:
            return await aclient.message_prune(timedelta(microseconds=1), limit=5)

    assert asyncio.run(main()) == 1
    assert client.message_prune(timedelta(microseconds=1)) == 0
