"""The demo's worker processes as the demo sees them: started as
`python -m pgcoord.demo.storm_worker` (`storm_process`) or
`python -m pgcoord.demo.campaign_worker`, waited for until ready in their scene's roster,
SIGKILLed mid-batch or stopped with SIGTERM, their output kept for the report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

from . import storm_worker
from .ledger import Ledger, Roster
from .plan import Plan
from .storm_worker import LEASE, THINK
from .waiting import STEP_TIMEOUT, SceneError, wait_until

STOP_TIMEOUT = 10.0  # seconds a worker has to stop on SIGTERM before SIGKILL
COMMAND = f"python -m {storm_worker.__name__}"


class WorkerProcess:
    """A worker process, `python -m program --name=name *args`, its output going to
    `log_dir/<name>.log`. The URL goes through the environment, not argv."""

    def __init__(
        self, url: str, name: str, log_dir: Path, program: str, args: Sequence[str]
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        command = [sys.executable, "-m", program, f"--name={name}", *args]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                env={**os.environ, "DATABASE_URL": url},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.killed = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no handler runs, no transaction commits, no claim is given back."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.killed = True
        self.process.wait(STEP_TIMEOUT)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (the worker finishes its work in flight), SIGKILL after `timeout`;
        the exit status (negative: the signal that ended it)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STEP_TIMEOUT)
        return self.process.returncode

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def storm_process(
    url: str,
    ledger: Ledger,
    plan: Plan,
    name: str,
    log_dir: Path,
    *,
    concurrency: int = 4,
    lease: timedelta = LEASE,
    think: tuple[float, float] = THINK,
    gated: bool = False,
) -> WorkerProcess:
    """A worker process of the storm (`storm_worker`)."""
    think_ms = f"{think[0] * 1000:.0f}-{think[1] * 1000:.0f}"
    args = [
        f"--schema={ledger.name}",
        f"--prefix={plan.prefix}",
        f"--concurrency={concurrency}",
        f"--lease-ms={lease.total_seconds() * 1000:.0f}",
        f"--think-ms={think_ms}",
        *(["--gated"] if gated else []),
    ]
    return WorkerProcess(url, name, log_dir, storm_worker.__name__, args)


def stop_all(workers: Sequence[WorkerProcess]) -> dict[str, int]:
    """Stop every worker (see WorkerProcess.stop); their exit statuses by name."""
    return {worker.name: worker.stop() for worker in workers}


def wait_ready(
    conn: psycopg.Connection[Any],
    roster: Roster,
    workers: Sequence[WorkerProcess],
    timeout: float = 60.0,
) -> None:
    """Wait until every worker has registered; SceneError when one died or time ran out."""

    def ready() -> bool:
        dead = [w for w in workers if not w.alive()]
        if dead:
            raise SceneError(
                f"worker {dead[0].name} exited with {dead[0].process.returncode} before it "
                f"was ready:\n{dead[0].log_tail()}"
            )
        return {w.name for w in workers} <= roster.ready(conn)

    if not wait_until(ready, timeout):
        raise SceneError(f"the worker processes were not ready within {timeout:g} s")
