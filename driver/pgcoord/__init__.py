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

__all__ = [
    "AsyncClient",
    "BufferStatus",
    "Burst",
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
    "ServerError",
]
