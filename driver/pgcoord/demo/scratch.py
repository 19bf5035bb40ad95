"""Where a scene with worker processes (`Scene`) plays: a scratch database of its own
(`pgcoord_demo_<run>...`, created next to the given one and dropped at the end), with
pgcoord installed and the scene's ledger schema, and a folder for the workers' logs. No
worker of the demo ever touches another application's data, nor another application's
workers the demo's."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from pgcoord.migrations import migrate

from . import checks, server
from .ledger import Roster
from .output import Report
from .workers import WorkerProcess, stop_all, wait_ready

READY_TIMEOUT = 60.0  # seconds for the worker processes to start


class Scene:
    """A scene whose worker processes play in a scratch database next to the one of
    `url`; `number` is that of its first heading."""

    def __init__(self, url: str, run: str, report: Report, number: int) -> None:
        self.url = url
        self.run = run
        self.report = report
        self.number = number

    def muster(
        self,
        stack: ExitStack,
        conn: psycopg.Connection[Any],
        roster: Roster,
        workers: Sequence[WorkerProcess],
        command: str,
    ) -> None:
        """Stop `workers` when `stack` closes; wait until all are ready in `roster`
        (SceneError when one died or they took too long), and say so."""
        stack.callback(stop_all, workers)
        start = time.perf_counter()
        wait_ready(conn, roster, workers, READY_TIMEOUT)
        self.report.line(
            f"{len(workers)} worker processes ({command}) ready in "
            f"{time.perf_counter() - start:.1f} s: "
            + ", ".join(f"{w.name} pid {w.pid}" for w in workers)
        )


@dataclass(frozen=True, slots=True)
class Scratch:
    """A scene's scratch database (its URL and a connection) and its logs folder."""

    url: str
    conn: psycopg.Connection[Any]
    logs: Path


def open_scratch(
    stack: ExitStack, url: str, name: str, roster: Roster, report: Report, scene: str
) -> Scratch | None:
    """Create the database `name` on the server of `url`, install pgcoord and `roster`'s
    schema in it and say so in `report`; all removed when `stack` closes. None, and a
    failed check naming `scene`, when the role may not create a database."""
    try:
        database = stack.enter_context(server.scratch_database(url, name))
    except psycopg.errors.InsufficientPrivilege as exc:
        report.add(checks.own_scratch_database(scene, exc))
        return None
    conn = stack.enter_context(server.connect(database))
    _, version = migrate(conn)
    roster.create(conn)
    report.line(f"in a scratch database {name!r} with pgcoord {version}, dropped at the end")
    logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pgcoord-")))
    return Scratch(database, conn, logs)
