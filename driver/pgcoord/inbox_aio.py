"""Deprecated: the async inbox calls are in `pgcoord.inbox_async`. This module re-exports
them for one release."""

from __future__ import annotations

import warnings

from .inbox_async import (
    buffer_claim,
    buffer_claim_with_payloads,
    buffer_complete,
    buffer_due_in,
    buffer_extend,
    buffer_fail,
    buffer_fail_for_good,
    buffer_release,
    buffer_revive,
    buffer_status,
    message_ingest,
    message_payloads,
    message_prune,
)

__all__ = [
    "buffer_claim",
    "buffer_claim_with_payloads",
    "buffer_complete",
    "buffer_due_in",
    "buffer_extend",
    "buffer_fail",
    "buffer_fail_for_good",
    "buffer_release",
    "buffer_revive",
    "buffer_status",
    "message_ingest",
    "message_payloads",
    "message_prune",
]

warnings.warn(
    "pgcoord.inbox_aio is deprecated: use pgcoord.inbox_async",
    DeprecationWarning,
    stacklevel=2,
)
