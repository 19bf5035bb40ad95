"""Typed results: each dataclass mirrors a function's result columns, field for field
(tests/sql/test_catalog.py compares them with the catalog)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Lock:
    """A row of pgcoord.lock_acquire: the grant, or the holder when not granted."""

    acquired: bool
    owner: str
    token: int
    expires_at: datetime
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
