"""The frozen SQL releases shipped with the driver (db/releases/<version>/)."""

from __future__ import annotations

from pathlib import Path


def releases_dir() -> Path:
    """The folder of release folders: inside the wheel, or the checkout's db/releases."""
    here = Path(__file__).resolve().parent
    packaged = here / "db" / "releases"
    if packaged.is_dir():
        return packaged
    return here.parent.parent / "db" / "releases"


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def versions() -> list[str]:
    """Every released version, oldest first."""
    found = [p.name for p in releases_dir().iterdir() if (p / "install.sql").is_file()]
    return sorted(found, key=version_key)


def latest() -> str:
    return versions()[-1]


def install_sql(version: str | None = None) -> str:
    """The single install file of a version (the newest by default)."""
    return (releases_dir() / (version or latest()) / "install.sql").read_text()


def upgrade_sql(version: str) -> str:
    """The file that upgrades the previous release to `version`."""
    return (releases_dir() / version / "upgrade.sql").read_text()
