"""A backend killed under a call: the first call of a driver function finds its
connection's backend gone (a restarted pooler, pg_terminate_backend), as a fault would
leave it; the later calls run as they do."""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any

import psycopg
import pytest


def die_once(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str) -> list[int]:
    """The first call of `module.name` finds its backend killed; the killed backend's
    pid goes into the list returned."""
    real = getattr(module, name)
    killed: list[int] = []

    async def dying_once(conn: psycopg.AsyncConnection[Any], *args: Any) -> Any:
        if not killed:
            killed.append(conn.info.backend_pid)
            with contextlib.suppress(psycopg.OperationalError):
                await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return await real(conn, *args)

    monkeypatch.setattr(module, name, dying_once)
    return killed
