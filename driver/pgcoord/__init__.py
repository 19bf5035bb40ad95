"""pgcoord: coordination for webhook-driven messaging backends, in PostgreSQL."""

from __future__ import annotations

from .errors import (
    Conflict,
    InvalidArgument,
    LockNotAcquired,
    NotInstalled,
    NullArgument,
    PgcoordError,
    ServerError,
)
from .types import Lock, LockStatus

__all__ = [
    "Conflict",
    "InvalidArgument",
    "Lock",
    "LockNotAcquired",
    "LockStatus",
    "NotInstalled",
    "NullArgument",
    "PgcoordError",
    "ServerError",
]
