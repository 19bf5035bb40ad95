"""One version: the package's `__version__` (read by pyproject.toml, so the wheel says the
same) is the newest frozen release; `pgcoord version` shows it and what is installed."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import psycopg
import pytest

import pgcoord
from pgcoord import cli, releases

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)


def test_the_package_version_is_the_newest_release() -> None:
    """A version of the package ships its schema frozen as db/releases/<version>/:
    scripts/freeze-release VERSION when the version changes."""
    assert pgcoord.__version__ == releases.latest()


def test_the_version_is_written_once() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    path = project["tool"]["hatch"]["version"]["path"]
    assert (ROOT / path).resolve() == Path(pgcoord.__file__).resolve()
    # what pip installed says the same (scripts/bootstrap reinstalls when it changes)
    assert importlib.metadata.version("pgcoord") == pgcoord.__version__


def version_lines(url: str | None, capsys: pytest.CaptureFixture[str]) -> list[str]:
    argv = ["version"] if url is None else ["version", "--database-url", url]
    assert cli.main(argv) == 0
    return capsys.readouterr().out.splitlines()


def record_version(url: str, version: str) -> None:
    """Make the database report `version` as installed (the newest schema_version row)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO pgcoord.schema_version (version) VALUES (%s)", (version,))


def test_version_shows_the_driver_and_what_migrate_would_do(
    empty_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    newest = releases.latest()
    driver, unknown = version_lines(None, capsys)
    assert driver.startswith(f"driver:    {pgcoord.__version__}")
    assert unknown == "installed: unknown (give --database-url or set DATABASE_URL)"

    _, none = version_lines(empty_db_url, capsys)
    assert none.startswith("installed: none (database ")
    assert none.endswith(f"): pgcoord migrate installs {newest}")

    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(releases.install_sql("0.1.0"))
    _, older = version_lines(empty_db_url, capsys)
    assert older.startswith("installed: 0.1.0 (database ")
    assert older.endswith(f"): pgcoord migrate upgrades it to {newest}")

    assert cli.main(["migrate", "--database-url", empty_db_url]) == 0
    capsys.readouterr()
    _, same = version_lines(empty_db_url, capsys)
    assert same.startswith(f"installed: {newest} (database ")
    assert same.endswith(")")

    record_version(empty_db_url, "9.0.0")
    _, newer = version_lines(empty_db_url, capsys)
    assert newer.endswith("): newer than this driver, upgrade the pgcoord package")
