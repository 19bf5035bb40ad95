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

from pgcoord import (
    campaigns,
    campaigns_async,
    inbox,
    inbox_async,
    locks,
    locks_async,
    rates,
    rates_async,
)

NOW = timedelta(0)
LEASE = timedelta(minutes=1)
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
    yield "buffer_fail_for_good", ("c", batch.claim_token, "blocked")
    yield "buffer_revive", ("c",)
    [batch] = yield "buffer_claim", ("w",)
    yield "buffer_complete", ("c", batch.claim_token)
    yield "buffer_revive", ("c",)
    yield "buffer_status", ()
    yield "message_prune", (timedelta(days=1),)
    run_id = yield "campaign_create", (f"run-{round_}",)
    recipients = [{"recipient": f"+{i}"} for i in range(6)]
    yield "campaign_enqueue", (run_id, recipients)
    yield "campaign_enqueue_once", (run_id, f"batch-{round_}", recipients)
    yield "campaign_due_in", (run_id,)
    yield "campaign_idle", (run_id,)
    yield "campaign_busy", (run_id,)
    [a, b] = yield "campaign_claim", ("w", 2, LEASE, run_id)
    yield "campaign_extend", (a.message_id, a.claim_token)
    yield "campaign_complete", (a.message_id, a.claim_token, {"ms": 1})
    yield "campaign_snooze", (b.message_id, b.claim_token, NOW)
    [c, d] = yield "campaign_claim", ("w", 2, LEASE, run_id)
    yield "campaign_complete_many", ([c.message_id], [c.claim_token])
    yield "campaign_release", (d.message_id, d.claim_token)
    [e] = yield "campaign_claim", ("w", 1, LEASE, run_id)
    yield "campaign_completed", ([e.message_id], [e.claim_token])
    [f] = yield "campaign_claim", ("w", 1, LEASE, run_id)
    _, [g] = yield (
        "campaign_completed_then_claim",
        ([f.message_id], [f.claim_token], None, "w", 1, LEASE, run_id),
    )
    yield "campaign_fail", (g.message_id, g.claim_token, "boom", NOW)
    [h] = yield "campaign_claim", ("w", 1, LEASE, run_id)
    yield "campaign_fail_in", (h.message_id, h.claim_token, "boom", NOW)
    [i] = yield "campaign_claim", ("w", 1, LEASE, run_id)
    yield "campaign_fail_for_good", (i.message_id, i.claim_token, "no such number")
    yield "campaign_skip_stale", (timedelta(days=1),)
    yield "campaign_progress", (run_id,)
    yield "campaign_stats", (run_id,)
    yield "campaign_set_status", (run_id, "cancelled")
    yield "campaign_prune", (timedelta(days=1),)
    yield "rate_acquire", ("k", 10.0, 5)
    yield "rate_pause", ("k", NOW)
    yield "rate_status", ()


def calls_of(*modules: ModuleType) -> dict[str, Callable[..., Any]]:
    """The call functions each module defines (its public ones), by name."""
    return {
        name: value
        for module in modules
        for name, value in vars(module).items()
        if inspect.isfunction(value)
        and value.__module__ == module.__name__
        and not name.startswith("_")
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
    calls = calls_of(locks, inbox, campaigns, rates)
    with psycopg.connect(db_url, autocommit=True, prepare_threshold=0) as conn:
        called = walk(lambda name, *args: calls[name](conn, *args))
        prepared = [conn.execute(PREPARED, prepare=False).fetchall()]
        conn.execute(PREPARES)
        prepared.append([row[1] for row in conn.execute(PREPARED, prepare=False)])
    check(calls, called, prepared)


def test_async_calls_never_prepare_on_a_connection_that_prepares_everything(
    db_url: str,
) -> None:
    calls = calls_of(locks_async, inbox_async, campaigns_async, rates_async)
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
