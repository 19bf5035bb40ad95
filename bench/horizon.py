"""Who holds back vacuum's horizon in the scratch database while a run is measured.

A claim by SKIP LOCKED steps over the index entries of every row claimed since the last
vacuum, and nothing can drop them while a snapshot older than those claims is held: a run
slows down the longer that lasts. The watch samples pg_stat_activity ten times a second
over a connection to the maintenance database (so that it adds nothing to the database
measured) and reports the snapshot held longest: for how long it was seen, by which kind
of process and with which statement (an autovacuum ANALYZE of a large table holds one;
a lazy VACUUM's is shown but ignored by the horizon)."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

import psycopg

INTERVAL = 0.1  # seconds between samples


class HorizonWatch:
    def __init__(self, server_url: str, database: str) -> None:
        self._url = server_url
        self._database = database
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="horizon-watch", daemon=True)
        # (pid, xmin) -> (first seen, holder)
        self._seen: dict[tuple[int, str], tuple[float, str]] = {}
        self.longest = 0.0
        self.holder = ""

    def __enter__(self) -> HorizonWatch:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def detail(self) -> dict[str, Any]:
        """The run's figures: the longest-held snapshot, in seconds, and its holder."""
        return {"longest_snapshot_s": round(self.longest, 2), "snapshot_holder": self.holder}

    def _watch(self) -> None:
        with psycopg.connect(self._url, autocommit=True) as conn:
            while not self._stop.wait(INTERVAL):
                rows = conn.execute(
                    "SELECT pid, backend_xmin::text,"
                    " backend_type || ': ' || left(coalesce(query, ''), 80)"
                    " FROM pg_catalog.pg_stat_activity"
                    " WHERE datname = %s AND backend_xmin IS NOT NULL",
                    [self._database],
                ).fetchall()
                self._note(time.monotonic(), [(int(p), str(x), str(h)) for p, x, h in rows])

    def _note(self, now: float, rows: list[tuple[int, str, str]]) -> None:
        current = {(pid, xmin): holder for pid, xmin, holder in rows}
        self._seen = {key: self._seen.get(key, (now, holder)) for key, holder in current.items()}
        for first, holder in self._seen.values():
            if now - first > self.longest:
                self.longest, self.holder = now - first, holder
