"""pgcoord: coordination for webhook-driven messaging backends, in PostgreSQL."""

from __future__ import annotations

from typing import Any

from . import types
from .client import Client
from .client_async import AsyncClient
from .errors import (
    ClaimLost,
    Conflict,
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
from .types import Batch, BatchWithPayloads, BufferStatus, Ingested, Lock, LockStatus
from .worker import BufferWorker, complete_in

__all__ = [
    "AsyncClient",
    "Batch",
    "BatchWithPayloads",
    "BufferStatus",
    "BufferWorker",
    "ClaimLost",
    "Client",
    "Conflict",
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
    "RateLimited",
    "Retry",
    "ServerError",
    "complete_in",
]


def __getattr__(name: str) -> Any:
    """Names kept for one release (pgcoord.Burst): they warn, then work."""
    return types.deprecated(__name__, name)
