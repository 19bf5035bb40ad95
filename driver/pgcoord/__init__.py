"""pgcoord: coordination for webhook-driven messaging backends, in PostgreSQL."""

from __future__ import annotations

from typing import Any

from . import types
from .client import Client
from .client_async import AsyncClient
from .errors import (
    ClaimLost,
    Conflict,
    FailForGood,
    HandlerTimeout,
    InvalidArgument,
    LeaseLost,
    LockNotAcquired,
    MigrationError,
    NotInstalled,
    NullArgument,
    PermissionDenied,
    PgcoordError,
    RateLimited,
    Retry,
    ServerError,
)
from .lease import Lease
from .types import (
    Batch,
    BatchWithPayloads,
    BufferStatus,
    CampaignEnqueued,
    CampaignFailure,
    CampaignIdle,
    CampaignMessage,
    CampaignProgress,
    CampaignStats,
    Ingested,
    Lock,
    LockStatus,
    RateStatus,
)
from .worker import BufferWorker, CampaignWorker, RateBudget, complete_in

# The package's version, written here only (pyproject.toml reads it). A release of the
# package is also the newest schema release it ships, db/releases/<__version__>/.
__version__ = "0.3.0"

__all__ = [
    "AsyncClient",
    "Batch",
    "BatchWithPayloads",
    "BufferStatus",
    "BufferWorker",
    "CampaignEnqueued",
    "CampaignFailure",
    "CampaignIdle",
    "CampaignMessage",
    "CampaignProgress",
    "CampaignStats",
    "CampaignWorker",
    "ClaimLost",
    "Client",
    "Conflict",
    "FailForGood",
    "HandlerTimeout",
    "Ingested",
    "InvalidArgument",
    "Lease",
    "LeaseLost",
    "Lock",
    "LockNotAcquired",
    "LockStatus",
    "MigrationError",
    "NotInstalled",
    "NullArgument",
    "PermissionDenied",
    "PgcoordError",
    "RateBudget",
    "RateLimited",
    "RateStatus",
    "Retry",
    "ServerError",
    "complete_in",
]


def __getattr__(name: str) -> Any:
    """Names kept for one release (pgcoord.Burst): they warn, then work."""
    return types.deprecated(__name__, name)
