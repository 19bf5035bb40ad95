"""The messages' payloads: `message_payloads` on a connection and through the clients, and
`BufferWorker(payloads=True)`, whose handler gets each batch with the payloads of its
messages, read in the claim's own statement (one round trip per claim, as without)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from test_round_trips import assert_one_round_trip, traced
from workerkit import HOUR, Inbox, run, running, settled, wait_until, worker

from pgcoord import AsyncClient, Client, inbox, inbox_async
from pgcoord.types import Batch, BatchWithPayloads
from pgcoord.worker import BufferWork, BufferWorker

NOW = timedelta(0)


def test_message_payloads_sync_by_id_in_the_order_asked(
    conn: psycopg.Connection[Any], client: Client
) -> None:
    first = inbox.message_ingest(conn, "wa", "m1", "c", "hi", {"profile": "Ana"})
    second = inbox.message_ingest(conn, "wa", "m2", "c", "ho")
    ids = [second.message_id, first.message_id, first.message_id + 100]
    for found in (inbox.message_payloads(conn, ids), client.message_payloads(ids)):
        assert list(found.items()) == [
            (second.message_id, {}),
            (first.message_id, {"profile": "Ana"}),
        ]
    assert client.message_payloads([]) == {}


def test_message_payloads_async(db_url: str) -> None:
    async def main() -> None:
        async with (
            await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn,
            AsyncClient(db_url) as client,
        ):
            sent = await inbox_async.message_ingest(conn, "wa", "m1", "c", "hi", {"n": [1, 2]})
            expected = {sent.message_id: {"n": [1, 2]}}
            assert await inbox_async.message_payloads(conn, [sent.message_id]) == expected
            assert await client.message_payloads([sent.message_id]) == expected

    asyncio.run(main())


def test_the_handler_gets_each_batch_with_its_payloads_in_message_order(db_url: str) -> None:
    async def test(messages: Inbox) -> None:
        sent: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for n in range(3):
            for key in ("a", "b", "c"):
                payload = {"key": key, "n": n} if key != "c" else {}
                ingested = await inbox_async.message_ingest(
                    messages.conn, "wa", f"{key}{n}", key, f"{key} #{n}", payload, NOW, HOUR
                )
                sent.setdefault(key, []).append((ingested.message_id, payload))
        calls: list[tuple[Batch, list[dict[str, Any]]]] = []

        async def handler(batch: Batch, payloads: list[dict[str, Any]]) -> None:
            calls.append((batch, payloads))

        w = worker(handler, db_url, payloads=True)
        async with running(w):
            await wait_until(lambda: settled(messages), "every batch answered")
        assert sorted(
            (batch.conversation_key, list(zip(batch.message_ids, payloads, strict=True)))
            for batch, payloads in calls
        ) == sorted(sent.items())
        assert all(isinstance(batch, BatchWithPayloads) for batch, _ in calls)
        assert w.processed == 3

    run(test, db_url)


def test_without_the_option_the_handler_gets_the_plain_batch(db_url: str) -> None:
    async def test(messages: Inbox) -> None:
        await messages.ingest("a", "a1")
        calls: list[Batch] = []

        async def handler(batch: Batch) -> None:
            calls.append(batch)

        async with running(worker(handler, db_url)):
            await wait_until(lambda: settled(messages), "the batch answered")
        assert [type(batch) for batch in calls] == [Batch]

    run(test, db_url)


def test_a_claim_with_payloads_is_one_round_trip(db_url: str) -> None:
    async def main() -> None:
        async with (
            await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn,
        ):
            for n in range(3):
                await inbox_async.message_ingest(conn, "wa", f"m{n}", f"c{n}", "x", {"n": n}, NOW)
            with traced(conn.pgconn) as trace:
                batches = await BufferWork(payloads=True).claim(conn, "w", 10, HOUR)
            assert_one_round_trip(trace, "buffer_claim with payloads")
            found = [b.payloads for b in batches if isinstance(b, BatchWithPayloads)]
            assert sorted(found, key=str) == [
                [{"n": 0}],
                [{"n": 1}],
                [{"n": 2}],
            ]

    asyncio.run(main())


def test_the_handler_must_take_what_the_option_gives() -> None:
    async def one(batch: Batch) -> None:
        pass

    async def two(batch: Batch, payloads: list[dict[str, Any]]) -> None:
        pass

    with pytest.raises(TypeError, match=r"payloads=True the handler takes two arguments"):
        BufferWorker(one, "dbname=unused", payloads=True)
    with pytest.raises(TypeError, match=r"handler of \(batch, payloads\) needs payloads=True"):
        BufferWorker(two, "dbname=unused")
    BufferWorker(two, "dbname=unused", payloads=True)
    BufferWorker(one, "dbname=unused")
