"""What scripts/test says about its servers and runs, each on one line:

python scripts/suite_report.py server [URL]   host:port PostgreSQL 15.19, or the reason
                                              the server cannot be used (status 1 or 2);
                                              without URL, $DATABASE_URL
python scripts/suite_report.py embedded       embedded PostgreSQL 18.4
python scripts/suite_report.py tally FILE     412 passed, 2 failed (a pytest --junitxml)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from pgcoord.cli import database
from pgcoord.cli.errors import CommandError
from pgcoord.cli.main import guarded

SERVER_VERSION = "SELECT current_setting('server_version')"


def server(url: str | None) -> int:
    """The server of `url` (else $DATABASE_URL), reached within the connect timeout."""
    with database.connect(argparse.Namespace(database_url=url)) as conn:
        row = conn.execute(SERVER_VERSION).fetchone()
        where = f"{conn.info.host}:{conn.info.port}"
    version = str(row[0]).split()[0] if row else "?"
    print(f"{where} PostgreSQL {version}")
    return 0


def embedded() -> int:
    """The embedded server's version, from its own program (no server started)."""
    from pgcoord.embedded import bin_dir

    said = subprocess.run(
        [str(bin_dir() / "postgres"), "--version"], capture_output=True, text=True, check=False
    )
    if said.returncode != 0:
        raise CommandError(f"the embedded postgres does not run: {said.stderr.strip()}")
    print(f"embedded PostgreSQL {said.stdout.split()[-1]}")
    return 0


def tally(path: Path) -> int:
    """Passed, failed, errors and skipped of a pytest run, from its JUnit XML."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        print("no result (pytest stopped before its report)")
        return 0
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    keys = ("tests", "failures", "errors", "skipped")
    counts = {key: sum(int(suite.get(key, 0)) for suite in suites) for key in keys}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    words = [f"{passed} passed"] + [
        f"{counts[key]} {word}"
        for key, word in (("failures", "failed"), ("errors", "errors"), ("skipped", "skipped"))
        if counts[key]
    ]
    print(", ".join(words))
    return 0


def main(argv: list[str]) -> int:
    match argv:
        case ["server"]:
            return guarded("scripts/test: ", lambda: server(None))
        case ["server", url]:
            return guarded("scripts/test: ", lambda: server(url))
        case ["embedded"]:
            return guarded("scripts/test: ", embedded)
        case ["tally", path]:
            return tally(Path(path))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
