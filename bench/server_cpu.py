"""CPU time spent by a server on this machine, read from Linux's /proc: the postmaster,
its live children (backends, WAL writer, checkpointer, ...) and the children it has
already reaped. Unlike throughput, it barely moves when other programs share the cores,
so it tells what a variant costs the server per pair."""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3 onwards)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` so far (all its threads), None when it
    has gone."""
    fields = _stat(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


class ServerCpu:
    def __init__(self, postmaster: int) -> None:
        self.postmaster = postmaster

    @classmethod
    def find(cls, backend_pid: int) -> ServerCpu | None:
        """From the pid a connection reports (pg_backend_pid()): None when that process is
        not visible here as a postgres child of a postgres process (a remote server, or a
        different pid namespace)."""
        fields = _stat(backend_pid)
        if fields is None or not _comm(backend_pid).startswith("postgres"):
            return None
        parent = int(fields[1])
        if _comm(parent) not in ("postgres", "postmaster"):
            return None
        return cls(parent)

    def _own(self) -> tuple[int, int]:
        """(utime + stime, cutime + cstime) of the postmaster, in clock ticks."""
        fields = _stat(self.postmaster)
        if fields is None:
            raise RuntimeError(f"server process {self.postmaster} has gone")
        # fields[11:15]: utime, stime, cutime, cstime (fields 14 to 17 of stat)
        return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])

    def _children(self) -> int:
        total = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == self.postmaster:
                total += int(fields[11]) + int(fields[12])
        return total

    def seconds(self) -> float:
        """CPU seconds used so far. A child reaped while its siblings are read would be
        counted twice or not at all, so read again until the reaped total holds still."""
        while True:
            _, reaped = self._own()
            children = self._children()
            own_after, reaped_after = self._own()
            if reaped_after == reaped:
                return (own_after + reaped + children) / TICKS
