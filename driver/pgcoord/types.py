"""Typed results: each dataclass mirrors a function's result columns, field for field
(tests/sql/test_catalog.py compares them with the catalog)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True, slots=True)
class Lock:
    """A row of pgcoord.lock_acquire: the grant, or the holder when not granted. Not
    granted with `owner`, `token` and `expires_at` None: another transaction, not yet
    committed, is writing the key (an acquire inside a caller's transaction); its holder
    is known once that commits."""

    acquired: bool
    owner: str | None
    token: int | None
    expires_at: datetime | None
    took_over: bool


@dataclass(frozen=True, slots=True)
class LockStatus:
    """A row of the view pgcoord.lock_status."""

    key: str
    owner: str
    token: int
    acquired_at: datetime
    expires_at: datetime
    expired: bool


@dataclass(frozen=True, slots=True)
class Ingested:
    """A row of pgcoord.message_ingest: the stored message, and whether this call was a
    repeat of an earlier delivery."""

    message_id: int
    duplicate: bool
    received_at: datetime


@dataclass(frozen=True, slots=True)
class MessagePayload:
    """A row of pgcoord.message_payloads: a stored message's payload (a JSON object)."""

    message_id: int
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Batch:
    """A row of pgcoord.buffer_claim: one conversation's batch of messages, in arrival
    order, held by the claim `claim_token` (a fencing token)."""

    conversation_key: str
    claim_token: int
    message_ids: list[int]
    bodies: list[str]
    first_message_at: datetime
    last_message_at: datetime
    attempt: int


@dataclass(frozen=True, slots=True)
class BatchWithPayloads(Batch):
    """A row of buffer_claim with the stored payloads of its messages
    (`sql.BUFFER_CLAIM_WITH_PAYLOADS`): `payloads[i]` is the payload of `message_ids[i]`."""

    payloads: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class BufferStatus:
    """A row of the view pgcoord.buffer_status."""

    conversation_key: str
    message_count: int
    first_message_at: datetime
    last_message_at: datetime
    flush_at: datetime | None
    claimed_by: str | None
    claimed_until: datetime | None
    attempt: int
    dead: bool
    last_error: str | None


@dataclass(frozen=True, slots=True)
class CampaignMessage:
    """A row of pgcoord.campaign_claim: one message to send, held by the claim
    `claim_token` (a fencing token); `attempt` is 1 + its failed tries so far."""

    message_id: int
    run_id: int
    recipient: str
    payload: dict[str, Any]
    attempt: int
    claim_token: int
    scheduled_at: datetime


@dataclass(frozen=True, slots=True)
class CampaignEnqueued:
    """A row of pgcoord.campaign_enqueue_once: how many messages the key's first call
    enqueued, and whether this call was a repeat of it (then it enqueued nothing)."""

    enqueued: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class CampaignIdle:
    """A row of pgcoord.campaign_idle: how long an idle worker may sleep (as
    campaign_due_in: zero when a message is due now, None when nothing is pending or
    held), and whether that look is settled (False: an enqueue still committing may be
    missing from it, so look again soon)."""

    due_in: timedelta | None
    settled: bool


@dataclass(frozen=True, slots=True)
class CampaignFailure:
    """A row of pgcoord.campaign_fail: 'pending' again at `next_attempt_at`, or 'failed'
    for good (`next_attempt_at` None)."""

    status: str
    next_attempt_at: datetime | None


@dataclass(frozen=True, slots=True)
class CampaignProgress:
    """A row of the view pgcoord.campaign_progress."""

    run_id: int
    name: str
    status: str
    pending: int
    processing: int
    sent: int
    failed: int
    skipped: int
    total: int

    @property
    def ended(self) -> bool:
        """Cancelled or finished: final statuses (campaign_set_status refuses any change
        from them), so none of the run's messages is ever claimed again."""
        return self.status in ("cancelled", "finished")


@dataclass(frozen=True, slots=True)
class CampaignStats:
    """A row of pgcoord.campaign_stats: the messages sent in the last minute, the failed
    tries (`retries`) and snoozes so far, and the median and 95th percentile of the
    handler's time over the last 1000 sent (None when none stored `handler_ms`)."""

    run_id: int
    sent_last_minute: int
    retries: int
    snoozes: int
    handler_p50_ms: float | None
    handler_p95_ms: float | None


@dataclass(frozen=True, slots=True)
class RateStatus:
    """A row of the view pgcoord.rate_status: the tokens in the key's bucket now (None
    while no grant was made: a full bucket), its rate and burst as of the last grant, the
    pause in force."""

    key: str
    tokens: float | None
    per_second: float | None
    burst: int | None
    paused_until: datetime | None
    updated_at: datetime


# names kept for one release, each warning when used: old name -> (new name, object)
DEPRECATED: dict[str, tuple[str, Any]] = {"Burst": ("Batch", Batch)}


def deprecated(module: str, name: str) -> Any:
    """The object a deprecated name of `module` stands for, with a DeprecationWarning
    (for a module's `__getattr__`); AttributeError for a name that is not one."""
    if name not in DEPRECATED:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new_name, value = DEPRECATED[name]
    warnings.warn(
        f"{module}.{name} is deprecated, use {module}.{new_name}",
        DeprecationWarning,
        stacklevel=3,
    )
    return value


def __getattr__(name: str) -> Any:
    return deprecated(__name__, name)
