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

import pytest

# end to end, the same on any server: one suite of two runs it (scripts/test)
pytestmark = pytest.mark.system_suite

ROOT = Path(__file__).resolve().parent.parent


def run_bench(
    bench: str, stem: Path, server_url: str, *args: str, timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m bench.<bench> ARGS --output=<stem>` on the tests' server; it must exit 0."""
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{bench}", *args, f"--output={stem}"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": server_url},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_bench_writes_figures_ratios_and_protocol_checks(server_url: str, tmp_path: Path) -> None:
    stem = tmp_path / "locks"
    done = run_bench(
        "locks",
        stem,
        server_url,
        "--seconds=1",
        "--rounds=1",
        "--clients=1",
        "--warmup=0.2",
        "--driver=both",
        "--no-profile",
    )

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
    done = run_bench(
        "inbox",
        stem,
        server_url,
        "--seconds=1",
        "--rounds=1",
        "--warmup=0",
        "--no-profile",
    )

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


def test_overhead_bench_writes_cpu_per_call_ratios_and_profile(
    server_url: str, tmp_path: Path
) -> None:
    stem = tmp_path / "overhead"
    done = run_bench(
        "overhead",
        stem,
        server_url,
        "--calls=20",
        "--rounds=2",
        "--warmup-calls=5",
    )

    result = json.loads(stem.with_suffix(".json").read_text())
    calls = ["lock_acquire", "lock_release", "message_ingest", "campaign_complete_many"]
    assert [row["call"] for row in result["summary"]] == calls
    for row in result["summary"]:
        for figure in ("driver_cpu_us", "bare_cpu_us", "driver_wall_us", "bare_wall_us"):
            assert math.isfinite(row[figure]) and row[figure] > 0, (figure, row)
        assert row["ratio"] == row["driver_cpu_us"] / row["bare_cpu_us"]
        assert row["lowest_round_ratio"] <= row["highest_round_ratio"]

    # both rounds ran every call, the sides taking turns at going first, and each side
    # did the same work on the server: 20 leases taken, all of them freed, 20 messages
    # stored, 20 completions of 15 campaign messages each
    assert [(r["round"], r["call"], r["first"]) for r in result["rounds"]] == [
        (round_no, call, first)
        for round_no, first in ((1, "bare"), (2, "driver"))
        for call in calls
    ]
    for r in result["rounds"]:
        assert r["calls"] == 20 and r["same_work"], r
        for side in ("driver", "bare"):
            assert r["server_work"][side] == {
                "held_after_acquire": 20,
                "held_after_release": 0,
                "stored": 20,
                "sent": 300,
            }, r
    assert result["placement"].startswith(("split:", "free:")), result["placement"]

    # the driver sends exactly what bare psycopg sends, the statement of pgcoord.sql
    for call in calls:
        check = result["protocol"][call]
        assert check["same_messages"] and check["round_trips"] == {"driver": 1, "bare": 1}
        (parse,) = [line for line in check["driver_sent"] if "\tParse\t" in line]
        assert f"pgcoord.{call}(" in parse

    targets = {target["name"]: target for target in result["targets"]}
    for row in result["summary"]:
        ratio = targets[f"{row['call']}: driver / bare, client CPU per call"]
        assert ratio["met"] is (row["ratio"] <= 1.15)
    assert targets["messages sent per call, driver and bare (libpq trace, key masked)"]["met"]
    assert targets["round trips per call, each side (libpq trace)"]["met"]
    assert targets["same server work, each side and round"]["met"]

    # the profile names the driver's call functions, which only the driver's side calls
    for call, module in zip(calls, ("locks", "locks", "inbox", "campaigns"), strict=True):
        entries = {entry[0]: entry for entry in result["profile"][call]}
        (own,) = [name for name in entries if name.endswith(f"({call})")]
        assert own.startswith(f"pgcoord/{module}.py:")
        _, driver_calls, _, bare_calls, _ = entries[own]
        assert (driver_calls, bare_calls) == (1.0, 0.0)

    markdown = stem.with_suffix(".md").read_text()
    assert re.search(r"\|\s+call\s+\|\s+driver CPU µs\s+\|\s+bare CPU µs\s+\|", markdown)
    for row in result["summary"]:
        assert f"{row['ratio']:.2f}" in markdown
    assert "## Where the driver's extra CPU goes" in markdown
    assert "driver/bare" in done.stdout


def test_campaign_bench_writes_rates_ratios_costs_and_sizes(
    server_url: str, tmp_path: Path
) -> None:
    stem = tmp_path / "campaigns"
    done = run_bench(
        "campaigns",
        stem,
        server_url,
        "--seconds=1",
        "--rounds=1",
        "--workers=1",
        "--warmup=0.5",
        "--no-peers",  # PgQueuer and Procrastinate come from the bench extra
        "--pgcoord-batches=15,30",
        "--enqueue-messages=2000",
        "--enqueue-rounds=1",
        "--cost-messages=600",
        "--cost-rounds=1",
        "--size",
        "--size-messages=600",
        "--size-chunk=300",
        "--held-back-messages=300",
        timeout=240,
    )

    result = json.loads(stem.with_suffix(".json").read_text())
    (row,) = result["summary"]
    assert row["workers"] == 1
    assert set(row["messages_per_second"]) == {
        "plain",
        "plain-unprepared",
        "functions",
        "psycopg",
        "pgcoord",
        "pgcoord-tuned",
    }
    for figure in (*row["messages_per_second"].values(), *row["ratios"].values()):
        assert math.isfinite(figure) and figure > 0, row
    assert set(row["ratios"]) == {
        "pgcoord/plain",
        "pgcoord/plain-unprepared",
        "pgcoord/functions",
        "pgcoord/psycopg",
    }

    variants = ["plain", "plain-unprepared", "functions", "psycopg", "pgcoord", "pgcoord-tuned"]
    assert [run["variant"] for run in result["runs"]] == variants
    for run in result["runs"]:
        assert run["messages"] > 0 and run["per_second"] > 0, run
        assert run["detail"]["client_cpu_us"] > 0, run
        # each claim reads the queue's index (a run that read little or nothing would
        # not have claimed); the snapshot held longest while it ran, and by whom
        assert run["detail"]["rows_read_per_message"] > 0, run
        assert 1 <= len(run["detail"]["rows_read_by"]) <= 3, run
        assert run["detail"]["longest_snapshot_s"] >= 0, run
        assert isinstance(run["detail"]["snapshot_holder"], str), run
    for peer in ("pgqueuer", "procrastinate"):
        assert result["peers"][peer] == {"status": "left out", "reason": "--no-peers"}
    assert result["pgqueuer_tuning"] == []
    # the campaign worker's batch tuned like PgQueuer's: one run per batch, the best ran
    assert [t["batch"] for t in result["pgcoord_tuning"]] == [15, 30]
    assert all(t["per_second"] > 0 for t in result["pgcoord_tuning"])

    # 2,000 messages in one call, all stored
    (enqueue,) = result["enqueue"]
    assert enqueue["messages"] == 2000 and enqueue["per_second"] > 0

    # the fleet alone, then one drain of 600 messages: 40 claims of 15 at least, each a
    # transaction (a completion that claims the next batch is one), counted exactly in
    # the drain; per message, less the fleet's start and stop as measured alone (an
    # estimate: the idle polls of the two runs differ by a few transactions)
    alone, drain = result["costs"]
    assert alone["messages"] == 0 and drain["messages"] == 600
    assert drain["transactions"] >= 600 / 15, drain
    per_message = result["per_message"]
    assert 0 < per_message["transactions"] < 1, per_message
    assert per_message["wal_bytes"] > 0 and per_message["client_cpu_us"] > 0, per_message
    assert per_message["flushes"] >= 0, per_message

    # 600 messages in two chunks of 300, every one sent; the queue measured after each
    size = result["size"]
    assert size["messages"] == 600 and [c["sent"] for c in size["chunks"]] == [300, 600]
    for chunk in size["chunks"]:
        assert chunk["with_backlog"]["campaign_queue"]["table"] > 0
        assert set(chunk["processed"]) >= {"campaign_queue", "campaign_messages"}

    # 300 messages through each queue while a transaction held back vacuum: the plain
    # table keeps the two versions each message's claim and completion replaced, the
    # grouped queue two per group of 15 (claimed, then deleted); none once it ended
    held = {r["queue"]: r for r in result["held_back"]}
    assert set(held) == {"pgcoord", "plain"}  # PgQueuer is left out here
    for name, each in (("plain", 2), ("pgcoord", 2 / 15)):
        r = held[name]
        dead = sum(t["dead"] for t in r["held"].values()) - sum(
            t["dead"] for t in r["before"].values()
        )
        assert dead == 300 * each, (name, r)
        assert sum(t["dead"] for t in r["released"].values()) == 0, (name, r)

    targets = {target["name"]: target for target in result["targets"]}
    assert targets["campaign worker / plain SQL (c) at 8 workers"]["met"] is None
    unprepared = "the same plain SQL sent unprepared, as the driver sends every statement"
    assert targets[f"campaign worker / {unprepared}, at 8 workers"]["met"] is None
    python = "the same plain SQL through psycopg, the ceiling of a Python client, at 8 workers"
    assert targets[f"campaign worker / {python}"]["met"] is None
    assert targets["campaign worker / PgQueuer at 8 workers"]["met"] is None
    assert "--no-peers" in targets["campaign worker / PgQueuer at 8 workers"]["measured"]
    tuned = "campaign worker, batch tuned / PgQueuer, batch tuned, at 8 workers"
    assert targets[tuned]["met"] is None
    assert targets["enqueue of 2,000 messages in one call"]["met"] is None  # not 100,000
    transactions = targets["transactions per message, batch 15 (xact_commit)"]
    assert transactions["met"] is (per_message["transactions"] <= 0.25)
    assert targets["the backlog outlasted every measured window"]["met"] is not None
    # judged with autovacuum_naptime = 2s where the bench may set it; where autovacuum is
    # off (the system server of CI) that run is skipped, and the target says why
    growth = targets[
        "campaign_queue + indexes, largest after the first chunk of 600 messages / first chunk"
    ]
    if result["autovacuum"]["server"]["autovacuum"] == "on":
        assert growth["met"] is not None, growth
        assert "skipped" not in result["size_naptime"], result["size_naptime"]
    else:
        assert growth["met"] is None and "autovacuum is off" in growth["measured"], growth

    markdown = stem.with_suffix(".md").read_text()
    columns = ("workers", r"plain SQL \(c\)", r"plain SQL \(c, unprepared\)", "functions")
    header = "".join(rf"\|\s+{column}\s+" for column in columns) + r"\|"
    assert re.search(header, markdown)
    assert f"{row['ratios']['pgcoord/plain']:.2f}" in markdown
    assert f"{row['ratios']['pgcoord/plain-unprepared']:.2f}" in markdown
    assert "--protocol=extended" in markdown
    assert "## Per message at batch 15" in markdown and "## Size after 600 messages" in markdown
    assert "## Dead tuples while a long transaction holds back vacuum" in markdown
    assert "campaign worker" in done.stdout


def test_rate_bench_writes_calls_ratios_and_grant_checks(server_url: str, tmp_path: Path) -> None:
    stem = tmp_path / "rates"
    done = run_bench(
        "rates",
        stem,
        server_url,
        "--seconds=1",
        "--rounds=1",
        "--clients=2",
    )

    result = json.loads(stem.with_suffix(".json").read_text())
    grants, refusals = result["summary"]
    assert (grants["mode"], refusals["mode"]) == ("grants", "refusals")
    for row in (grants, refusals):
        assert row["clients"] == 2
        for figure in ("plain", "functions", "ratio"):
            assert math.isfinite(row[figure]) and row[figure] > 0, (figure, row)
    # every call granted with the large budget (the share is rows written, from the
    # table's statistics, over calls, from pgbench's count: two counters that do not
    # close at the same instant, so it can read a hair over 1); at most a few a second
    # with the small one
    assert set(grants["granted"]) == {"plain", "functions"}
    assert all(0.999 <= share <= 1.01 for share in grants["granted"].values()), grants
    assert all(share < 0.05 for share in refusals["granted"].values()), refusals

    assert [(run["mode"], run["kind"]) for run in result["runs"]] == [
        ("grants", "plain"),
        ("grants", "functions"),
        ("refusals", "plain"),
        ("refusals", "functions"),
    ]
    for run in result["runs"]:
        assert run["calls"] > 0 and 0.9 <= run["transactions_per_call"] <= 1.2, run

    markdown = stem.with_suffix(".md").read_text()
    assert re.search(r"\|\s+calls on one hot key\s+\|\s+clients\s+\|", markdown)
    assert f"{grants['ratio']:.2f}" in markdown and f"{refusals['ratio']:.2f}" in markdown
    assert "a/c" in done.stdout


def test_pickup_bench_times_messages_due_now_and_scheduled(server_url: str, tmp_path: Path) -> None:
    stem = tmp_path / "pickup"
    done = run_bench(
        "pickup",
        stem,
        server_url,
        "--rounds=1",
        "--samples=3",
        "--scheduled=1",
        "--delay=1",
        "--workers=2",
        "--no-peers",  # PgQueuer and Procrastinate come from the bench extra
    )

    result = json.loads(stem.with_suffix(".json").read_text())
    [row] = result["summary"]
    assert row["system"] == "pgcoord"
    assert (row["now_ms"]["count"], row["scheduled_late_ms"]["count"]) == (3, 1)
    assert (row["missed"], row["early"]) == (0, 0)
    samples = result["samples"]
    assert [s["mode"] for s in samples] == ["now", "now", "now", "scheduled"]
    # each timed from its due time: never negative (not sent before it was due), and a
    # message due now is counted once it is done, not at once
    assert all(s["seconds"] > 0 and not s["early"] for s in samples), samples
    assert {p: v["status"] for p, v in result["peers"].items()} == {
        "pgqueuer": "left out",
        "procrastinate": "left out",
    }
    checks = {c["name"].split(" (")[0]: c["met"] for c in result["checks"]}
    assert checks["no message sent before it was due"] is True

    markdown = stem.with_suffix(".md").read_text()
    assert "# Pickup: how soon an idle fleet sends a message once it is due" in markdown
    assert "PgQueuer: not run (left out): --no-peers" in markdown
    assert "campaign worker" in done.stdout


def test_trickle_bench_counts_what_each_queue_processed_and_held_back(
    server_url: str, tmp_path: Path
) -> None:
    stem = tmp_path / "trickle"
    done = run_bench(
        "trickle",
        stem,
        server_url,
        "--seconds=2",
        "--rate=50",
        "--consumers=2",
        "--backlog=900",
        "--drainers=2",
    )

    result = json.loads(stem.with_suffix(".json").read_text())
    assert [(run["queue"], run["phase"]) for run in result["runs"]] == [
        ("pgcoord", "clean"),
        ("plain", "clean"),
        ("pgcoord", "held"),
        ("plain", "held"),
        ("pgcoord", "backlog, held"),
        ("plain", "backlog, held"),
    ]
    for run in result["runs"]:
        # every message enqueued was processed or is still in the backlog
        assert run["enqueued"] > 0 and run["processed"] > 0, run
        assert run["backlog"] == run["enqueued"] - run["processed"] >= 0, run
        assert run["claims_per_second"] > 0, run
    clean = [run for run in result["runs"] if run["phase"] == "clean"]
    held = [run for run in result["runs"] if run["phase"] == "held"]
    # vacuumed at the phase's end: nothing left while nothing holds it back; while a
    # snapshot is held, each message enqueued one per call left its claim's and its
    # completion's versions, in either queue
    assert all(run["dead_tuples"] == 0 for run in clean), clean
    for run in held:
        assert 1.5 <= run["dead_per_message"] <= 2.5, run
    # a backlog enqueued one per call: pgcoord's claims of 15 groups of one hold them as
    # one row (15 deleted, then that one: 16 per 15); the plain table, 2 per message
    backlog = {run["queue"]: run for run in result["runs"] if run["phase"] == "backlog, held"}
    assert all(run["enqueued"] == 900 for run in backlog.values()), backlog
    assert backlog["pgcoord"]["dead_per_message"] < 1.2, backlog["pgcoord"]
    assert 1.9 <= backlog["plain"]["dead_per_message"] <= 2.1, backlog["plain"]

    markdown = stem.with_suffix(".md").read_text()
    assert "# Messages enqueued one per call" in markdown
    assert "pgcoord functions" in markdown and "plain table" in markdown
    assert "dead tuples per message" in done.stdout


def test_producers_bench_notifies_only_while_a_worker_is_idle(
    server_url: str, tmp_path: Path
) -> None:
    stem = tmp_path / "producers"
    run_bench("producers", stem, server_url, "--seconds=1", "--rounds=2", "--clients=2")

    result = json.loads(stem.with_suffix(".json").read_text())
    runs = result["runs"]
    assert [(r["round"], r["variant"]) for r in runs[:4]] == [
        (1, "plain INSERT"),
        (1, "pgcoord, running run, workers busy"),
        (1, "pgcoord, running run, a worker idle"),
        (1, "pgcoord, paused run"),
    ]
    assert [r["variant"] for r in runs[4:]] == [r["variant"] for r in reversed(runs[:4])]
    summary = {row["variant"]: row for row in result["summary"]}
    assert summary["plain INSERT"]["of_plain"] == 1.0
    assert all(row["calls"] > 0 for row in summary.values()), summary
    # one notification per enqueue while a worker is idle; while all are busy, none but
    # those of enqueues that took another's test of the mark for a mark (about 1%)
    idle = summary["pgcoord, running run, a worker idle"]
    assert idle["notifications"] == idle["calls"], idle
    busy = summary["pgcoord, running run, workers busy"]
    assert busy["notifications"] <= 0.05 * busy["calls"], busy
    assert summary["pgcoord, paused run"]["notifications"] == 0
    assert "calls/s (median)" in stem.with_suffix(".md").read_text()
