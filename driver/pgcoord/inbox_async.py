"""Inbound messages and debounce buffers over the caller's psycopg.AsyncConnection: one
statement, one round trip per call, never prepared on the server.

A webhook handler calls `message_ingest` once per inbound message; workers claim due
batches with `buffer_claim` and finish each with `buffer_complete` or `buffer_fail`
(`worker.BufferWorker` runs that loop).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg

from . import arguments, query_async, sql
from .arrays import bigints
from .config import (
    BUFFER_CLAIM_LIMIT,
    BUFFER_LEASE,
    BUFFER_RETRY_IN,
    INGEST_DEBOUNCE,
    INGEST_MAX_WAIT,
    PRUNE_LIMIT,
)
from .jsonb import jsonb
from .types import Batch, BatchWithPayloads, BufferStatus, Ingested, MessagePayload


async def message_ingest(
    conn: psycopg.AsyncConnection[Any],
    provider: str,
    provider_message_id: str,
    conversation_key: str,
    body: str,
    payload: Mapping[str, Any] | None = None,
    debounce: timedelta = INGEST_DEBOUNCE,
    max_wait: timedelta = INGEST_MAX_WAIT,
) -> Ingested:
    """Store the message once and buffer it: its conversation's batch is due `debounce`
    after its last message, and at most `max_wait` after its first. A repeat of
    (provider, provider_message_id) returns the original with `duplicate` True. Raises
    `Conflict` when the repeat has a different conversation key or body."""
    try:
        payload = dict(payload) if payload is not None else {}
    except (TypeError, ValueError) as exc:
        raise arguments.retyped(exc) from None
    stored = jsonb(payload, "message_ingest: payload")
    params = {
        "provider": provider,
        "provider_message_id": provider_message_id,
        "conversation_key": conversation_key,
        "body": body,
        "payload": stored,
        "debounce": debounce,
        "max_wait": max_wait,
    }
    return await query_async.one(conn, Ingested, sql.MESSAGE_INGEST, params)


async def message_prune(
    conn: psycopg.AsyncConnection[Any], older_than: timedelta, limit: int = PRUNE_LIMIT
) -> int:
    """Delete up to `limit` answered messages received more than `older_than` ago, oldest
    first; return how many. Keep messages longer than the provider retries: a retry of
    a pruned message is stored as a new one."""
    params = {"older_than": older_than, "limit": limit}
    return int(await query_async.value(conn, sql.MESSAGE_PRUNE, params) or 0)


async def message_payloads(
    conn: psycopg.AsyncConnection[Any], message_ids: Sequence[int]
) -> dict[int, dict[str, Any]]:
    """The stored payloads of the messages, by message id, in the order of `message_ids`
    (at most 10000; an id with no stored message is left out)."""
    params = {"message_ids": bigints(message_ids)}
    found = await query_async.rows(conn, MessagePayload, sql.MESSAGE_PAYLOADS, params)
    return {row.message_id: row.payload for row in found}


async def buffer_claim(
    conn: psycopg.AsyncConnection[Any],
    worker: str,
    limit: int = BUFFER_CLAIM_LIMIT,
    lease: timedelta = BUFFER_LEASE,
) -> list[Batch]:
    """Up to `limit` due conversations, each held by this claim until `lease` runs out."""
    params = {"worker": worker, "limit": limit, "lease": lease}
    return await query_async.rows(conn, Batch, sql.BUFFER_CLAIM, params)


async def buffer_claim_with_payloads(
    conn: psycopg.AsyncConnection[Any],
    worker: str,
    limit: int = BUFFER_CLAIM_LIMIT,
    lease: timedelta = BUFFER_LEASE,
) -> list[BatchWithPayloads]:
    """`buffer_claim`, each batch with the stored payloads of its messages, in the same
    statement (one round trip; the claim and the payloads arrive together or not at all)."""
    params = {"worker": worker, "limit": limit, "lease": lease}
    return await query_async.rows(conn, BatchWithPayloads, sql.BUFFER_CLAIM_WITH_PAYLOADS, params)


async def buffer_complete(
    conn: psycopg.AsyncConnection[Any], conversation_key: str, claim_token: int
) -> bool:
    """True when the claim was current and its messages are now done."""
    params = {"conversation_key": conversation_key, "claim_token": claim_token}
    return bool(await query_async.value(conn, sql.BUFFER_COMPLETE, params))


async def buffer_fail(
    conn: psycopg.AsyncConnection[Any],
    conversation_key: str,
    claim_token: int,
    error: str,
    retry_in: timedelta = BUFFER_RETRY_IN,
) -> bool:
    """True when the claim was current and its batch is given back, claimable again after
    `retry_in` (or parked as dead after its 5th failed try)."""
    params = {
        "conversation_key": conversation_key,
        "claim_token": claim_token,
        "error": error,
        "retry_in": retry_in,
    }
    return bool(await query_async.value(conn, sql.BUFFER_FAIL, params))


async def _buffer_failed(
    conn: psycopg.AsyncConnection[Any],
    conversation_key: str,
    claim_token: int,
    error: str,
    retry_in: timedelta = BUFFER_RETRY_IN,
) -> bool | None:
    """`buffer_fail`, answering how the try ended: True when the batch was parked as dead
    (its 5th failed try), False when it is back, claimable after `retry_in`; None when the
    claim is no longer current (nothing changed). Beyond the contract: a worker's fail."""
    params = {
        "conversation_key": conversation_key,
        "claim_token": claim_token,
        "error": error,
        "retry_in": retry_in,
    }
    parked: bool | None = await query_async.value(conn, sql.BUFFER_FAILED, params)
    return parked


async def buffer_fail_for_good(
    conn: psycopg.AsyncConnection[Any], conversation_key: str, claim_token: int, error: str
) -> bool:
    """A failed try that no retry can mend (the customer blocked the number, the reply
    window has closed): True when the claim was current and its batch is parked as dead
    at once with `error` kept (`buffer_revive` brings it back)."""
    params = {"conversation_key": conversation_key, "claim_token": claim_token, "error": error}
    return bool(await query_async.value(conn, sql.BUFFER_FAIL_FOR_GOOD, params))


async def buffer_extend(
    conn: psycopg.AsyncConnection[Any],
    conversation_key: str,
    claim_token: int,
    lease: timedelta = BUFFER_LEASE,
) -> datetime | None:
    """The claim's new lease end, `lease` from now, or None when the claim is no longer
    current."""
    params = {"conversation_key": conversation_key, "claim_token": claim_token, "lease": lease}
    until: datetime | None = await query_async.value(conn, sql.BUFFER_EXTEND, params)
    return until


async def buffer_release(
    conn: psycopg.AsyncConnection[Any], conversation_key: str, claim_token: int
) -> bool:
    """True when the claim was current and its batch is given back without counting a
    failed try (claimable again at once)."""
    params = {"conversation_key": conversation_key, "claim_token": claim_token}
    return bool(await query_async.value(conn, sql.BUFFER_RELEASE, params))


async def buffer_revive(conn: psycopg.AsyncConnection[Any], conversation_key: str) -> int:
    """Put the messages of the conversation's dead batches back in its buffer, due at
    once; return how many."""
    params = {"conversation_key": conversation_key}
    return int(await query_async.value(conn, sql.BUFFER_REVIVE, params) or 0)


async def buffer_due_in(conn: psycopg.AsyncConnection[Any]) -> timedelta | None:
    """How long until a buffer is due (zero: now), or None when nothing is buffered."""
    due_in: timedelta | None = await query_async.value(conn, sql.BUFFER_DUE_IN)
    return due_in


async def buffer_status(conn: psycopg.AsyncConnection[Any]) -> list[BufferStatus]:
    """Every buffered conversation and parked batch, dead ones first."""
    return await query_async.rows(conn, BufferStatus, sql.BUFFER_STATUS)
