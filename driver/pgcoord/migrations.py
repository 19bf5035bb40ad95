"""Install or upgrade the pgcoord schema from the frozen release files (db/releases/).

No pgcoord in the database: the target release's install.sql. An older release: the
upgrade.sql of every later release up to the target, in order. The target already
installed: nothing is run. Each file is one transaction of its own (BEGIN ... COMMIT,
guarded by an advisory transaction lock), sent as-is, without parameters, so `%` in its
RAISE formats reaches the server untouched.

`migrate` holds the same advisory lock (session-level) from reading the installed
version until the last file has committed, so concurrent installers, whether `migrate`,
`alembic upgrade head` or `psql -f install.sql`, take turns and each sees what the one
before it did. Being a session lock, it needs a direct connection to the server (or a
session-mode pooler), as migration tools generally do; the pgcoord functions themselves
work through transaction-mode poolers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg import pq

from . import config, query, releases, sql
from .errors import MigrationError, NotInstalled, PermissionDenied, translated

# the advisory lock key that every release file takes (scripts/sqlbuild.py writes it in)
INSTALL_LOCK = 7_001_517_330_252_001

INSTALL = "install.sql"
UPGRADE = "upgrade.sql"

# What a release file needs, said when the server refused it for want of a privilege
INSUFFICIENT_PRIVILEGE = "42501"
PRIVILEGES = (
    "installing pgcoord needs CREATE on the database, and CREATEROLE unless the role "
    "pgcoord_client exists: an administrator may create it first (CREATE ROLE "
    "pgcoord_client NOLOGIN); upgrading needs the role that owns schema pgcoord"
)


def installed_version(conn: psycopg.Connection[Any]) -> str | None:
    """The pgcoord version installed in the connection's database, None when there is none."""
    try:
        with translated():
            row = conn.execute(sql.VERSION, prepare=False).fetchone()
    except NotInstalled:  # the schema or pgcoord.version() is missing
        _rollback_failed(conn)
        return None
    except PermissionDenied as denied:  # with the GRANT the role needs, as a call's
        raise query.advised(conn, denied) from denied.__cause__
    return row[0] if row else None


def plan(installed: str | None, target: str | None = None) -> list[tuple[str, str]]:
    """The release files, as (version, file name), that take a database from `installed`
    (None: no pgcoord) to `target` (default: the newest release), in the order to run."""
    known = releases.versions()
    target = target or known[-1]
    if target not in known:
        raise MigrationError(f"unknown pgcoord release {target}; releases: {', '.join(known)}")
    if installed is None:
        return [(target, INSTALL)]
    if installed == target:
        return []
    if installed not in known:
        if releases.version_key(installed) > releases.version_key(known[-1]):
            raise MigrationError(
                f"pgcoord {installed} is installed, newer than {known[-1]}, the newest release "
                "this driver knows; upgrade the pgcoord package"
            )
        raise MigrationError(
            f"pgcoord {installed} is installed, which is not a release this driver knows "
            f"(releases: {', '.join(known)}); it cannot be upgraded automatically"
        )
    if releases.version_key(installed) > releases.version_key(target):
        raise MigrationError(
            f"pgcoord {installed} is installed, newer than {target}; downgrades are not supported"
        )
    start = known.index(installed)
    stop = known.index(target)
    return [(version, UPGRADE) for version in known[start + 1 : stop + 1]]


def migrate(
    conninfo_or_connection: str | psycopg.Connection[Any], target: str | None = None
) -> tuple[str | None, str]:
    """Bring the database to release `target` (default: the newest release) and return
    (version installed before, version installed after); before is None when pgcoord was
    not installed. Raises MigrationError when that is not possible (unknown version,
    downgrade, a release file that failed); psycopg errors for connection problems.

    A connection that is passed in must be outside a transaction; it is switched to
    autocommit for the call and left as it was."""
    with _session(conninfo_or_connection) as conn, _install_lock(conn):
        return _bring_to(conn, target, keep_newer=False)


def apply_release(conn: psycopg.Connection[Any], version: str) -> tuple[str | None, str]:
    """Make sure release `version` (or a newer one) is installed, and return (before,
    after) like `migrate`. Used by the alembic revisions, one release each: a database
    where a newer release was installed by other means is left as it is, so the install
    methods can be mixed."""
    with _session(conn) as session, _install_lock(session):
        return _bring_to(session, version, keep_newer=True)


def _bring_to(
    conn: psycopg.Connection[Any], target: str | None, *, keep_newer: bool
) -> tuple[str | None, str]:
    try:
        before = installed_version(conn)
    except PermissionDenied as denied:  # the GRANT it names lets a role call, not migrate
        found = conn.execute(sql.SCHEMA_OWNER, prepare=False).fetchone()
        owner = found[0] if found else "its owner"
        raise MigrationError(
            f"{conn.info.user} may not read the version of the pgcoord installed here",
            denied.sqlstate,
            f"install and upgrade pgcoord as the role that owns schema pgcoord: {owner}",
        ) from denied
    if (
        keep_newer
        and before is not None
        and target is not None
        and releases.version_key(before) >= releases.version_key(target)
    ):
        return before, before
    steps = plan(before, target)
    for version, name in steps:
        run_release_file(conn, version, name)
    after = installed_version(conn)
    expected = steps[-1][0] if steps else before
    if after is None or after != expected:
        raise MigrationError(
            f"after running {_describe(steps)} the database reports pgcoord {after}, not {expected}"
        )
    return before, after


def run_release_file(conn: psycopg.Connection[Any], version: str, name: str) -> None:
    """Run one release file as-is: one string, simple query protocol, no parameters."""
    path = releases.releases_dir() / version / name
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise MigrationError(f"release {version} has no {name} (looked for {path})") from None
    try:
        conn.execute(text.encode())
    except psycopg.Error as exc:
        if isinstance(exc, psycopg.OperationalError) and conn.closed:
            raise
        _rollback_failed(conn)
        diag = exc.diag
        hint = diag.message_hint
        if exc.sqlstate == INSUFFICIENT_PRIVILEGE and hint is None:
            hint = PRIVILEGES
        raise MigrationError(
            f"{version}/{name} failed: {diag.message_primary or exc}", exc.sqlstate, hint
        ) from exc


def _describe(steps: list[tuple[str, str]]) -> str:
    return ", ".join(f"{version}/{name}" for version, name in steps) or "nothing"


def _rollback_failed(conn: psycopg.Connection[Any]) -> None:
    """Leave the aborted transaction a failed multi-statement string may have left open."""
    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        conn.rollback()


@contextmanager
def _session(
    conninfo_or_connection: str | psycopg.Connection[Any],
) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection: a new one for a conninfo, else the caller's, switched to
    autocommit for the duration."""
    if isinstance(conninfo_or_connection, str):
        timeout = config.connect_timeout(conninfo_or_connection)
        with psycopg.connect(
            conninfo_or_connection, autocommit=True, connect_timeout=timeout
        ) as conn:
            yield conn
        return
    conn = conninfo_or_connection
    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        raise MigrationError("migrate needs a connection that is not inside a transaction")
    was_autocommit = conn.autocommit
    conn.autocommit = True
    try:
        yield conn
    finally:
        if not conn.closed:
            _rollback_failed(conn)
            conn.autocommit = was_autocommit


@contextmanager
def _install_lock(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Hold the install lock for the session (re-entrant, so nesting is fine)."""
    conn.execute(sql.INSTALL_LOCK, {"key": INSTALL_LOCK})
    try:
        yield
    finally:
        if not conn.closed:
            # a lost connection has lost its lock too
            with suppress(psycopg.OperationalError):
                _rollback_failed(conn)
                conn.execute(sql.INSTALL_UNLOCK, {"key": INSTALL_LOCK})
