"""The frozen release files and the alembic revisions agree with each other and with
db/src: adding a release is its folder plus one revision, and db/src cannot drift."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import ModuleType

import alembic.command
import alembic.util
import pytest
from alembic.script import ScriptDirectory
from installkit import ROOT, alembic_config, load_sqlbuild

from pgcoord import migrations, releases


def test_newest_release_is_what_db_src_builds() -> None:
    sqlbuild = load_sqlbuild()
    known = releases.versions()
    newest = known[-1]
    assert sqlbuild.build(newest) == releases.install_sql(newest), (
        f"db/src differs from db/releases/{newest}/install.sql: a released version is "
        "frozen; change db/src together with a new version (scripts/freeze-release)"
    )
    if len(known) > 1:
        assert sqlbuild.build_upgrade(newest, known[-2]) == releases.upgrade_sql(newest)


def test_every_release_file_is_one_transaction_under_the_install_lock() -> None:
    assert load_sqlbuild().INSTALL_LOCK == migrations.INSTALL_LOCK
    known = releases.versions()
    assert known[0] == "0.1.0"
    files = [releases.releases_dir() / version / "install.sql" for version in known]
    # every release after the first upgrades from the one before it
    files += [releases.releases_dir() / version / "upgrade.sql" for version in known[1:]]
    for path in files:
        text = path.read_text()
        assert text.count("\nBEGIN;\n") == 1, path
        assert text.rstrip().endswith("COMMIT;"), path
        # the install lock first: SELECT in the frozen 0.1.0 and 0.2.0, PERFORM since
        lock = f"pg_advisory_xact_lock({migrations.INSTALL_LOCK});"
        assert f"SELECT {lock}" in text or f"PERFORM {lock}" in text, path
        assert text.index(lock) < text.index("\nCREATE "), path
        version = path.parent.name
        assert f"INSERT INTO pgcoord.schema_version (version) VALUES ('{version}')" in text, path


def revisions_base_first(script: ScriptDirectory) -> list[ModuleType]:
    return [revision.module for revision in reversed(list(script.walk_revisions()))]


def test_alembic_revisions_follow_the_releases() -> None:
    script = ScriptDirectory.from_config(alembic_config("unused"))
    assert len(script.get_heads()) == 1
    modules = revisions_base_first(script)
    assert [module.RELEASE for module in modules] == releases.versions()
    assert [module.revision for module in modules] == [
        f"pgcoord_{n:04d}" for n in range(1, len(modules) + 1)
    ]
    assert modules[0].down_revision is None
    assert modules[0].branch_labels == ("pgcoord",)
    for module in modules:
        source = Path(module.__file__ or "").read_text()
        assert "db/src" not in source
        # the step an application's own revisions call too (pgcoord.alembic)
        assert "pgcoord.alembic.upgrade(op, to=RELEASE)" in source


def test_revision_template_makes_the_next_release_revision(tmp_path: Path) -> None:
    scripts = tmp_path / "alembic"
    shutil.copytree(ROOT / "alembic", scripts, ignore=shutil.ignore_patterns("__pycache__"))
    config = alembic_config("unused", scripts)

    alembic.command.revision(config, message="9.9.9", rev_id="pgcoord_9999")

    script = ScriptDirectory.from_config(config)
    newest = revisions_base_first(script)[-1]
    assert newest.revision == "pgcoord_9999"
    assert newest.RELEASE == "9.9.9"
    assert newest.down_revision == f"pgcoord_{len(releases.versions()):04d}"
    assert newest.branch_labels is None


def test_alembic_offline_mode_points_to_the_install_file() -> None:
    with pytest.raises(alembic.util.CommandError, match=r"install\.sql, for psql -f"):
        alembic.command.upgrade(alembic_config("postgresql://nowhere/db"), "head", sql=True)
