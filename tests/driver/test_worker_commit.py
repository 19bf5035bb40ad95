"""complete_in inside a handler's transaction that rolls back: the completion rolls back
with the handler's writes, and the worker finds out and gives the batch back at once,
with the handler's error, instead of leaving it to its lease."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import psycopg
import pytest
from workerkit import Inbox, run, running, wait_until, worker

from pgcoord import complete_in
from pgcoord.types import Batch


def test_a_completion_rolled_back_with_the_handler_is_given_back_with_its_error(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(inbox: Inbox) -> None:
        await inbox.conn.execute("CREATE TABLE replies (conversation text, reply text)")
        await inbox.ingest("r", "hi")
        tries: list[int] = []

        async def handler(batch: Batch) -> None:
            tries.append(batch.attempt)
            async with (
                await psycopg.AsyncConnection.connect(db_url) as conn,
                conn.transaction(),
            ):
                await conn.execute("INSERT INTO replies VALUES ('r', 'hello')")
                await complete_in(conn, batch)
                if batch.attempt == 1:
                    raise ValueError("the reply could not be stored")

        # a lease far longer than the test: only a give-back explains a quick retry
        w = worker(handler, db_url, lease=timedelta(seconds=60), retry_in=timedelta(0))
        async with running(w):

            async def second_try() -> bool:
                return tries == [1, 2] and await inbox.status() == []

            await asyncio.wait_for(wait_until(second_try, "the second try to complete"), 20)
        cur = await inbox.conn.execute("SELECT reply FROM replies")
        assert await cur.fetchall() == [("hello",)]  # the first try's insert rolled back
        assert await inbox.states() == {"hi": ["done"]}
        assert (w.processed, w.failed) == (1, 1)
        given_back = [
            r.getMessage() for r in caplog.records if r.getMessage().startswith("gave back")
        ]
        assert given_back == [
            "gave back 'r' (attempt 1, retry in 0 s): ValueError: the reply could not be stored"
        ]

    with caplog.at_level(logging.WARNING, logger="pgcoord.worker"):
        run(test, db_url)


def test_a_handler_that_returns_without_committing_its_completion_is_retried(
    db_url: str,
) -> None:
    async def test(inbox: Inbox) -> None:
        await inbox.ingest("u", "hi")
        tries: list[int] = []

        async def handler(batch: Batch) -> None:
            tries.append(batch.attempt)
            conn = await psycopg.AsyncConnection.connect(db_url)
            await complete_in(conn, batch)  # autocommit off: a transaction is open
            if batch.attempt == 1:
                await conn.rollback()  # ... and the handler forgets to commit it
            else:
                await conn.commit()
            await conn.close()

        w = worker(handler, db_url, lease=timedelta(seconds=60), retry_in=timedelta(0))
        async with running(w):

            async def second_try() -> bool:
                return tries == [1, 2] and await inbox.status() == []

            await asyncio.wait_for(wait_until(second_try, "the second try to complete"), 20)
        assert (w.processed, w.failed) == (1, 1)

    run(test, db_url)
