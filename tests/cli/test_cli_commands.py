"""The pgcoord command: migrate, status, version, and its errors (one line, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgcoord import cli, inbox, releases
from pgcoord.cli.main import COMMANDS
from pgcoord.cli.status import LOCK_COLUMNS, rates_table
from pgcoord.errors import quoted_role
from pgcoord.locks import lock_acquire
from pgcoord.types import RateStatus

PGCOORD = Path(sys.executable).parent / "pgcoord"
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=5"
EMPTY_STATUS = (
    "no locks are held\n\nno buffered conversations\n\nno campaign runs\n\nno rate keys\n"
)


@pytest.fixture(autouse=True)
def no_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says where the database is; the environment's DATABASE_URL is not used."""
    monkeypatch.delenv("DATABASE_URL", raising=False)


def test_status_shows_the_held_locks(
    conn: psycopg.Connection[Any], db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    live = lock_acquire(conn, "chat:42", "worker-a", ttl=timedelta(hours=1))
    stale = lock_acquire(conn, "chat:7", "worker-b", ttl=timedelta(milliseconds=1))
    # poll the server clock until the short lease has run out
    for _ in range(10_000):
        row = conn.execute("SELECT expired FROM pgcoord.lock_status WHERE key = 'chat:7'")
        if row.fetchone() == (True,):
            break
    else:
        pytest.fail("the 1 ms lease did not expire")

    assert cli.main(["status", "--database-url", db_url]) == 0

    out = capsys.readouterr().out
    locks_part, *rest = out.rstrip("\n").split("\n\n")
    assert rest == ["no buffered conversations", "no campaign runs", "no rate keys"]
    header, rule, *rows = locks_part.splitlines()
    assert header.split() == list(LOCK_COLUMNS)
    assert set(rule.replace(" ", "")) == {"-"}
    # each timestamp prints as date and time: two cells
    cells = [row.split() for row in rows]
    assert [(c[0], c[1], c[2], c[-1]) for c in cells] == [
        ("chat:42", "worker-a", str(live.token), "no"),
        ("chat:7", "worker-b", str(stale.token), "yes"),
    ]
    assert live.expires_at.isoformat(sep=" ", timespec="milliseconds") in rows[0]


def test_status_without_locks(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--database-url", db_url]) == 0
    assert capsys.readouterr().out == EMPTY_STATUS


def test_database_url_comes_from_the_environment(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    assert cli.main(["version"]) == 0
    out = capsys.readouterr().out
    assert f"driver:    {releases.latest()}" in out
    assert f"installed: {releases.latest()} (database " in out


def test_version_without_a_database(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["version"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"driver:    {releases.latest()}")
    assert "installed: unknown" in out


def test_migrate_installs_then_has_nothing_to_do(
    empty_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["version", "--database-url", empty_db_url]) == 0
    assert "installed: none" in capsys.readouterr().out

    assert cli.main(["migrate", "--database-url", empty_db_url]) == 0
    assert capsys.readouterr().out.startswith(f"installed pgcoord {releases.latest()} in ")
    assert cli.main(["migrate", "--database-url", empty_db_url, "--to", releases.latest()]) == 0
    assert "is already installed" in capsys.readouterr().out

    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT pgcoord.version()").fetchone() == (releases.latest(),)


def test_status_where_pgcoord_is_not_installed(
    empty_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", "--database-url", empty_db_url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("pgcoord: error: pgcoord is not installed in database ")
    assert captured.err.endswith(": run pgcoord migrate\n")


@pytest.mark.parametrize("command", ["migrate", "status"])
def test_missing_database_url_is_a_usage_error(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([command]) == 2
    assert capsys.readouterr().err == (
        "pgcoord: error: no database given: pass --database-url URL or set DATABASE_URL\n"
    )


def test_unreachable_server_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--database-url", UNREACHABLE]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pgcoord: error: cannot connect to the database: ")
    assert err.count("\n") == 1


def test_invalid_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrate", "--database-url", "no-such-option=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pgcoord: error: invalid database URL: ")
    assert err.count("\n") == 1


def test_unknown_release_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["migrate", "--database-url", UNREACHABLE, "--to", "7.7.7"])
    assert exited.value.code == 2
    assert "invalid choice: '7.7.7'" in capsys.readouterr().err


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert f"    {command} " in out


def test_version_option_names_the_driver(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"pgcoord {releases.latest()}\n"


def test_options_may_come_before_their_command(
    db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert cli.main(["--database-url", db_url, "status"]) == 0
    assert capsys.readouterr().out == EMPTY_STATUS
    assert cli.main(["--database-url", db_url]) == 2
    assert capsys.readouterr().err.startswith("pgcoord: error: no COMMAND given (one of migrate, ")


def test_demo_gets_the_rest_of_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 3

    monkeypatch.setattr("pgcoord.demo.main.main", fake_main)
    assert cli.main(["demo", "--help", "--database-url", "x"]) == 3
    assert seen == [["--help", "--database-url", "x"]]
    assert cli.main(["--database-url", "x", "demo", "--seed", "1"]) == 3
    assert seen[-1] == ["--database-url", "x", "--seed", "1"]


def test_console_script(db_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    missing = subprocess.run(
        [str(PGCOORD), "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1
    assert "Traceback" not in missing.stderr

    env["DATABASE_URL"] = db_url
    shown = subprocess.run(
        [str(PGCOORD), "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == EMPTY_STATUS


def test_revive_replays_a_dead_batch(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        inbox.message_ingest(conn, "p", "m1", "c", "hello", debounce=timedelta(0))
        for _ in range(5):
            [burst] = inbox.buffer_claim(conn, "w")
            assert inbox.buffer_fail(conn, "c", burst.claim_token, "boom", timedelta(0))
        assert [row.dead for row in inbox.buffer_status(conn)] == [True]

        assert cli.main(["revive", "c", "--database-url", db_url]) == 0
        assert capsys.readouterr().out == "revived 1 message of 'c': due now\n"
        [row] = inbox.buffer_status(conn)
        assert (row.dead, row.message_count, row.attempt) == (False, 1, 0)

        assert cli.main(["revive", "c", "--database-url", db_url]) == 0
        assert capsys.readouterr().out == "no dead batch of 'c': nothing to revive\n"
        with pytest.raises(SystemExit) as exited:  # bad usage, before connecting
            cli.main(["revive", "", "--database-url", db_url])
        assert exited.value.code == 2
        assert "argument CONVERSATION: must be a text of 1 to 1024 bytes" in capsys.readouterr().err


def test_revive_on_a_release_before_the_inbox_says_to_migrate(
    empty_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    command = ["revive", "c", "--database-url", empty_db_url]
    assert cli.main(command) == 1
    assert capsys.readouterr().err.startswith(
        "pgcoord: error: pgcoord is not installed in database "
    )
    assert cli.main(["migrate", "--to", "0.1.0", "--database-url", empty_db_url]) == 0
    capsys.readouterr()
    assert cli.main(command) == 1
    err = capsys.readouterr().err
    assert err.startswith("pgcoord: error: pgcoord 0.1.0 in database "), err
    assert err.endswith(" has no inbox: run pgcoord migrate\n")


@pytest.mark.parametrize("words", [["version"], ["work", "--campaign", "asyncio:sleep"]])
def test_a_role_without_the_grant_is_told_the_grant_by_every_command(
    db_url: str, outsider: str, capsys: pytest.CaptureFixture[str], words: list[str]
) -> None:
    """version and work read the installed release themselves, outside the API: a role
    without pgcoord_client is told the GRANT there too, as by the API's calls."""
    url = make_conninfo(db_url, user=outsider)
    assert cli.main([*words, "--database-url", url]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("pgcoord: error: permission denied for "), line
    assert line.endswith(f"; grant it with: GRANT pgcoord_client TO {quoted_role(outsider)}"), line


def test_status_rounds_a_keys_tokens_down() -> None:
    """0.996 tokens is no token yet: a cost-1 acquire is refused, so it never shows 1.00."""
    now = datetime.now(UTC)
    shown = rates_table([RateStatus("whatsapp", 0.996, 20.0, 20, None, now)])
    assert "0.99" in shown and "1.00" not in shown
    # and never below what it holds, for all that floats round (0.29 * 100 < 29)
    for tokens in (0.29, 1.15, 4.35):
        assert f"{tokens:.2f}" in rates_table([RateStatus("k", tokens, 20.0, 20, None, now)])
