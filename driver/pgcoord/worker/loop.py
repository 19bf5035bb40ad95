"""The event loop that pgcoord's own worker processes run on (`pgcoord work`, the demo's
workers): uvloop where it is installed, a dependency everywhere but on Windows, as
PgQueuer's command line does; asyncio's own loop otherwise, or when asked for. A worker
spends a good part of its time in the event loop, and uvloop's is the cheaper one: in
`scripts/bench campaigns` the campaign worker's client CPU per message drops by about a
fifth. A program that runs a worker in its own loop chooses that loop itself."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")

Loop = Literal["uvloop", "asyncio"]
LOOPS: tuple[Loop, ...] = ("uvloop", "asyncio")


def default() -> Loop:
    """uvloop where it is installed, else asyncio."""
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def run(main: Coroutine[Any, Any, T], loop: Loop | None = None) -> T:
    """Run `main` to its end on a new event loop of the kind given (by default, uvloop
    where installed), as asyncio.run does."""
    if (loop or default()) == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
