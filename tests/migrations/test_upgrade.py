"""Upgrading gives the schema of a fresh install of the newer release and keeps the data.

Besides the real releases, a made-up next release (the newest plus a column, a table and
a changed comment) runs the whole mechanism a later release will use: its files built by
scripts/sqlbuild.py from a changed copy of db/src (the column through a hand-written
db/src/upgrades/<next>.sql step), its upgrade.sql through migrate, and one more alembic
revision made from the revision template."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import alembic.command
import psycopg
import pytest
from installkit import (
    LATEST_REVISION,
    ROOT,
    alembic_config,
    alembic_revisions,
    alembic_upgrade,
    assert_complete,
    assert_same_schema,
    install_with_psql,
    load_sqlbuild,
    psql_argv,
    run,
    snapshot,
    without_versions,
)

from pgcoord import migrations, releases
from pgcoord.locks import lock_acquire, lock_status
from pgcoord.types import Lock

LATEST = releases.latest()
NEXT = ".".join([*LATEST.split(".")[:-1], str(int(LATEST.split(".")[-1]) + 1)])
NEXT_REVISION = f"pgcoord_{len(releases.versions()) + 1:04d}"

# The change of the made-up release, made to a copy of db/src: a new column in the
# table definition (with its hand-written upgrade step), a new table and a new comment.
NEW_COLUMN = (
    "    expires_at timestamptz NOT NULL\n",
    "    expires_at timestamptz NOT NULL,\n    note text\n",
)
UPGRADE_STEP = "ALTER TABLE pgcoord.locks ADD COLUMN IF NOT EXISTS note text;\n"
NEW_TABLE = """
CREATE TABLE IF NOT EXISTS pgcoord.upgrade_probe (
    id bigint PRIMARY KEY,
    label text NOT NULL DEFAULT '100%'
);
"""
NEW_COMMENT = (
    "'True when p_owner held p_key and it is now free; false otherwise, changing nothing. '",
    "'Changed in the next release. '",
)


def hold_lock(url: str) -> Lock:
    with psycopg.connect(url, autocommit=True) as conn:
        held = lock_acquire(conn, "upgrade-keeps-me", "worker-1", ttl=timedelta(hours=1))
    assert held.acquired
    return held


def assert_lock_kept(url: str, held: Lock) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        [kept] = lock_status(conn)
    assert (kept.key, kept.owner, kept.token) == ("upgrade-keeps-me", "worker-1", held.token)
    assert kept.expires_at == held.expires_at


def test_upgrade_from_every_release_to_the_newest(new_db: Callable[[], str]) -> None:
    reference_url = new_db()
    install_with_psql(reference_url)
    reference = snapshot(reference_url)
    assert_complete(reference)

    for version in releases.versions():
        url = new_db()
        install_with_psql(url, version)
        held = hold_lock(url)

        assert migrations.migrate(url) == (version, releases.latest())

        upgraded = snapshot(url)
        assert_same_schema(without_versions(upgraded), without_versions(reference))
        assert upgraded["schema_version"][-1] == (releases.latest(),)
        assert_lock_kept(url, held)


@pytest.fixture
def next_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A release folder with the real releases and a made-up next one built by
    scripts/sqlbuild.py from a changed copy of db/src, in use for the test."""
    sqlbuild = load_sqlbuild()
    root = tmp_path / "checkout"
    src = root / "db" / "src"
    shutil.copytree(sqlbuild.SRC, src)
    shutil.copytree(releases.releases_dir(), root / "db" / "releases")
    table = src / "010_locks.sql"
    assert NEW_COLUMN[0] in table.read_text(), "the locks table definition has changed"
    table.write_text(table.read_text().replace(*NEW_COLUMN) + NEW_TABLE)
    (src / "upgrades").mkdir(exist_ok=True)
    (src / "upgrades" / f"{NEXT}.sql").write_text(UPGRADE_STEP)
    release = src / "functions" / "lock_release.sql"
    assert NEW_COMMENT[0] in release.read_text(), "lock_release's comment has changed"
    release.write_text(release.read_text().replace(*NEW_COMMENT))
    monkeypatch.setattr(sqlbuild, "ROOT", root)
    monkeypatch.setattr(sqlbuild, "SRC", src)
    monkeypatch.setattr(sqlbuild, "RELEASES", root / "db" / "releases")

    assert sqlbuild.main([NEXT]) == 0

    folder = root / "db" / "releases"
    upgrade = (folder / NEXT / "upgrade.sql").read_text()
    assert f"-- db/src/upgrades/{NEXT}.sql\n{UPGRADE_STEP}" in upgrade
    monkeypatch.setattr(releases, "releases_dir", lambda: folder)
    assert releases.versions()[-2:] == [LATEST, NEXT]
    return folder


@pytest.fixture
def next_alembic(tmp_path: Path, next_release: Path) -> Path:
    """The alembic scripts plus a revision for the next release made from the revision
    template."""
    scripts = tmp_path / "alembic"
    shutil.copytree(ROOT / "alembic", scripts, ignore=shutil.ignore_patterns("__pycache__"))
    alembic.command.revision(alembic_config("unused", scripts), message=NEXT, rev_id=NEXT_REVISION)
    return scripts


def test_a_later_release_upgrades_to_its_fresh_install(
    new_db: Callable[[], str], next_release: Path
) -> None:
    upgraded, fresh = new_db(), new_db()
    assert migrations.migrate(upgraded, LATEST) == (None, LATEST)
    held = hold_lock(upgraded)
    assert migrations.plan(LATEST) == [(NEXT, "upgrade.sql")]

    assert migrations.migrate(upgraded) == (LATEST, NEXT)
    assert migrations.migrate(fresh) == (None, NEXT)

    after_upgrade, after_install = snapshot(upgraded), snapshot(fresh)
    assert "upgrade_probe" in {row[0] for row in after_install["relations"]}
    assert_same_schema(without_versions(after_upgrade), without_versions(after_install))
    assert after_upgrade["schema_version"] == [(LATEST,), (NEXT,)]
    assert after_install["schema_version"] == [(NEXT,)]
    assert_lock_kept(upgraded, held)

    assert migrations.migrate(upgraded) == (NEXT, NEXT)
    with pytest.raises(migrations.MigrationError, match="downgrades are not supported"):
        migrations.migrate(upgraded, LATEST)
    # the older release's install file refuses the newer database
    refused = run(psql_argv(upgraded, next_release / LATEST / "install.sql"))
    assert refused.returncode != 0
    assert f"55000: pgcoord {NEXT} is installed here" in refused.stderr
    assert_same_schema(snapshot(upgraded), after_upgrade)


def test_alembic_upgrades_through_the_next_revision(
    new_db: Callable[[], str], next_alembic: Path
) -> None:
    by_alembic, by_migrate = new_db(), new_db()
    alembic_upgrade(by_alembic, LATEST_REVISION, next_alembic)
    assert alembic_revisions(by_alembic) == [LATEST_REVISION]
    held = hold_lock(by_alembic)

    alembic_upgrade(by_alembic, "head", next_alembic)

    assert alembic_revisions(by_alembic) == [NEXT_REVISION]
    assert_lock_kept(by_alembic, held)
    migrations.migrate(by_migrate, LATEST)
    migrations.migrate(by_migrate)
    expected = snapshot(by_migrate)
    assert expected["schema_version"] == [(LATEST,), (NEXT,)]
    by_alembic_snapshot = snapshot(by_alembic)
    assert by_alembic_snapshot["schema_version"][-1] == (NEXT,)
    assert_same_schema(without_versions(by_alembic_snapshot), without_versions(expected))


def test_alembic_adopts_a_newer_install_made_by_migrate(
    new_db: Callable[[], str], next_alembic: Path
) -> None:
    url = new_db()
    assert migrations.migrate(url) == (None, NEXT)
    before = snapshot(url)

    alembic_upgrade(url, "head", next_alembic)

    assert alembic_revisions(url) == [NEXT_REVISION]
    assert_same_schema(snapshot(url), before)
