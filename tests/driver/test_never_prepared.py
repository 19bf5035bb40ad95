"""No call ever prepares a statement on the server, whatever the caller's connection's
prepare_threshold: prepared statements break behind transaction-mode poolers (PgBouncer),
where the next transaction may run on another server connection."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Generator
from datetime import timedelta
from types import ModuleType
from typing import Any

import psycopg

from pgcoord import inbox, inbox_async, locks, locks_async

NOW = timedelta(0)
ROUNDS = 2
PREPARED = "SELECT name, statement FROM pg_prepared_statements"
# the call that shows the connection does prepare what it is given
PREPARES = "SELECT pgcoord.version()"

Steps = Generator[tuple[str, tuple[Any, ...]], Any, None]


def steps(round_: int) -> Steps:
    """Every call once, in an order where each has something to act on: yields (name,
    arguments after the connection) and receives the call's result."""
    grant = yield "lock_acquire", ("k", "me")
    yield "lock_extend", ("k", "me")
    yield "lock_is_current", ("k", grant.token)
    yield "lock_status", ()
    yield "lock_release", ("k", "me")
    ingested = yield "message_ingest", ("p", f"m{round_}", "c", "hello", None, NOW, NOW)
    yield "message_payloads", ([ingested.message_id],)
    yield "buffer_due_in", ()
    [batch] = yield "buffer_claim_with_payloads", ("w",)
    yield "buffer_release", ("c", batch.claim_token)
    [batch] = yield "buffer_claim", ("w",)
    yield "buffer_extend", ("c", batch.claim_token)
    yield "buffer_fail", ("c", batch.claim_token, "boom", NOW)
    [batch] = yield "buffer_claim", ("w",)
    yield "buffer_release", ("c", batch.claim_token)
    [batch] = yield "buffer_claim", ("w",)
    yield "buffer_complete", ("c", batch.claim_token)
    yield "buffer_revive", ("c",)
    yield "buffer_status", ()
    yield "message_prune", (timedelta(days=1),)


def calls_of(*modules: ModuleType) -> dict[str, Callable[..., Any]]:
    """The call functions each module defines, by name."""
    return {
        name: value
        for module in modules
        for name, value in vars(module).items()
        if inspect.isfunction(value) and value.__module__ == module.__name__
    }


def walk(call: Callable[..., Any]) -> list[str]:
    """Run the steps ROUNDS times through `call(name, *args)`; the names called, in order."""
    called = []
    for round_ in range(ROUNDS):
        walker, result = steps(round_), None
        while True:
            try:
                name, args = walker.send(result)
            except StopIteration:
                break
            result = call(name, *args)
            called.append(name)
    return called


def check(calls: dict[str, Any], called: list[str], prepared: list[Any]) -> None:
    """Every call ran ROUNDS times or more, and left no prepared statement behind, while
    the control statement run after them was prepared."""
    assert sorted(set(called)) == sorted(calls)
    assert all(called.count(name) >= ROUNDS for name in calls)
    assert prepared == [[], [PREPARES]]


def test_sync_calls_never_prepare_on_a_connection_that_prepares_everything(db_url: str) -> None:
    calls = calls_of(locks, inbox)
    with psycopg.connect(db_url, autocommit=True, prepare_threshold=0) as conn:
        called = walk(lambda name, *args: calls[name](conn, *args))
        prepared = [conn.execute(PREPARED, prepare=False).fetchall()]
        conn.execute(PREPARES)
        prepared.append([row[1] for row in conn.execute(PREPARED, prepare=False)])
    check(calls, called, prepared)


def test_async_calls_never_prepare_on_a_connection_that_prepares_everything(
    db_url: str,
) -> None:
    calls = calls_of(locks_async, inbox_async)
    loop = asyncio.new_event_loop()
    run = loop.run_until_complete

    async def statements(conn: psycopg.AsyncConnection[Any]) -> list[Any]:
        return await (await conn.execute(PREPARED, prepare=False)).fetchall()

    try:
        conn = run(psycopg.AsyncConnection.connect(db_url, autocommit=True, prepare_threshold=0))
        try:
            called = walk(lambda name, *args: run(calls[name](conn, *args)))
            prepared = [run(statements(conn))]
            run(conn.execute(PREPARES))
            prepared.append([row[1] for row in run(statements(conn))])
        finally:
            run(conn.close())
    finally:
        loop.close()
    check(calls, called, prepared)
