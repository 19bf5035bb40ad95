"""Deprecated: the async lock calls are in `pgcoord.locks_async`, AsyncClient in
`pgcoord.client_async` (and `pgcoord`). This module re-exports them for one release."""

from __future__ import annotations

import warnings

from .client_async import AsyncClient
from .locks_async import lock_acquire, lock_extend, lock_is_current, lock_release, lock_status

__all__ = [
    "AsyncClient",
    "lock_acquire",
    "lock_extend",
    "lock_is_current",
    "lock_release",
    "lock_status",
]

warnings.warn(
    "pgcoord.aio is deprecated: use pgcoord.locks_async and pgcoord.client_async",
    DeprecationWarning,
    stacklevel=2,
)
