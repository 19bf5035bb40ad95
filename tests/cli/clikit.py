"""Helpers of the command line tests: the console script, and a command running in a
process of its own whose output the test reads as it comes."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PGCOORD = Path(sys.executable).parent / "pgcoord"


def pgcoord(*words: str) -> list[str]:
    """The command line of the console script."""
    return [str(PGCOORD), *words]


def environment() -> dict[str, str]:
    """The test's environment without DATABASE_URL: each test says where the database is."""
    return {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}


class Output:
    """What a process writes: its stdout line by line as it comes, its stderr whole once
    it has ended (each read by a thread, so that neither pipe fills up and stalls it)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._err: list[str] = []
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()
        self._err_reader = threading.Thread(
            target=lambda: self._err.append(proc.stderr.read() if proc.stderr else ""),
            daemon=True,
        )
        self._err_reader.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next(self, deadline: float) -> str | None:
        """The next line (None at the end), or queue.Empty after the deadline."""
        return self.lines.get(timeout=max(deadline - time.monotonic(), 0.001))

    def rest(self, deadline: float) -> list[str]:
        """The lines still to come, until the end."""
        found = []
        while (line := self.next(deadline)) is not None:
            found.append(line)
        return found

    def err(self) -> str:
        """Everything written on stderr (once the process has ended)."""
        self._err_reader.join(30)
        assert not self._err_reader.is_alive(), "stderr is still open"
        return "".join(self._err)


@contextmanager
def started(
    command: list[str], cwd: Path | None = None
) -> Iterator[tuple[subprocess.Popen[str], Output]]:
    """The command running in `cwd`, without DATABASE_URL, its output read as it comes;
    killed if still running after the block."""
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, Output(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
