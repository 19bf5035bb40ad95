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


def poll_behind(
    check: Callable[[], T | None],
    timeout: float,
    ahead: Callable[[], int],
    limit: float,
    interval: float = 0.05,
) -> T | None:
    """`poll` for something that waits its turn behind a backlog: for up to `timeout`,
    then `timeout` more each time `ahead` (what is still before it) answers fewer than
    the last time and more than none, for up to `limit` in all."""
    give_up = time.monotonic() + limit
    before: int | None = None
    while (answer := poll(check, timeout, interval)) is None:
        left = ahead()
        if left == 0 or (before is not None and left >= before) or time.monotonic() >= give_up:
            return None
        before, timeout = left, min(timeout, max(give_up - time.monotonic(), 0.0))
    return answer


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Ask `check` until it answers True, for up to `timeout`; whether it did."""
    return poll(lambda: True if check() else None, timeout, interval) is not None
