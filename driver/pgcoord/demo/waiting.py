"""Waiting on the demo's threads and processes: poll until something answers, and the
error of a wait that ran out or whose process died."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

STEP_TIMEOUT = 30.0  # seconds any single wait of a sender or a worker process may take


class SceneError(Exception):
    """A scene could not be played: a worker process died early, or time ran out."""


def poll(check: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T | None:
    """Ask `check` until it answers something other than None, for up to `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer is not None or time.monotonic() >= deadline:
            return answer
        time.sleep(interval)


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Ask `check` until it answers True, for up to `timeout`; whether it did."""
    return poll(lambda: True if check() else None, timeout, interval) is not None
