"""pgcoord: coordination for webhook-driven messaging backends, in PostgreSQL."""

from __future__ import annotations

from .aio import AsyncClient
from .client import Client
from .errors import (
    Conflict,
    InvalidArgument,
    LockNotAcquired,
    NotInstalled,
    NullArgument,
    PgcoordError,
    ServerError,
)
from .lease import Lease, LeaseLost
from .types import BufferStatus, Burst, Ingested, Lock, LockStatus
from .worker import BufferWorker, ClaimLost, Retry, complete_in

__all__ = [
    "AsyncClient",
    "BufferStatus",
    "BufferWorker",
    "Burst",
    "ClaimLost",
    "Client",
    "Conflict",
    "Ingested",
    "InvalidArgument",
    "Lease",
    "LeaseLost",
    "Lock",
    "LockNotAcquired",
    "LockStatus",
    "NotInstalled",
    "NullArgument",
    "PgcoordError",
    "Retry",
    "ServerError",
    "complete_in",
]
