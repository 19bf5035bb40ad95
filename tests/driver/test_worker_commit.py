"""complete_in inside a handler's transaction that rolls back: the completion rolls back
with the handler's writes, and the worker finds out and gives the batch back at once,
with the handler's error, instead of leaving it to its lease."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import psycopg
import pytest
from workerkit import HOUR, Inbox, run, running, wait_until, worker

from pgcoord import complete_in, inbox_async
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


def test_a_completion_rolled_back_then_taken_over_is_not_said_done(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """complete_in, then the handler's transaction rolls back, and another worker claims
    the batch meanwhile (no heartbeat runs after complete_in, so the lease ran out): the
    worker finds the claim gone, as after a commit, but the batch held by another claim.
    It neither counts it completed nor touches the other claim."""

    async def test(inbox: Inbox) -> None:
        await inbox.ingest("t", "hi")
        taken: list[Batch] = []

        async def handler(batch: Batch) -> None:
            async with await psycopg.AsyncConnection.connect(db_url) as conn:
                await complete_in(conn, batch)  # in a transaction: not committed yet
                await conn.rollback()
            await inbox.conn.execute(
                "UPDATE pgcoord.buffers SET claimed_until = clock_timestamp() - interval '1 s',"
                " due_at = clock_timestamp() - interval '1 s' WHERE conversation_key = 't'"
            )
            taken.extend(await inbox_async.buffer_claim(inbox.conn, "other", 1, HOUR))

        w = worker(handler, db_url, lease=timedelta(seconds=60))
        with caplog.at_level(logging.INFO, logger="pgcoord.worker"):
            async with running(w):

                async def settled() -> bool:
                    return "no longer current" in caplog.text

                await wait_until(settled, "the worker to find the batch another's")
        assert [b.conversation_key for b in taken] == ["t"]
        assert (w.processed, w.failed) == (0, 0)
        row = await inbox.row("t")
        assert row.claimed_by == "other" and row.attempt == 2
        assert "completed 't'" not in caplog.text

    run(test, db_url)
