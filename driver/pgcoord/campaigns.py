# DO NOT CHANGE! Generated from campaigns_async.py by scripts/async-to-sync;
# change the original instead.
"""The campaign send queue over the caller's psycopg.Connection: one statement, one
round trip per call, never prepared on the server.

A sender creates a run (`campaign_create`) with its retry policy and enqueues its
recipients in one call (`campaign_enqueue`: all or nothing); workers claim due messages
in batches (`campaign_claim`) and finish each with `campaign_complete` (or many at once
with `campaign_complete_many`), `campaign_fail` (retried after the run's backoff, failed
for good after its last retry) or `campaign_snooze` (back later without spending a try:
the provider's rate limit is not the message's fault). `worker.CampaignWorker` runs that
loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from . import arguments, query, sql
from .arrays import bigints
from .config import (
    CAMPAIGN_CLAIM_LIMIT,
    CAMPAIGN_LEASE,
    CAMPAIGN_MAX_RETRIES,
    CAMPAIGN_RETRY_BACKOFF,
    CAMPAIGN_STALE_AFTER,
    PRUNE_LIMIT,
)
from .jsonb import jsonb
from .types import (
    CampaignEnqueued,
    CampaignFailure,
    CampaignIdle,
    CampaignMessage,
    CampaignProgress,
    CampaignStats,
)


def campaign_create(
    conn: psycopg.Connection[Any],
    name: str,
    max_retries: int = CAMPAIGN_MAX_RETRIES,
    retry_backoff: Sequence[timedelta] = CAMPAIGN_RETRY_BACKOFF,
    stale_after: timedelta = CAMPAIGN_STALE_AFTER,
) -> int:
    """Create a run in status 'running' and return its id. A failed message is retried up
    to `max_retries` times, the n-th retry `retry_backoff[n - 1]` after its failure (the
    last element repeats); pending messages older than `stale_after` are skipped by
    `campaign_skip_stale`."""
    try:
        backoff = list(retry_backoff)
    except TypeError as exc:
        raise arguments.retyped(exc) from None
    params = {
        "name": name,
        "max_retries": max_retries,
        "retry_backoff": backoff,
        "stale_after": stale_after,
    }
    run_id: int = query.value(conn, sql.CAMPAIGN_CREATE, params)
    return run_id


def campaign_set_status(conn: psycopg.Connection[Any], run_id: int, status: str) -> str:
    """Move the run to `status` ('running', 'paused', 'cancelled' or 'finished') and return
    its previous status. Paused and cancelled runs' messages are not claimed; cancelled and
    finished are final."""
    params = {"run_id": run_id, "status": status}
    previous: str = query.value(conn, sql.CAMPAIGN_SET_STATUS, params)
    return previous


def campaign_enqueue(
    conn: psycopg.Connection[Any], run_id: int, items: Iterable[Mapping[str, Any]]
) -> int:
    """Enqueue the messages of `items` into the run, all or nothing, and return how many.
    Each item is a mapping with "recipient" (text), and optionally "payload" (a JSON
    object, default {}) and "scheduled_at" (a datetime or ISO text; default: now, on the
    server's clock)."""
    params = {"run_id": run_id, "items": _items(items, "campaign_enqueue")}
    count: int = query.value(conn, sql.CAMPAIGN_ENQUEUE, params)
    return count


def campaign_enqueue_once(
    conn: psycopg.Connection[Any],
    run_id: int,
    key: str,
    items: Iterable[Mapping[str, Any]],
) -> CampaignEnqueued:
    """`campaign_enqueue` under `key` (1 to 1024 bytes), once: safe to call again when
    the answer of a call was lost. A call with a key the run already has enqueues nothing
    and returns the first call's count with duplicate=True."""
    params = {"run_id": run_id, "key": key, "items": _items(items, "campaign_enqueue_once")}
    return query.one(conn, CampaignEnqueued, sql.CAMPAIGN_ENQUEUE_ONCE, params)


def campaign_claim(
    conn: psycopg.Connection[Any],
    worker: str,
    limit: int = CAMPAIGN_CLAIM_LIMIT,
    lease: timedelta = CAMPAIGN_LEASE,
    run_id: int | None = None,
) -> list[CampaignMessage]:
    """Up to `limit` due messages of running runs (of `run_id` only, when given), oldest
    `scheduled_at` first, each held by this claim until `lease` runs out."""
    params = {"worker": worker, "limit": limit, "lease": lease, "run_id": run_id}
    return query.rows(conn, CampaignMessage, sql.CAMPAIGN_CLAIM, params)


def campaign_complete(
    conn: psycopg.Connection[Any],
    message_id: int,
    claim_token: int,
    metrics: Mapping[str, Any] | None = None,
) -> bool:
    """Mark the message 'sent' with its `metrics` (tokens used, timings...); False, and
    nothing changed, when the claim is no longer current."""
    try:
        metrics = dict(metrics or {})
    except (TypeError, ValueError) as exc:
        raise arguments.retyped(exc) from None
    stored = jsonb(metrics, "campaign_complete: metrics")
    params = {
        "message_id": message_id,
        "claim_token": claim_token,
        "metrics": stored,
    }
    return bool(query.value(conn, sql.CAMPAIGN_COMPLETE, params))


def campaign_complete_many(
    conn: psycopg.Connection[Any],
    message_ids: Sequence[int],
    claim_tokens: Sequence[int],
    metrics: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """`campaign_complete` for many messages in one statement (element i of each sequence
    belongs together); return how many were current and are now 'sent'."""
    params = _many(message_ids, claim_tokens, metrics, "campaign_complete_many")
    return int(query.value(conn, sql.CAMPAIGN_COMPLETE_MANY, params))


def campaign_completed(
    conn: psycopg.Connection[Any],
    message_ids: Sequence[int],
    claim_tokens: Sequence[int],
    metrics: Sequence[Mapping[str, Any]] | None = None,
) -> set[int]:
    """`campaign_complete_many` that answers which messages it completed (the others'
    claims were no longer current)."""
    params = _many(message_ids, claim_tokens, metrics, "campaign_completed")
    completed: list[int] | None = query.value(conn, sql.CAMPAIGN_COMPLETED, params)
    return set(completed or ())


def campaign_completed_then_claim(
    conn: psycopg.Connection[Any],
    message_ids: Sequence[int],
    claim_tokens: Sequence[int],
    metrics: Sequence[Mapping[str, Any]] | None,
    worker: str,
    limit: int = CAMPAIGN_CLAIM_LIMIT,
    lease: timedelta = CAMPAIGN_LEASE,
    run_id: int | None = None,
) -> tuple[set[int], list[CampaignMessage]]:
    """`campaign_completed`, then `campaign_claim`, in one statement: a worker's
    completions and its next claim in one round trip and one transaction (an error of
    either undoes both). The ids it completed, and the messages claimed."""
    params = {
        **_many(message_ids, claim_tokens, metrics, "campaign_completed_then_claim"),
        "worker": worker,
        "limit": limit,
        "lease": lease,
        "run_id": run_id,
    }
    found = query.tuples(conn, sql.CAMPAIGN_COMPLETED_THEN_CLAIM, params)
    # at least one row, the first with the completed ids (an array, maybe empty)
    claimed = [CampaignMessage(*row[1:]) for row in found if row[1] is not None]
    return set(found[0][0]), claimed


def campaign_fail(
    conn: psycopg.Connection[Any],
    message_id: int,
    claim_token: int,
    error: str,
    retry_after: timedelta | None = None,
) -> CampaignFailure | None:
    """Count a failed try and keep `error`: 'pending' again after the run's backoff (or
    `retry_after`, when that is later), or 'failed' for good after the run's last retry.
    None, and nothing changed, when the claim is no longer current."""
    params = _fail(message_id, claim_token, error, retry_after)
    found = query.rows(conn, CampaignFailure, sql.CAMPAIGN_FAIL, params)
    return found[0] if found else None


def campaign_fail_in(
    conn: psycopg.Connection[Any],
    message_id: int,
    claim_token: int,
    error: str,
    retry_after: timedelta | None = None,
) -> tuple[bool, timedelta] | None:
    """`campaign_fail`, answering for a worker's log line in the same round trip: whether
    the message failed for good, and how long until its retry by the server's clock (0
    when it failed for good). None, and nothing changed, when the claim is no longer
    current."""
    params = _fail(message_id, claim_token, error, retry_after)
    found = query.tuples(conn, sql.CAMPAIGN_FAIL_IN, params)
    if not found:
        return None
    [(final, retry_in)] = found
    return final, retry_in


def _fail(
    message_id: int, claim_token: int, error: str, retry_after: timedelta | None
) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "claim_token": claim_token,
        "error": error,
        "retry_after": retry_after,
    }


def campaign_fail_for_good(
    conn: psycopg.Connection[Any], message_id: int, claim_token: int, error: str
) -> bool:
    """A failed try that no retry can mend (the recipient does not exist, the provider
    refused the content): the message ends 'failed' at once with `error` kept, whatever
    retries are left; False when the claim is no longer current."""
    params = {"message_id": message_id, "claim_token": claim_token, "error": error}
    return bool(query.value(conn, sql.CAMPAIGN_FAIL_FOR_GOOD, params))


def campaign_snooze(
    conn: psycopg.Connection[Any], message_id: int, claim_token: int, delay: timedelta
) -> bool:
    """Put the message back, due after `delay`, without spending a try; False when the
    claim is no longer current."""
    params = {"message_id": message_id, "claim_token": claim_token, "delay": delay}
    return bool(query.value(conn, sql.CAMPAIGN_SNOOZE, params))


def campaign_extend(
    conn: psycopg.Connection[Any],
    message_id: int,
    claim_token: int,
    lease: timedelta = CAMPAIGN_LEASE,
) -> datetime | None:
    """The claim's new lease end, `lease` from now, or None when the claim is no longer
    current."""
    params = {"message_id": message_id, "claim_token": claim_token, "lease": lease}
    until: datetime | None = query.value(conn, sql.CAMPAIGN_EXTEND, params)
    return until


def campaign_release(conn: psycopg.Connection[Any], message_id: int, claim_token: int) -> bool:
    """Give the message back untouched, claimable again at once and no try spent (a
    stopping worker); False when the claim is no longer current."""
    params = {"message_id": message_id, "claim_token": claim_token}
    return bool(query.value(conn, sql.CAMPAIGN_RELEASE, params))


def campaign_skip_stale(conn: psycopg.Connection[Any], older_than: timedelta | None = None) -> int:
    """Mark 'skipped' the pending messages of running runs scheduled more than
    `older_than` ago (by default each run's `stale_after`); return how many."""
    params = {"older_than": older_than}
    return int(query.value(conn, sql.CAMPAIGN_SKIP_STALE, params) or 0)


def campaign_due_in(conn: psycopg.Connection[Any], run_id: int | None = None) -> timedelta | None:
    """How long until a message of a running run (of `run_id`, when given) is due or an
    orphaned claim runs out (zero: now); None when there is none."""
    due_in: timedelta | None = query.value(conn, sql.CAMPAIGN_DUE_IN, {"run_id": run_id})
    return due_in


def campaign_idle(conn: psycopg.Connection[Any], run_id: int | None = None) -> CampaignIdle:
    """For a worker about to sleep, on the connection where it LISTENs pgcoord_campaigns
    (its own session, in autocommit, never through a transaction pooler): mark the session
    an idle worker of `run_id` (of every run when None), so that enqueues notify it, then
    how long it may sleep."""
    return query.one(conn, CampaignIdle, sql.CAMPAIGN_IDLE, {"run_id": run_id})


def campaign_busy(conn: psycopg.Connection[Any], run_id: int | None = None) -> bool:
    """For a worker whose claims come back full, on its LISTEN connection: end its idle
    mark and say that a worker of `run_id` (of every run when None) is busy, so that
    enqueues skip the NOTIFY while none is idle. True when this session holds that mark
    (one worker at a time does), False when another does."""
    held: bool = query.value(conn, sql.CAMPAIGN_BUSY, {"run_id": run_id})
    return held


def campaign_progress(
    conn: psycopg.Connection[Any], run_id: int | None = None
) -> list[CampaignProgress]:
    """Every run's counts by status (of `run_id` only, when given), oldest run first."""
    if run_id is None:
        return query.rows(conn, CampaignProgress, sql.CAMPAIGN_PROGRESS)
    params = {"run_id": run_id}
    return query.rows(conn, CampaignProgress, sql.CAMPAIGN_RUN_PROGRESS, params)


def campaign_stats(conn: psycopg.Connection[Any], run_id: int | None = None) -> list[CampaignStats]:
    """Every run's recent throughput, retries, snoozes and handler times (of `run_id`
    only, when given; InvalidArgument for an unknown run), oldest run first."""
    return query.rows(conn, CampaignStats, sql.CAMPAIGN_STATS, {"run_id": run_id})


def campaign_prune(
    conn: psycopg.Connection[Any], older_than: timedelta, limit: int = PRUNE_LIMIT
) -> int:
    """Delete about `limit` messages (at most `limit` + 14) of runs finished or cancelled
    more than `older_than` ago, with their outcomes and open work, the run that ended
    first first, and each run with its last message; return how many. A claim still held
    on a pruned cancelled run is stale afterwards: keep runs longer than their leases."""
    params = {"older_than": older_than, "limit": limit}
    return int(query.value(conn, sql.CAMPAIGN_PRUNE, params) or 0)


def _items(items: Iterable[Mapping[str, Any]], call: str) -> Jsonb:
    """The items of an enqueue, as the JSON array the function takes."""
    try:
        listed = [dict(item) for item in items]
    except (TypeError, ValueError) as exc:
        raise arguments.retyped(exc) from None
    return jsonb(listed, f"{call}: items")


def _many(
    message_ids: Sequence[int],
    claim_tokens: Sequence[int],
    metrics: Sequence[Mapping[str, Any]] | None,
    call: str,
) -> dict[str, Any]:
    try:
        ids, tokens = bigints(message_ids), bigints(claim_tokens)
        each = None if metrics is None else [dict(m) for m in metrics]
    except (TypeError, ValueError) as exc:
        raise arguments.retyped(exc) from None
    return {
        "message_ids": ids,
        "claim_tokens": tokens,
        "metrics": None if each is None else jsonb(each, f"{call}: metrics"),
    }
