"""A fleet of worker processes (bench/queue_worker.py) for one run of a queue bench:
started together, ready when each has said so, their CPU time read from /proc while they
run, stopped with SIGTERM."""

from __future__ import annotations

import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from .server_cpu import process_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class Fleet:
    def __init__(
        self, system: str, conninfo: str, workers: int, *, batch: int, concurrency: int
    ) -> None:
        self.command = [
            sys.executable,
            "-m",
            "bench.queue_worker",
            system,
            conninfo,
            f"--batch={batch}",
            f"--concurrency={concurrency}",
        ]
        self.workers = workers
        self.processes: list[subprocess.Popen[str]] = []
        self._logs: list[tempfile._TemporaryFileWrapper[str]] = []

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop(check=kind is None)

    def start(self) -> None:
        """Start every worker and wait until each has printed "ready"."""
        for _ in range(self.workers):
            log = tempfile.NamedTemporaryFile("w+", prefix="pgcoord-bench-worker-")  # noqa: SIM115
            self._logs.append(log)
            self.processes.append(
                subprocess.Popen(
                    self.command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True
                )
            )
        waiting = selectors.DefaultSelector()
        for process in self.processes:
            assert process.stdout is not None
            waiting.register(process.stdout, selectors.EVENT_READ, process)
        deadline = time.monotonic() + READY_TIMEOUT
        while waiting.get_map():
            events = waiting.select(max(0.0, deadline - time.monotonic()))
            if not events:
                self.stop(check=False)
                raise RuntimeError(f"workers not ready after {READY_TIMEOUT} s{self._stderr()}")
            for key, _ in events:
                line = key.fileobj.readline()  # type: ignore[union-attr]
                if line.strip() != "ready":
                    self.stop(check=False)
                    raise RuntimeError(f"a worker failed to start: {line!r}{self._stderr()}")
                waiting.unregister(key.fileobj)
        waiting.close()

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the workers have used so far."""
        total = 0.0
        for pid in self.pids:
            seconds = process_cpu_seconds(pid)
            if seconds is None:
                raise RuntimeError(f"worker {pid} has gone{self._stderr()}")
            total += seconds
        return total

    def stop(self, *, check: bool = True) -> None:
        """SIGTERM every worker, wait for them (SIGKILL after STOP_TIMEOUT); with `check`,
        raise when one did not exit 0."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        failed = []
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
            if process.returncode != 0:
                failed.append(process.returncode)
        errors = self._stderr()
        self.processes = []
        for log in self._logs:
            log.close()
        self._logs = []
        if check and failed:
            raise RuntimeError(f"workers exited with {failed}{errors}")

    def _stderr(self) -> str:
        """The end of the first non-empty worker log."""
        for log in self._logs:
            log.flush()
            text = Path(log.name).read_text()
            if text.strip():
                return ":\n" + text[-3000:]
        return ""


def wait_for(condition: Callable[[], bool], timeout: float, pause: float = 0.05) -> None:
    """Poll `condition()` until it is true; raise after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"condition not met after {timeout} s")
        time.sleep(pause)
