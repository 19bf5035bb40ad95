"""scripts/test checks DATABASE_URL before anything else, failing within seconds on one
line that names the cause, and ends with one line of what passed and failed where
(scripts/suite_report.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFUSED = "postgresql://postgres:secret@127.0.0.1:1/postgres?connect_timeout=5"


def suite_report() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "suite_report", ROOT / "scripts" / "suite_report.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="{errors}" failures="{failures}"
 skipped="{skipped}" tests="{tests}" time="1.0"></testsuite></testsuites>"""


@pytest.mark.parametrize(
    ("counts", "said"),
    [
        ({"tests": 412, "failures": 0, "errors": 0, "skipped": 0}, "412 passed\n"),
        ({"tests": 412, "failures": 2, "errors": 0, "skipped": 0}, "410 passed, 2 failed\n"),
        (
            {"tests": 10, "failures": 1, "errors": 2, "skipped": 3},
            "4 passed, 1 failed, 2 errors, 3 skipped\n",
        ),
    ],
)
def test_tally_counts_a_run(
    tmp_path: Path, counts: dict[str, int], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    junit = tmp_path / "run.xml"
    junit.write_text(JUNIT.format(**counts))
    assert suite_report().main(["tally", str(junit)]) == 0
    assert capsys.readouterr().out == said


def test_tally_of_a_run_that_wrote_no_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert suite_report().main(["tally", str(tmp_path / "missing.xml")]) == 0
    assert capsys.readouterr().out == "no result (pytest stopped before its report)\n"


def test_server_names_the_server(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert suite_report().main(["server", db_url]) == 0
    out = capsys.readouterr().out
    assert " PostgreSQL " in out and out.count("\n") == 1


def test_a_wrong_database_url_stops_scripts_test_in_seconds() -> None:
    env = {**os.environ, "DATABASE_URL": REFUSED}
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "test")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - started < 60
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines()[-1] == (
        "scripts/test: cannot connect to the database: 127.0.0.1:1/postgres: Connection "
        "refused; is the server running on that host and accepting TCP/IP connections?"
    )
    assert "Traceback" not in done.stderr and "secret" not in done.stderr
