"""Inbound messages and debounce buffers over the caller's connection: one statement,
one round trip per call (see `locks` for the connection options the clients use).

A webhook handler calls `message_ingest` once per inbound message; workers claim due
bursts with `buffer_claim` and finish each with `buffer_complete` or `buffer_fail`
(`worker.BufferWorker` runs that loop).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from . import sql
from .errors import translated
from .types import BufferStatus, Burst, Ingested

# the SQL functions' defaults
DEFAULT_DEBOUNCE = timedelta(seconds=10)
DEFAULT_MAX_WAIT = timedelta(seconds=60)
DEFAULT_CLAIM_LIMIT = 10
DEFAULT_LEASE = timedelta(seconds=60)
DEFAULT_RETRY_IN = timedelta(seconds=60)
DEFAULT_PRUNE_LIMIT = 10_000


def ingest_params(
    provider: str,
    provider_message_id: str,
    conversation_key: str,
    body: str,
    payload: Mapping[str, Any] | None,
    debounce: timedelta,
    max_wait: timedelta,
) -> dict[str, Any]:
    return {
        "provider": provider,
        "provider_message_id": provider_message_id,
        "conversation_key": conversation_key,
        "body": body,
        "payload": Jsonb(dict(payload) if payload is not None else {}),
        "debounce": debounce,
        "max_wait": max_wait,
    }


def message_ingest(
    conn: psycopg.Connection[Any],
    provider: str,
    provider_message_id: str,
    conversation_key: str,
    body: str,
    payload: Mapping[str, Any] | None = None,
    debounce: timedelta = DEFAULT_DEBOUNCE,
    max_wait: timedelta = DEFAULT_MAX_WAIT,
) -> Ingested:
    """Store the message once and buffer it; a repeat of (provider, provider_message_id)
    returns the original with `duplicate` True. Raises `Conflict` when the repeat has a
    different conversation key or body."""
    params = ingest_params(
        provider, provider_message_id, conversation_key, body, payload, debounce, max_wait
    )
    with translated(), conn.cursor(row_factory=class_row(Ingested)) as cur:
        row = cur.execute(sql.MESSAGE_INGEST, params).fetchone()
    assert row is not None  # the function always returns one row
    return row


def message_prune(
    conn: psycopg.Connection[Any], older_than: timedelta, limit: int = DEFAULT_PRUNE_LIMIT
) -> int:
    """Delete up to `limit` answered messages received more than `older_than` ago, oldest
    first; return how many. Keep messages longer than the provider retries: a retry of
    a pruned message is stored as a new one."""
    with translated():
        row = conn.execute(sql.MESSAGE_PRUNE, {"older_than": older_than, "limit": limit}).fetchone()
    return int(row[0]) if row else 0


def buffer_claim(
    conn: psycopg.Connection[Any],
    worker: str,
    limit: int = DEFAULT_CLAIM_LIMIT,
    lease: timedelta = DEFAULT_LEASE,
) -> list[Burst]:
    """Up to `limit` due conversations, each held by this claim until `lease` runs out."""
    params = {"worker": worker, "limit": limit, "lease": lease}
    with translated(), conn.cursor(row_factory=class_row(Burst)) as cur:
        return cur.execute(sql.BUFFER_CLAIM, params).fetchall()


def buffer_complete(conn: psycopg.Connection[Any], conversation_key: str, claim_token: int) -> bool:
    """True when the claim was current and its messages are now done."""
    params = {"conversation_key": conversation_key, "claim_token": claim_token}
    with translated():
        row = conn.execute(sql.BUFFER_COMPLETE, params).fetchone()
    return bool(row and row[0])


def buffer_fail(
    conn: psycopg.Connection[Any],
    conversation_key: str,
    claim_token: int,
    error: str,
    retry_in: timedelta = DEFAULT_RETRY_IN,
) -> bool:
    """True when the claim was current and its batch is given back (or parked as dead
    after its 5th failed try)."""
    params = {
        "conversation_key": conversation_key,
        "claim_token": claim_token,
        "error": error,
        "retry_in": retry_in,
    }
    with translated():
        row = conn.execute(sql.BUFFER_FAIL, params).fetchone()
    return bool(row and row[0])


def buffer_extend(
    conn: psycopg.Connection[Any],
    conversation_key: str,
    claim_token: int,
    lease: timedelta = DEFAULT_LEASE,
) -> datetime | None:
    """The claim's new lease end, or None when the claim is no longer current."""
    params = {"conversation_key": conversation_key, "claim_token": claim_token, "lease": lease}
    with translated():
        row = conn.execute(sql.BUFFER_EXTEND, params).fetchone()
    return row[0] if row else None


def buffer_release(conn: psycopg.Connection[Any], conversation_key: str, claim_token: int) -> bool:
    """True when the claim was current and its batch is given back without counting a
    failed try (claimable again at once)."""
    params = {"conversation_key": conversation_key, "claim_token": claim_token}
    with translated():
        row = conn.execute(sql.BUFFER_RELEASE, params).fetchone()
    return bool(row and row[0])


def buffer_revive(conn: psycopg.Connection[Any], conversation_key: str) -> int:
    """Put the messages of the conversation's dead batches back in its buffer, due at
    once; return how many."""
    with translated():
        row = conn.execute(sql.BUFFER_REVIVE, {"conversation_key": conversation_key}).fetchone()
    return int(row[0]) if row else 0


def buffer_due_in(conn: psycopg.Connection[Any]) -> timedelta | None:
    """How long until a buffer is due (zero: now), or None when nothing is buffered."""
    with translated():
        row = conn.execute(sql.BUFFER_DUE_IN).fetchone()
    return row[0] if row else None


def buffer_status(conn: psycopg.Connection[Any]) -> list[BufferStatus]:
    """Every buffered conversation and parked batch, dead ones first."""
    with translated(), conn.cursor(row_factory=class_row(BufferStatus)) as cur:
        return cur.execute(sql.BUFFER_STATUS).fetchall()
