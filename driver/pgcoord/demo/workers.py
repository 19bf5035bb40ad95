"""The demo's worker processes as the demo sees them: started as
`python -m pgcoord.demo.storm_worker` (`storm_process`) or
`python -m pgcoord.demo.campaign_worker`, waited for until ready in their scene's roster,
SIGKILLed mid-batch or stopped with SIGTERM, their output kept for the report."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, LiteralString

import psycopg

from . import storm_worker
from .ledger import Ledger, Roster
from .plan import Plan
from .storm_worker import LEASE, THINK
from .waiting import STEP_TIMEOUT, SceneError, wait_until

# its connections that run a statement or hold a transaction open: a statement sent
# just before a stop or a kill still commits after it
BUSY: LiteralString = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND application_name = %(name)s"
    " AND state <> 'idle'"
)
STOP_TIMEOUT = 10.0  # seconds a worker has to stop on SIGTERM before SIGKILL
COMMAND = f"python -m {storm_worker.__name__}"


class WorkerProcess:
    """A worker process, `python -m program --name=name *args`, its output going to
    `log_dir/<name>.log`. The URL goes through the environment, not argv; so does the
    name, as its connections' application_name (PGAPPNAME), for the faults to find them
    in pg_stat_activity."""

    def __init__(
        self, url: str, name: str, log_dir: Path, program: str, args: Sequence[str]
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        command = [sys.executable, "-m", program, f"--name={name}", *args]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                env={**os.environ, "DATABASE_URL": url, "PGAPPNAME": name},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.killed = False
        self.suspended = False
        self.terminated = False  # SIGTERM sent
        # when it could not act on what it was answered: from each SIGSTOP to its
        # SIGCONT, from a SIGKILL on (time.monotonic(); inf while it lasts)
        self.deaf: list[tuple[float, float]] = []

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
            if not self.suspended:
                self.deaf.append((time.monotonic(), math.inf))
        self.process.wait(STEP_TIMEOUT)

    def suspend(self) -> None:
        """SIGSTOP: the process stands still, its connections open, its leases running
        out, until `resume()`."""
        if self.alive():
            os.kill(self.pid, signal.SIGSTOP)
            self.suspended = True
            self.deaf.append((time.monotonic(), math.inf))

    def resume(self) -> None:
        """SIGCONT: a suspended process goes on where it stood."""
        if self.suspended and self.alive():
            os.kill(self.pid, signal.SIGCONT)
            self.deaf[-1] = (self.deaf[-1][0], time.monotonic())
        self.suspended = False

    def terminate(self) -> None:
        """SIGTERM (resumed first when suspended): the worker finishes its work in
        flight and exits."""
        if self.alive() and not self.terminated:
            self.resume()
            self.process.send_signal(signal.SIGTERM)
            self.terminated = True

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (the worker finishes its work in flight), SIGKILL after `timeout`;
        the exit status (negative: the signal that ended it)."""
        if self.alive():
            self.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STEP_TIMEOUT)
        return self.process.returncode

    def busy(self, conn: psycopg.Connection[Any]) -> int:
        """How many of its connections to `conn`'s database run a statement or hold a
        transaction open (after a kill, until the server has seen them go)."""
        row = conn.execute(BUSY, {"name": self.name}).fetchone()
        return int(row[0]) if row else 0

    def settled(self, conn: psycopg.Connection[Any], timeout: float) -> bool:
        """Wait until none of its connections runs a statement, seen twice in a row
        (after a stop or a kill: a statement it sent just before still commits or rolls
        back after it, so what it holds is read once they are done); whether that came
        within `timeout`."""
        return wait_until(lambda: self.busy(conn) == 0 == self.busy(conn), timeout)

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


def stop_all(workers: Sequence[WorkerProcess], timeout: float = STOP_TIMEOUT) -> dict[str, int]:
    """Stop every worker (see WorkerProcess.stop), all at once: SIGTERM to each, then
    SIGKILL to those still running after `timeout`; their exit statuses by name."""
    for worker in workers:
        worker.terminate()
    deadline = time.monotonic() + timeout
    return {w.name: w.stop(max(0.0, deadline - time.monotonic())) for w in workers}


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
