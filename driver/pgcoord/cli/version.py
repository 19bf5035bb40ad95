"""`pgcoord version`: the driver's version, and the release installed in the database
(when one is given) with what `pgcoord migrate` would do about it."""

from __future__ import annotations

import argparse

from .. import __version__, config, migrations, releases
from . import database
from .command import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    database.add_option(parser)


def run(args: argparse.Namespace) -> int:
    newest = releases.latest()
    if __version__ == newest:
        print(f"driver:    {__version__}")
    else:  # a checkout between releases: the next version is not frozen yet
        print(f"driver:    {__version__} (not frozen yet: pgcoord migrate installs {newest})")
    if database.given_url(args) is None:
        print(f"installed: unknown (give {database.OPTION} or set {database.VARIABLE})")
        return 0
    with database.connect(args) as conn:
        installed = migrations.installed_version(conn)
        where = config.where(conn)
    print(f"installed: {installed or 'none'} ({where}){_next_step(installed, newest)}")
    return 0


def _next_step(installed: str | None, newest: str) -> str:
    if installed is None:
        return f": pgcoord migrate installs {newest}"
    if installed == newest:
        return ""
    if releases.version_key(installed) < releases.version_key(newest):
        return f": pgcoord migrate upgrades it to {newest}"
    return ": newer than this driver, upgrade the pgcoord package"


COMMAND = Command(
    "version",
    "show the driver's version and the release installed in the database",
    add_arguments,
    run,
)
