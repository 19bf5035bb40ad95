"""PgBouncer in transaction mode in front of the test server, as the tests' own process.

`pgbouncer(server_url)` starts a private PgBouncer on a free port of 127.0.0.1: every
database of the server through it (a wildcard entry), transaction pooling with
POOL_SIZE server connections per database, and no prepared statements across
transactions (PgBouncer before 1.21 has none; later ones get max_prepared_statements =
0), the strict case that Supavisor and most managed poolers match. It logs in to the
server as the server URL's user, with its password when it has one.

PgBouncer refuses to run as root: as root it runs as the owner of the server's socket
(the embedded server listens on a unix socket only), or else as `postgres` or `nobody`.
The program is `pgbouncer` on PATH or /usr/sbin/pgbouncer (scripts/pgbouncer-install
installs Debian's package; scripts/test runs it first), or PGCOORD_TEST_PGBOUNCER.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

POOL_SIZE = 4  # server connections per database
MAX_CLIENTS = 200
START_TIMEOUT = 15.0
PROGRAM_ENV = "PGCOORD_TEST_PGBOUNCER"


@dataclass(frozen=True)
class Pooler:
    """A running PgBouncer: `url` reaches the server's own database through it."""

    url: str
    pool_size: int
    version: tuple[int, ...]

    def database_url(self, url: str) -> str:
        """The database of `url` (a direct URL of the test server), through the pooler."""
        return make_conninfo(self.url, dbname=conninfo_to_dict(url)["dbname"])

    def prepared_statements(self, url: str) -> dict[int, list[str]]:
        """The prepared statements of each server session of the pool of `url`'s
        database, by backend pid: pool_size transactions held open at once occupy every
        session the pool may have. Call it when no other client of that database is
        busy."""
        found: dict[int, list[str]] = {}
        with ExitStack() as stack:
            for _ in range(self.pool_size):
                conn = stack.enter_context(
                    psycopg.connect(self.database_url(url), prepare_threshold=None)
                )
                (pid,) = conn.execute("SELECT pg_backend_pid()").fetchone() or ()
                names = conn.execute("SELECT name FROM pg_prepared_statements").fetchall()
                found[pid] = [name for (name,) in names]
        assert len(found) == self.pool_size, f"open transactions shared a session: {found}"
        return found

    def pools(self) -> list[dict[str, Any]]:
        """SHOW POOLS of the admin console: per database and user, the clients active and
        waiting for a server (cl_active, cl_waiting) and the servers in use (sv_active)."""
        admin = make_conninfo(self.url, dbname="pgbouncer")
        # the admin console speaks the simple query protocol only
        with psycopg.connect(admin, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
            cur = conn.execute("SHOW POOLS")
            names = [column.name for column in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def pool(self, url: str) -> dict[str, Any]:
        """The SHOW POOLS row of the database of `url` (zeros before its first client)."""
        dbname = conninfo_to_dict(url)["dbname"]
        rows = [row for row in self.pools() if row["database"] == dbname]
        return rows[0] if rows else {"cl_active": 0, "cl_waiting": 0, "sv_active": 0}


def program() -> str:
    """The pgbouncer executable, or RuntimeError saying how to get one."""
    named = os.environ.get(PROGRAM_ENV)
    if named:
        if not os.access(named, os.X_OK):
            raise RuntimeError(f"{PROGRAM_ENV}={named} is not an executable")
        return named
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if not found:
        raise RuntimeError(
            "pgbouncer is not installed: run scripts/pgbouncer-install (scripts/test does), "
            f"or set {PROGRAM_ENV} to a PgBouncer 1.18+ executable"
        )
    return found


def version(executable: str) -> tuple[int, ...]:
    out = subprocess.run(
        [executable, "--version"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"PgBouncer (\d+)\.(\d+)\.(\d+)", out)
    if not found:
        raise RuntimeError(f"cannot read the version of {executable}: {out!r}")
    return tuple(int(part) for part in found.groups())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_as(host: str, port: int) -> pwd.struct_passwd | None:
    """Who PgBouncer runs as: None (this user) unless root; then the owner of the
    server's unix socket, or postgres, or nobody."""
    if os.geteuid() != 0:
        return None
    if host.startswith("/"):
        try:
            owner = os.stat(Path(host) / f".s.PGSQL.{port}").st_uid
        except OSError:
            owner = 0
        if owner != 0:
            return pwd.getpwuid(owner)
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("no user to run pgbouncer as (it refuses root): create 'postgres'")


def quoted(value: str) -> str:
    """A value for pgbouncer.ini's connection strings and auth file."""
    return '"' + value.replace('"', '""') + '"'


def config(
    *,
    host: str,
    port: int,
    user: str,
    listen_port: int,
    folder: Path,
    pool_size: int,
    version: tuple[int, ...],
) -> str:
    server = f"host={host} port={port}"
    lines = [
        "[databases]",
        f"* = {server}",
        "",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {listen_port}",
        "unix_socket_dir =",
        "auth_type = trust",
        f"auth_file = {folder / 'users.txt'}",
        f"stats_users = {user}",  # SHOW POOLS
        "pool_mode = transaction",
        f"default_pool_size = {pool_size}",
        "min_pool_size = 0",
        "reserve_pool_size = 0",
        f"max_client_conn = {MAX_CLIENTS}",
        # libpq-based clients may send these; pgbouncer refuses unknown ones otherwise
        "ignore_startup_parameters = extra_float_digits,options",
        f"pidfile = {folder / 'pgbouncer.pid'}",
        "log_connections = 0",
        "log_disconnections = 0",
    ]
    if version >= (1, 21):  # the setting exists from 1.21 on; 0 keeps the strict case
        lines.append("max_prepared_statements = 0")
    return "\n".join(lines) + "\n"


@contextmanager
def pgbouncer(server_url: str, pool_size: int = POOL_SIZE) -> Iterator[Pooler]:
    """Start PgBouncer in front of the server of `server_url`; stop it on exit."""
    executable = program()
    release = version(executable)
    with psycopg.connect(server_url, connect_timeout=10) as conn:
        host, port = conn.info.host, conn.info.port
        user, password, dbname = conn.info.user, conn.info.password, conn.info.dbname
    owner = run_as(host, port)
    folder = Path(tempfile.mkdtemp(prefix="pgcoord-pgbouncer-"))
    log_path = folder / "pgbouncer.log"
    try:
        users = folder / "users.txt"
        users.write_text(f"{quoted(user)} {quoted(password or '')}\n")
        users.chmod(0o600)
        if owner is not None:
            for path in (folder, users):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        command, identity = launcher(owner)
        for _ in range(3):  # another process may take the free port first
            listen_port = free_port()
            (folder / "pgbouncer.ini").write_text(
                config(
                    host=host,
                    port=port,
                    user=user,
                    listen_port=listen_port,
                    folder=folder,
                    pool_size=pool_size,
                    version=release,
                )
            )
            url = make_conninfo("", host="127.0.0.1", port=listen_port, user=user, dbname=dbname)
            with log_path.open("w") as log:
                process = subprocess.Popen(
                    [*command, executable, str(folder / "pgbouncer.ini")],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    **identity,
                )
            try:
                if answers(url, process):
                    yield Pooler(url, pool_size, release)
                    return
            finally:
                stop(process)
        raise RuntimeError("pgbouncer did not start:\n" + log_path.read_text()[-4000:])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def launcher(owner: pwd.struct_passwd | None) -> tuple[list[str], dict[str, Any]]:
    """The command prefix and Popen arguments that start PgBouncer as `owner` (None:
    as this user), stopped by the kernel should the test process die first."""
    if shutil.which("setpriv"):
        identity = []
        if owner is not None:
            identity = [f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--clear-groups"]
        return ["setpriv", "--pdeathsig=TERM", *identity, "--"], {}
    if owner is not None:
        return [], {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    return [], {}


def answers(url: str, process: subprocess.Popen[bytes]) -> bool:
    """Wait until the pooler answers a query; False when it exited (a taken port)."""
    deadline = time.monotonic() + START_TIMEOUT
    while process.poll() is None:
        try:
            with psycopg.connect(url, connect_timeout=2, prepare_threshold=None) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer does not answer at {url}: {exc}") from exc
            time.sleep(0.05)
    return False


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()  # immediate shutdown
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
