"""`pgcoord work --campaign`: a campaign worker running a handler module from the current
directory until SIGTERM, with the CampaignWorker's options (its defaults read from its
signature), and every way its command line can be wrong: one line, status 2 before any
connection, or status 1 naming what the database lacks."""

from __future__ import annotations

import inspect
import signal
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from clikit import pgcoord, started
from psycopg.conninfo import conninfo_to_dict
from test_cli_failures import parsers

from pgcoord import campaigns, cli, rates, releases
from pgcoord.cli import work
from pgcoord.cli.errors import UsageError
from pgcoord.cli.main import build_parser
from pgcoord.worker import CampaignWorker, RateBudget, loop

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=5"
Conn = psycopg.Connection[Any]

SENDERS = """
import asyncio


async def send(message):
    await asyncio.sleep(0.01)
    loop = type(asyncio.get_running_loop()).__module__.partition(".")[0]
    return {"recipient": message.recipient, "n": message.payload["n"], "loop": loop}


def not_async(message):
    pass


async def send_two(message, payloads):
    pass
"""


@pytest.fixture(autouse=True)
def no_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says where the database is; the environment's DATABASE_URL is not used."""
    monkeypatch.delenv("DATABASE_URL", raising=False)


@pytest.fixture
def senders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A handler module in a fresh current directory; returns its (unique) name."""
    name = f"senders_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(SENDERS))
    monkeypatch.chdir(tmp_path)
    return name


def enqueue(conn: Conn, run_id: int, count: int) -> None:
    items = [{"recipient": f"+{i}", "payload": {"n": i}} for i in range(count)]
    assert campaigns.campaign_enqueue(conn, run_id, items) == count


@pytest.mark.parametrize(
    ("options", "ran_on"), [([], "uvloop"), (["--loop", "asyncio"], "asyncio")]
)
def test_work_campaign_sends_a_run_with_the_handler_until_sigterm(
    senders: str, tmp_path: Path, conn: Conn, db_url: str, options: list[str], ran_on: str
) -> None:
    run_id = campaigns.campaign_create(conn, "cli")
    other = campaigns.campaign_create(conn, "other")
    enqueue(conn, run_id, 20)
    enqueue(conn, other, 3)
    command = pgcoord("work", "--campaign", f"{senders}:send", "--database-url", db_url)
    command += ["--run-id", str(run_id), "--name", "cli-campaign", "--concurrency", "4"]
    command += ["--batch", "5", "--rate-key", "cli", "--rate", "1000", "--burst", "10"]
    command += ["--listen", db_url, "--skip-stale-every", "0", "--grace", "5", "--timeout", "9"]
    command += options
    with started(command, cwd=tmp_path) as (proc, output):
        deadline = time.monotonic() + 60
        while campaigns.campaign_progress(conn, run_id)[0].sent < 20:
            assert proc.poll() is None, "the worker stopped"
            assert time.monotonic() < deadline, "the run was not sent"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert output.rest(deadline) == []
        err = output.err()
    assert "Traceback" not in err
    assert "worker cli-campaign stopped: messages completed 20, give-backs 0 (" in err
    [sent] = campaigns.campaign_progress(conn, run_id)
    assert (sent.sent, sent.pending, sent.processing) == (20, 0, 0)
    [untouched] = campaigns.campaign_progress(conn, other)
    assert (untouched.sent, untouched.pending) == (0, 3)  # --run-id
    metrics = [
        row[0]
        for row in conn.execute(
            "SELECT metrics FROM pgcoord.campaign_message_status WHERE run_id = %s"
            " ORDER BY message_id",
            (run_id,),
        )
    ]
    assert [(m["recipient"], m["n"]) for m in metrics] == [(f"+{i}", i) for i in range(20)]
    assert all(m["handler_ms"] >= 9 for m in metrics)  # measured: each slept 10 ms
    assert {m["loop"] for m in metrics} == {ran_on}  # uvloop unless --loop asyncio
    [key] = rates.rate_status(conn)
    assert (key.key, key.per_second, key.burst) == ("cli", 1000, 10)  # --rate-key etc.


def test_the_defaults_are_the_workers_own_and_shown_in_the_help() -> None:
    """Options not given are not passed: each worker keeps its own defaults, which the
    help shows (both, where they differ)."""
    args = build_parser().parse_args(["work", "--campaign", "m:f"])
    assert work.worker_settings(args, work.CAMPAIGN) == {}
    work_parser = {" ".join(words): parser for words, parser in parsers()}["work"]
    help_text = " ".join(work_parser.format_help().split())
    defaults = inspect.signature(CampaignWorker).parameters
    assert defaults["batch"].default == 15 and "(default: 15)" in help_text
    assert defaults["skip_stale_every"].default == timedelta(minutes=1)
    assert "0: never (default: 60)" in help_text
    assert defaults["concurrency"].default == 8 and "(default: 4; --campaign: 8)" in help_text
    assert defaults["lease"].default == timedelta(minutes=5)
    assert "(default: 60; --campaign: 300)" in help_text
    assert "(default: none; --campaign: 30)" in help_text  # --timeout


def test_options_given_become_the_workers_arguments() -> None:
    given = "--skip-stale-every 0 --no-listen --run-id 7 --rate-key k --rate 2.5 --burst 3"
    args = build_parser().parse_args(["work", "--campaign", "m:f", *given.split(), "--lease", ".5"])
    assert work.worker_settings(args, work.CAMPAIGN) == {
        "skip_stale_every": None,  # 0: never
        "listen": False,
        "run_id": 7,
        "rate": RateBudget("k", 2.5, 3),
        "lease": timedelta(seconds=0.5),
    }
    args = build_parser().parse_args(["work", "m:f", "--skip-stale-every", "30"])
    with pytest.raises(UsageError, match="add --campaign"):
        work.worker_settings(args, work.BUFFER)
    args = build_parser().parse_args(["work", "--campaign", "m:f", "--skip-stale-every", "30"])
    assert work.worker_settings(args, work.CAMPAIGN) == {"skip_stale_every": timedelta(seconds=30)}


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (["--retry-in", "5"], "--retry-in is an option of the buffer worker, not of --campaign"),
        (["--payloads"], "--payloads is an option of the buffer worker, not of --campaign"),
        (
            ["--rate", "5"],
            "--rate-key, --rate and --burst go together: --rate-key and --burst missing",
        ),
        (
            ["--rate-key", "k", "--rate", "5"],
            "--rate-key, --rate and --burst go together: --burst missing",
        ),
    ],
)
def test_options_that_do_not_fit_the_campaign_worker_are_usage_errors(
    senders: str, options: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    command = ["work", "--campaign", f"{senders}:send", "--database-url", UNREACHABLE]
    assert cli.main([*command, *options]) == 2
    assert capsys.readouterr().err == f"pgcoord: error: {error}\n"


def test_loop_uvloop_where_it_is_not_installed_is_a_usage_error(
    senders: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(loop, "default", lambda: "asyncio")
    command = ["work", "--campaign", f"{senders}:send", "--database-url", UNREACHABLE]
    assert cli.main([*command, "--loop", "uvloop"]) == 2
    assert capsys.readouterr().err == (
        "pgcoord: error: --loop uvloop: uvloop is not installed (pip install uvloop)\n"
    )


@pytest.mark.parametrize(
    "options",
    [["--run-id", "1"], ["--batch", "3"], ["--skip-stale-every", "0"]],
)
def test_campaign_options_need_campaign(
    senders: str, options: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    command = ["work", f"{senders}:send", "--database-url", UNREACHABLE, *options]
    assert cli.main(command) == 2
    assert capsys.readouterr().err == (
        f"pgcoord: error: {options[0]} is an option of the campaign worker: add --campaign\n"
    )


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (
            ["--listen", "mysql://u@h/d"],
            "argument --listen: invalid database URL: --listen must start with postgresql:// "
            "or postgres://, got 'mysql://u@h/d'",
        ),
        (["--listen", ""], "argument --listen: invalid database URL: --listen is empty, got ''"),
        (
            ["--listen", "postgresql://x", "--no-listen"],
            "argument --no-listen: not allowed with argument --listen",
        ),
    ],
)
def test_listen_takes_a_database_url_or_is_turned_off(
    options: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["work", "--campaign", "m:f", "--database-url", UNREACHABLE, *options])
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"pgcoord work: error: {error}\n"


def test_a_listen_url_that_does_not_reach_the_workers_database_is_refused_at_the_start(
    senders: str, db_url: str, empty_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A LISTEN elsewhere would never be woken: one line, status 1, before any work (an
    outage after the start is waited out instead)."""
    command = ["work", "--campaign", f"{senders}:send", "--database-url", db_url, "--listen"]
    assert cli.main([*command, UNREACHABLE]) == 1
    assert capsys.readouterr().err == (
        "pgcoord: error: --listen: cannot connect to the database: 127.0.0.1:1/postgres:"
        " Connection refused; is the server running on that host and accepting TCP/IP"
        " connections?\n"
    )
    assert cli.main([*command, empty_db_url]) == 1
    err = capsys.readouterr().err
    listened, worked = (conninfo_to_dict(url)["dbname"] for url in (empty_db_url, db_url))
    assert err.startswith(f"pgcoord: error: --listen reaches database {listened!r} on ")
    assert f", another database than the worker's database {worked!r} on " in err
    assert err.endswith(": it would never hear of new work\n") and err.count("\n") == 1


def test_a_handler_that_is_not_async_is_named_with_what_it_gets(
    senders: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli.main(["work", "--campaign", f"{senders}:not_async", "--database-url", UNREACHABLE]) == 1
    )
    assert capsys.readouterr().err == (
        f"pgcoord: error: {senders}:not_async is not an async function "
        "(async def handler(message))\n"
    )


def test_a_handler_that_does_not_take_one_message_is_refused_at_the_start(
    senders: str, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before any message is claimed: a wiring mistake spends no message's tries."""
    command = ["work", "--campaign", f"{senders}:send_two", "--database-url", db_url]
    assert cli.main(command) == 1
    assert capsys.readouterr().err == (
        f"pgcoord: error: {senders}:send_two: the handler takes one argument, the message "
        "(a CampaignMessage)\n"
    )


def test_an_unknown_run_and_a_release_before_the_campaign_queue_are_named(
    senders: str, db_url: str, empty_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    command = ["work", "--campaign", f"{senders}:send", "--run-id", "404"]
    assert cli.main([*command, "--database-url", db_url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pgcoord: error: no campaign run 404 in database ")
    assert err.count("\n") == 1

    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(releases.install_sql("0.2.0"))
    assert cli.main([*command, "--database-url", empty_db_url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pgcoord: error: pgcoord 0.2.0 in database ")
    assert err.endswith(" has no campaign queue: run pgcoord migrate\n")


@pytest.mark.parametrize("status", ["cancelled", "finished"])
def test_a_run_that_has_ended_is_refused_before_the_worker_starts(
    senders: str, db_url: str, capsys: pytest.CaptureFixture[str], status: str
) -> None:
    """Its messages are never claimed again: a worker for it would idle for ever."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        run_id = campaigns.campaign_create(conn, f"ended {status}")
        campaigns.campaign_set_status(conn, run_id, status)
    command = ["work", "--campaign", f"{senders}:send", "--run-id", str(run_id)]
    assert cli.main([*command, "--database-url", db_url]) == 1
    assert capsys.readouterr().err == (
        f"pgcoord: error: campaign run {run_id} is {status}: none of its messages will ever "
        "be claimed\n"
    )
