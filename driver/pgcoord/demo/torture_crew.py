"""The torture's processes, by role:

    buffer   buffer workers answering the webhooks' bursts (`storm_worker`)
    locker   lock contenders doing fenced writes (`torture_lockers`)

Each is a `WorkerProcess` registering in the torture's roster when ready; a killed one
is replaced by a new one with a new name."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from . import torture_lockers
from .plan import Plan
from .torture_lockers import LockLedger
from .workers import WorkerProcess, stop_all, storm_process, wait_ready

BUFFER_CONCURRENCY = 3
THINK = (0.1, 0.3)  # seconds a buffer worker's model takes: a kill or stop lands mid-batch
READY_TIMEOUT = 60.0  # seconds for processes to start


class Crew:
    """The processes of one torture run (see the module documentation). `url` is where
    they connect (through the pooler, when there is one)."""

    def __init__(
        self, url: str, ledger: LockLedger, plan: Plan, logs: Path, seed: int, keys: str
    ) -> None:
        self.url = url
        self.ledger = ledger
        self.plan = plan
        self.logs = logs
        self.seed = seed
        self.keys = keys  # the prefix of the contenders' keys
        self.processes: list[WorkerProcess] = []  # every one started, in order
        self._started: Counter[str] = Counter()

    def spawn(self, role: str) -> WorkerProcess:
        """Start a new process of `role`."""
        self._started[role] += 1
        name = f"{role}-{self._started[role]}"
        if role == "buffer":
            process = storm_process(
                self.url,
                self.ledger,
                self.plan,
                name,
                self.logs,
                concurrency=BUFFER_CONCURRENCY,
                think=THINK,
            )
        elif role == "locker":
            args = [f"--schema={self.ledger.name}", f"--prefix={self.keys}", f"--seed={self.seed}"]
            process = WorkerProcess(self.url, name, self.logs, torture_lockers.__name__, args)
        else:
            raise ValueError(f"no such role: {role}")
        self.processes.append(process)
        return process

    def role(self, process: WorkerProcess) -> str:
        return process.name.rpartition("-")[0]

    def live(self, role: str) -> list[WorkerProcess]:
        """The processes of `role` that run and are not suspended."""
        return [
            p
            for p in self.processes
            if self.role(p) == role and p.alive() and not p.suspended and not p.killed
        ]

    def named(self, name: str) -> WorkerProcess | None:
        return next((p for p in self.processes if p.name == name), None)

    def wait_ready(
        self, conn: psycopg.Connection[Any], processes: list[WorkerProcess] | None = None
    ) -> None:
        """Wait until `processes` (default: all) have registered (SceneError when one
        died first or time ran out)."""
        wait_ready(conn, self.ledger, processes or self.processes, READY_TIMEOUT)

    @property
    def survivors(self) -> list[WorkerProcess]:
        """The processes that were not killed."""
        return [p for p in self.processes if not p.killed]

    def stop(self) -> dict[str, int]:
        """Stop the survivors (SIGTERM, SIGKILL after a while); their exit statuses."""
        return stop_all(self.survivors)

    def kill_all(self) -> None:
        """SIGKILL every process still running (a run cut short)."""
        for process in self.processes:
            process.kill()
