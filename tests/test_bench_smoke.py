"""The benches run end to end in a tiny mode (1 s runs, one round) and write figures,
ratios and their protocol checks. They assert no speed: that is what the benches
themselves measure (scripts/bench)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_writes_figures_ratios_and_protocol_checks(server_url: str, tmp_path: Path) -> None:
    stem = tmp_path / "locks"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.locks",
            "--seconds=1",
            "--rounds=1",
            "--clients=1",
            "--warmup=0.2",
            "--driver=both",
            "--no-profile",
            f"--output={stem}",
        ],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": server_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr

    result = json.loads(stem.with_suffix(".json").read_text())
    (row,) = result["summary"]
    assert row["clients"] == 1
    for figure in ("plain", "functions", "driver", "functions_ratio", "driver_ratio"):
        assert math.isfinite(row[figure]) and row[figure] > 0, (figure, row)
    assert row["driver_variant"] in ("driver-threads", "driver-async")

    variants = [run["variant"] for run in result["runs"]]
    assert variants == ["plain", "functions", "driver-threads", "driver-async"]
    for run in result["runs"]:
        assert run["pairs"] > 0 and run["pairs_per_second"] > 0, run
        # one statement per call, each its own transaction: about 2 commits per pair
        assert 1.9 <= run["transactions_per_pair"] <= 2.2, run
    for run in result["runs"][2:]:
        assert run["detail"]["granted"] > 0, run

    # one round trip per acquire and per release through the driver, counted exactly
    assert result["round_trips_per_pair"] == 2.0

    targets = {target["name"]: target for target in result["targets"]}
    assert targets["(a)/(c) at 16 clients"]["met"] is None  # 16 was not measured here

    markdown = stem.with_suffix(".md").read_text()
    assert re.search(r"\|\s+plain SQL \(c\)\s+\|\s+functions \(a\)\s+\|", markdown)
    assert f"{row['functions_ratio']:.2f}" in markdown
    assert "a/c" in done.stdout and "b/c" in done.stdout


def test_inbox_bench_writes_figures_ratios_and_round_trips(server_url: str, tmp_path: Path) -> None:
    stem = tmp_path / "inbox"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.inbox",
            "--seconds=1",
            "--rounds=1",
            "--warmup=0",
            "--no-profile",
            f"--output={stem}",
        ],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": server_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr

    result = json.loads(stem.with_suffix(".json").read_text())
    ingest, claim = result["summary"]
    assert (ingest["workload"], ingest["clients"]) == ("ingest", 16)
    assert (claim["workload"], claim["clients"]) == ("claim", 8)
    for row in (ingest, claim):
        for figure in ("plain", "functions", "ratio"):
            assert math.isfinite(row[figure]) and row[figure] > 0, (figure, row)

    variants = [run["variant"] for run in result["runs"]]
    assert variants == ["ingest-plain", "ingest-functions", "claim-plain", "claim-functions"]
    for run in result["runs"]:
        assert run["ops"] > 0 and run["per_second"] > 0, run
        assert run["detail"]["consistent"], run  # the buffers count their messages
        # one statement per call, each its own transaction
        wanted = 1 if run["workload"] == "ingest" else 2
        assert wanted - 0.1 <= run["transactions_per_op"] <= wanted + 0.1, run
    for run in result["runs"][:2]:
        assert 0.2 <= run["detail"]["repeat_share"] <= 0.4, run  # 30% drawn at random
    for run in result["runs"][2:]:
        assert run["detail"]["empty_claims"] == 0, run  # the backlog outlasted the run

    # one round trip per ingest, new or repeated, and per claim and complete: exact counts
    assert result["round_trips"] == {
        "ingest_new": 1.0,
        "ingest_repeat": 1.0,
        "claim_complete_pair": 2.0,
    }

    targets = {target["name"]: target for target in result["targets"]}
    ratio = targets["ingest (a)/(c) at 16 clients"]
    assert ratio["met"] is (ingest["ratio"] >= 0.7)
    assert targets["round trips per ingest, driver (libpq trace)"]["met"] is True

    markdown = stem.with_suffix(".md").read_text()
    assert re.search(r"\|\s+plain SQL \(c\)\s+\|\s+functions \(a\)\s+\|\s+a/c\s+\|", markdown)
    assert f"{ingest['ratio']:.2f}" in markdown and f"{claim['ratio']:.2f}" in markdown
    assert "ingest calls/s" in done.stdout and "a/c" in done.stdout
