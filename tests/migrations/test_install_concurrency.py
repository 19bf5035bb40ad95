"""Installing from many sessions or processes at once: every installer succeeds, one of
them installs, and the result is the schema of a single install."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from installkit import (
    LATEST_REVISION,
    ROOT,
    alembic_argv,
    alembic_revisions,
    assert_complete,
    assert_same_schema,
    install_file,
    install_with_psql,
    migrate_argv,
    psql_argv,
    snapshot,
)

from pgcoord import migrations, releases

INSTALLERS = 20
ROUNDS = 3


def run_install_file(url: str) -> None:
    """What psql -f does, from a thread: the release file as one simple-protocol string."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(install_file().read_text())


def install_at_once(url: str) -> tuple[list[tuple[str | None, str]], list[BaseException]]:
    """INSTALLERS threads released together by a barrier: half call migrate(), half run
    the install file directly. Returns what migrate() returned, and every error."""
    barrier = threading.Barrier(INSTALLERS)
    migrated: list[tuple[str | None, str]] = []
    errors: list[BaseException] = []

    def installer(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            if index % 2:
                run_install_file(url)
            else:
                migrated.append(migrations.migrate(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=installer, args=(i,)) for i in range(INSTALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return migrated, errors


def test_twenty_installers_at_once(new_db: Callable[[], str]) -> None:
    reference_url = new_db()
    install_with_psql(reference_url)
    reference = snapshot(reference_url)
    assert_complete(reference)

    for _ in range(ROUNDS):
        url = new_db()
        migrated, errors = install_at_once(url)

        assert errors == []
        assert len(migrated) == INSTALLERS // 2
        assert {after for _, after in migrated} == {releases.latest()}
        # the installers took turns: at most one migrate found an empty database
        assert [before for before, _ in migrated].count(None) <= 1
        assert_same_schema(snapshot(url), reference)


def waiting_on_install_lock(conn: psycopg.Connection[Any]) -> int:
    """Sessions waiting for the advisory lock that every installer takes."""
    row = conn.execute(
        "SELECT count(*) FROM pg_locks"
        " WHERE locktype = 'advisory' AND NOT granted AND database = ("
        "   SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND ((classid::bigint << 32) | objid::bigint) = %s",
        (migrations.INSTALL_LOCK,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_psql_migrate_and_alembic_processes_at_once(new_db: Callable[[], str]) -> None:
    reference_url = new_db()
    install_with_psql(reference_url)
    reference = snapshot(reference_url)

    url = new_db()
    commands = (
        [psql_argv(url, install_file())] * 3
        + [migrate_argv(url)] * 3
        + [alembic_argv(url, "upgrade", "head")] * 2
    )
    with psycopg.connect(url, autocommit=True) as gate:
        # Hold the installers' lock so that all of them are started and queued on it,
        # then let them go together.
        gate.execute("SELECT pg_advisory_lock(%s)", (migrations.INSTALL_LOCK,))
        procs = [
            subprocess.Popen(
                argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for argv in commands
        ]
        try:
            deadline = time.monotonic() + 60
            while waiting_on_install_lock(gate) < len(procs):
                exited = [p.args for p in procs if p.poll() is not None]
                assert exited == [], f"exited before the lock was released: {exited}"
                assert time.monotonic() < deadline, "the installers did not all start"
                time.sleep(0.05)
        finally:
            gate.execute("SELECT pg_advisory_unlock(%s)", (migrations.INSTALL_LOCK,))
        results = [(p.args, *p.communicate(timeout=120), p.returncode) for p in procs]

    failed = [(argv, err) for argv, _out, err, code in results if code != 0]
    assert failed == []
    assert_same_schema(snapshot(url), reference)
    assert alembic_revisions(url) == [LATEST_REVISION]
    installs = [out for argv, out, _err, _code in results if "migrate" in argv]
    assert sum("installed pgcoord" in out for out in installs) <= 1
