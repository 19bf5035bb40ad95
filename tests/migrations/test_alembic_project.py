"""An application's own Alembic project installs pgcoord with pgcoord.alembic.upgrade in
its revisions: pgcoord installed from its wheel (not the checkout), `alembic upgrade head`
run in a folder outside the checkout, against a fresh database."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from installkit import (
    ROOT,
    VENV_BIN,
    assert_complete,
    assert_same_schema,
    snapshot,
    without_versions,
)
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.engine import URL

from pgcoord import migrations, releases

ALEMBIC_FAILED = 255  # the alembic command's exit status after "FAILED: <one line>"

ENV_PY = '''
"""The application's Alembic environment: its database from APP_DATABASE_URL."""
import os

from alembic import context
from sqlalchemy import create_engine, pool

engine = create_engine(os.environ["APP_DATABASE_URL"], poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
'''

# the environment of `alembic init -t async`, as an asyncio application has it
ASYNC_ENV_PY = '''
"""The application's Alembic environment, async: its database from APP_DATABASE_URL."""
import asyncio
import os

from alembic import context
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import create_async_engine


def run(connection):
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()


async def main():
    engine = create_async_engine(os.environ["APP_DATABASE_URL"], poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(run)
    await engine.dispose()


asyncio.run(main())
'''

NOTES = '''
"""The application's own table."""
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.execute("CREATE TABLE notes (id bigint PRIMARY KEY, body text NOT NULL)")


def downgrade() -> None:
    op.execute("DROP TABLE notes")
'''

PGCOORD = '''
"""pgcoord {release}."""
from alembic import op

import pgcoord.alembic

revision = "{revision}"
down_revision = "{down}"


def upgrade() -> None:
    pgcoord.alembic.upgrade(op, to="{release}")


def downgrade() -> None:
    pgcoord.alembic.downgrade(op)
'''


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pgcoord as its wheel installs it: the wheel built from the checkout, unpacked in a
    folder of its own (a pure-Python wheel is its files), to go first on PYTHONPATH."""
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = out.glob("pgcoord-*.whl")
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as unpacked:
        unpacked.extractall(site)
    return site


def project(folder: Path, *releases_in_order: str, env: str = ENV_PY) -> Path:
    """A minimal application Alembic project: env.py, its own first revision, then one
    revision per pgcoord release given."""
    versions = folder / "migrations" / "versions"
    versions.mkdir(parents=True)
    (folder / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    (folder / "migrations" / "env.py").write_text(env)
    (versions / "0001_notes.py").write_text(NOTES)
    down = "0001"
    for number, release in enumerate(releases_in_order, start=2):
        revision = f"{number:04d}"
        text = PGCOORD.format(release=release, revision=revision, down=down)
        (versions / f"{revision}_pgcoord.py").write_text(text)
        down = revision
    return folder


def sqlalchemy_url(conninfo: str) -> str:
    """The test database as the application writes it: postgresql+psycopg://..."""
    params = {key: str(value) for key, value in conninfo_to_dict(conninfo).items()}
    return URL.create("postgresql+psycopg", query=params).render_as_string(hide_password=False)


def alembic(folder: Path, site: Path, url: str, *command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    env["APP_DATABASE_URL"] = sqlalchemy_url(url)
    return subprocess.run(
        [str(VENV_BIN / "alembic"), *command],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def app_revisions(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]


def pgcoord_version(url: str) -> str | None:
    with psycopg.connect(url, autocommit=True) as conn:
        return migrations.installed_version(conn)


def test_pgcoord_is_imported_from_the_wheel(wheel_site: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(wheel_site)
    probe = "import pgcoord.alembic, pgcoord.releases as r; print(r.releases_dir())"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == wheel_site / "pgcoord" / "db" / "releases"


def test_an_application_revision_installs_then_upgrades_pgcoord(
    wheel_site: Path, tmp_path: Path, new_db: Callable[[], str]
) -> None:
    first, newest = releases.versions()[0], releases.latest()
    app = project(tmp_path / "app", first, newest)
    url, expected = new_db(), new_db()
    assert not ROOT.resolve().is_relative_to(tmp_path.resolve())

    done = alembic(app, wheel_site, url, "upgrade", "0002")
    assert done.returncode == 0, done.stderr
    assert (app_revisions(url), pgcoord_version(url)) == (["0002"], first)

    done = alembic(app, wheel_site, url, "upgrade", "head")
    assert done.returncode == 0, done.stderr
    assert (app_revisions(url), pgcoord_version(url)) == (["0003"], newest)
    with psycopg.connect(url) as conn:  # the application's own revision ran too
        assert conn.execute("SELECT to_regclass('public.notes')::text").fetchone() == ("notes",)
    migrations.migrate(expected)
    installed = snapshot(url)
    assert_complete(snapshot(expected))
    assert_same_schema(without_versions(installed), without_versions(snapshot(expected)))

    again = alembic(app, wheel_site, url, "upgrade", "head")
    assert again.returncode == 0, again.stderr
    assert_same_schema(snapshot(url), installed)


def test_an_async_environment_installs_pgcoord_too(
    wheel_site: Path, tmp_path: Path, new_db: Callable[[], str]
) -> None:
    """`alembic init -t async`: the bind's connection is a psycopg AsyncConnection, and
    the release files run on a connection of their own made from the engine's URL."""
    app = project(tmp_path / "app", releases.latest(), env=ASYNC_ENV_PY)
    url = new_db()

    done = alembic(app, wheel_site, url, "upgrade", "head")

    assert done.returncode == 0, done.stderr
    assert (app_revisions(url), pgcoord_version(url)) == (["0002"], releases.latest())
    assert_complete(snapshot(url))


def test_a_newer_install_is_left_as_it_is(
    wheel_site: Path, tmp_path: Path, new_db: Callable[[], str]
) -> None:
    """A revision naming an older release adopts a database where pgcoord migrate put
    the newest."""
    url = new_db()
    migrations.migrate(url)
    before = snapshot(url)
    app = project(tmp_path / "app", releases.versions()[0])

    done = alembic(app, wheel_site, url, "upgrade", "head")

    assert done.returncode == 0, done.stderr
    assert app_revisions(url) == ["0002"]
    assert_same_schema(snapshot(url), before)


def test_a_release_the_package_does_not_have_is_refused_on_one_line(
    wheel_site: Path, tmp_path: Path, new_db: Callable[[], str]
) -> None:
    url = new_db()
    app = project(tmp_path / "app", "9.9.9")

    done = alembic(app, wheel_site, url, "upgrade", "head")

    assert done.returncode == ALEMBIC_FAILED
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED:")]
    assert failed == [
        "FAILED: no pgcoord release '9.9.9' in this package, which has "
        f"{', '.join(releases.versions())}; upgrade the pgcoord package"
    ], done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert pgcoord_version(url) is None
    with psycopg.connect(url) as conn:  # the run's transaction was rolled back
        assert conn.execute("SELECT to_regclass('public.notes')").fetchone() == (None,)


def test_offline_mode_points_to_the_install_file(
    wheel_site: Path, tmp_path: Path, new_db: Callable[[], str]
) -> None:
    app = project(tmp_path / "app", releases.latest())
    env_py = app / "migrations" / "env.py"
    env_py.write_text(
        ENV_PY.replace(
            "engine = create_engine",
            "if context.is_offline_mode():\n"
            "    context.configure(url=os.environ['APP_DATABASE_URL'])\n"
            "    with context.begin_transaction():\n"
            "        context.run_migrations()\n"
            "    raise SystemExit(0)\n"
            "engine = create_engine",
        )
    )
    done = alembic(app, wheel_site, new_db(), "upgrade", "head", "--sql")
    assert done.returncode == ALEMBIC_FAILED
    assert "FAILED: pgcoord has no offline (--sql) mode" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
