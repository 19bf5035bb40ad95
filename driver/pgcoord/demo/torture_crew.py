"""The torture's processes, by role, and the ledger they write:

    buffer    buffer workers answering the webhooks' bursts (`storm_worker`)
    locker    lock contenders doing fenced writes (`torture_lockers`)
    campaign  campaign workers sending through the fake provider (`campaign_worker`)

Each is a `WorkerProcess` that registers in the torture's roster when ready; a killed
one is replaced by a new one with a new name."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psycopg

from . import campaign_worker, torture_lockers
from .ledger import TRY_TABLES, TryLog
from .plan import Plan
from .torture_campaign import Campaign
from .torture_lockers import LockLedger
from .workers import WorkerProcess, stop_all, storm_process, wait_ready

BUFFER_CONCURRENCY = 3
THINK = (0.1, 0.3)  # seconds a buffer worker's model takes: a kill or stop lands mid-batch
READY_TIMEOUT = 60.0  # seconds for processes to start

Start = Callable[[str], WorkerProcess]  # starts a process of a role, given its name


class TortureLedger(LockLedger, TryLog):
    """The torture's schema: the roster, the storm's claims and replies, the lock
    contenders' tries and writes, and the campaign's tries."""

    tables = LockLedger.tables + ";" + TRY_TABLES


class Crew:
    """The processes of one torture run, each role started by its `starts` entry; they
    register in `ledger`'s roster."""

    def __init__(self, ledger: TortureLedger, starts: Mapping[str, Start]) -> None:
        self.ledger = ledger
        self.starts = starts
        self.processes: list[WorkerProcess] = []  # every one started, in order
        self._started: Counter[str] = Counter()

    @classmethod
    def of(
        cls,
        url: str,
        ledger: TortureLedger,
        logs: Path,
        *,
        plan: Plan,
        keys: str,
        seed: int,
        campaign: Campaign,
    ) -> Crew:
        """The torture's roles (see the module documentation), connecting to `url`: the
        buffer workers answer the storm of `plan`, the contenders take the keys under
        `keys`, the campaign workers send `campaign`."""
        lockers = [f"--schema={ledger.name}", f"--prefix={keys}", f"--seed={seed}"]
        senders = campaign.worker_args(ledger.name)

        def buffer(name: str) -> WorkerProcess:
            return storm_process(
                url, ledger, plan, name, logs, concurrency=BUFFER_CONCURRENCY, think=THINK
            )

        def locker(name: str) -> WorkerProcess:
            return WorkerProcess(url, name, logs, torture_lockers.__name__, lockers)

        def sender(name: str) -> WorkerProcess:
            return WorkerProcess(url, name, logs, campaign_worker.__name__, senders)

        return cls(ledger, {"buffer": buffer, "locker": locker, "campaign": sender})

    def spawn(self, role: str) -> WorkerProcess:
        """Start a new process of `role`."""
        self._started[role] += 1
        process = self.starts[role](f"{role}-{self._started[role]}")
        self.processes.append(process)
        return process

    @staticmethod
    def role(process: WorkerProcess) -> str:
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
