"""`pgcoord work` (a buffer worker until SIGTERM / SIGINT) and the buffers of
`pgcoord status`."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from clikit import pgcoord, started

from pgcoord import cli, inbox, releases
from pgcoord.cli.status import BUFFER_COLUMNS, LAST_ERROR_WIDTH
from pgcoord.cli.work import load_handler
from pgcoord.worker import STOPPED

PGCOORD = Path(sys.executable).parent / "pgcoord"
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=5"
HOUR = timedelta(hours=1)


@pytest.fixture(autouse=True)
def no_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says where the database is; the environment's DATABASE_URL is not used."""
    monkeypatch.delenv("DATABASE_URL", raising=False)


def cells(rule: str, line: str) -> list[str]:
    """The cells of a table line, cut where the rule's dashes are."""
    spans = [m.span() for m in re.finditer(r"-+", rule)]
    spans[-1] = (spans[-1][0], len(line) + 1)
    return [line[start:end].strip() for start, end in spans]


def when(value: Any) -> str:
    return value.isoformat(sep=" ", timespec="milliseconds")


def test_status_shows_the_buffers_and_marks_dead_batches(
    conn: psycopg.Connection[Any], db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # parked: failed five times
    inbox.message_ingest(conn, "t", "1", "chat:3", "x", debounce=timedelta(0))
    error = "boom\nsecond line " + "y" * 100
    for _ in range(5):
        [burst] = inbox.buffer_claim(conn, "w", 10, HOUR)
        assert inbox.buffer_fail(conn, "chat:3", burst.claim_token, error, timedelta(0))
    # waiting for its flush in an hour
    first = inbox.message_ingest(conn, "t", "2", "chat:1", "a", debounce=HOUR, max_wait=2 * HOUR)
    last = inbox.message_ingest(conn, "t", "3", "chat:1", "b", debounce=HOUR, max_wait=2 * HOUR)
    # held by a claim
    inbox.message_ingest(conn, "t", "4", "chat:2", "c", debounce=timedelta(0))
    [held] = inbox.buffer_claim(conn, "w9", 10, HOUR)
    status = {row.conversation_key: row for row in inbox.buffer_status(conn) if not row.dead}

    assert cli.main(["status", "--database-url", db_url]) == 0

    locks_part, buffers_part, runs_part, rates_part = (
        capsys.readouterr().out.rstrip("\n").split("\n\n")
    )
    assert (runs_part, rates_part) == ("no campaign runs", "no rate keys")
    assert locks_part == "no locks are held"
    header, rule, *rows, footer = buffers_part.splitlines()
    assert cells(rule, header) == list(BUFFER_COLUMNS)
    shown = {row[0]: row for row in (cells(rule, line) for line in rows)}
    assert len(rows) == len(shown) == 3
    assert shown["chat:3"][1:2] + shown["chat:3"][4:] == [
        "1",
        "",
        "",
        "",
        "5",
        "DEAD",
        "boom second line " + "y" * (LAST_ERROR_WIDTH - 20) + "...",
    ]
    assert shown["chat:1"][1:] == [
        "2",
        when(first.received_at),
        when(last.received_at),
        when(last.received_at + HOUR),
        "",
        "",
        "0",
        "no",
        "",
    ]
    assert shown["chat:2"][1:2] + shown["chat:2"][4:] == [
        "1",
        "",  # nothing waits behind the claimed batch
        "w9",
        when(status["chat:2"].claimed_until),
        "1",
        "no",
        "",
    ]
    assert held.conversation_key == "chat:2"
    assert [line.split()[0] for line in rows] == ["chat:3", "chat:1", "chat:2"]  # dead first
    assert footer.startswith("1 batch parked as DEAD after repeated failures")


def test_status_on_a_release_before_the_inbox(
    empty_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(releases.install_sql("0.1.0"))
    assert cli.main(["status", "--database-url", empty_db_url]) == 0
    assert capsys.readouterr().out == (
        "no locks are held\n\n"
        "no buffers: pgcoord 0.1.0 has no inbox (pgcoord migrate installs it)\n\n"
        "no campaign runs or rate keys: pgcoord 0.1.0 has no campaign queue"
        " (pgcoord migrate installs it)\n"
    )


HANDLERS = """
import asyncio
import os
from pathlib import Path

HERE = Path(os.environ["HANDLER_DIR"])


async def reply(burst):
    (HERE / "started").write_text(burst.conversation_key)
    await asyncio.sleep(float(os.environ["HANDLER_SECONDS"]))
    (HERE / "finished").write_text(" ".join(burst.bodies))


def sync_reply(burst):
    pass


async def reply_with_payloads(burst, payloads):
    (HERE / "payloads").write_text(" ".join(p["name"] for p in payloads))


class Replier:
    async def __call__(self, burst):
        pass


replier = Replier()
not_callable = 42
"""


@pytest.fixture
def handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A handler module in a fresh current directory; returns its (unique) name."""
    name = f"handlers_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(HANDLERS))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HANDLER_DIR", str(tmp_path))
    return name


@pytest.mark.parametrize(
    ("spec", "status", "error"),
    [
        ("{m}", 2, "HANDLER must be package.module:function, got '{m}'"),
        (":reply", 2, "HANDLER must be package.module:function, got ':reply'"),
        ("no_such_module_here:reply", 1, "cannot import 'no_such_module_here': ModuleNotFound"),
        ("{m}:nothing", 1, "'{m}' has no 'nothing'"),
        ("{m}:sync_reply", 1, "{m}:sync_reply is not an async function"),
        ("{m}:not_callable", 1, "{m}:not_callable is not an async function"),
    ],
)
def test_work_refuses_what_is_not_an_async_handler(
    handlers: str, spec: str, status: int, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, error = spec.format(m=handlers), error.format(m=handlers)
    assert cli.main(["work", spec, "--database-url", UNREACHABLE]) == status
    err = capsys.readouterr().err
    assert err.startswith(f"pgcoord: error: {error}")
    assert err.count("\n") == 1


HINT = (
    "(HANDLER is a module name importable from the current directory or PYTHONPATH, "
    "e.g. '{m}:reply')"
)


@pytest.mark.parametrize(
    ("spec", "cause"),
    [
        ("{m}.py:reply", "ModuleNotFoundError: No module named '{m}.py'; '{m}' is not a package"),
        ("{dir}/{m}.py:reply", "ModuleNotFoundError: No module named '{dir}/{m}'"),
        (
            "./{m}:reply",
            "TypeError: the 'package' argument is required to perform a relative import for "
            "'./{m}'",
        ),
    ],
)
def test_a_handler_given_as_a_file_path_gets_a_hint(
    handlers: str, tmp_path: Path, spec: str, cause: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = spec.format(m=handlers, dir=tmp_path)
    cause = cause.format(m=handlers, dir=tmp_path)
    assert cli.main(["work", spec, "--database-url", UNREACHABLE]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pgcoord: error: cannot import "), err
    assert err.endswith(f": {cause} {HINT.format(m=handlers)}\n"), err
    assert err.count("\n") == 1


def test_a_module_name_that_is_not_found_gets_no_hint(
    handlers: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["work", "no_such_module_here:reply", "--database-url", UNREACHABLE]) == 1
    assert capsys.readouterr().err == (
        "pgcoord: error: cannot import 'no_such_module_here': ModuleNotFoundError: "
        "No module named 'no_such_module_here'\n"
    )


def test_load_handler_finds_functions_and_async_callables_in_the_current_directory(
    handlers: str,
) -> None:
    assert load_handler(f"{handlers}:reply").__name__ == "reply"
    assert type(load_handler(f"{handlers}:replier")).__name__ == "Replier"


def test_work_needs_the_inbox(
    handlers: str, empty_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    command = ["work", f"{handlers}:reply", "--database-url", empty_db_url]
    assert cli.main(command) == 1
    assert "pgcoord is not installed in database" in capsys.readouterr().err
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(releases.install_sql("0.1.0"))
    assert cli.main(command) == 1
    err = capsys.readouterr().err
    assert err.startswith("pgcoord: error: pgcoord 0.1.0 in database ")
    assert err.endswith(" has no inbox: run pgcoord migrate\n")


@pytest.mark.parametrize(
    "option", ["--concurrency=0", "--concurrency=x", "--lease=0", "--grace=-1", "--timeout=0"]
)
def test_work_options_are_checked(
    handlers: str, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["work", f"{handlers}:reply", "--database-url", UNREACHABLE, option])
    assert exited.value.code == 2
    assert f"argument --{option[2:].split('=')[0]}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("signum", "times", "seconds", "grace", "outcome"),
    [
        (signal.SIGTERM, 1, 0.5, 10, "finished"),
        (signal.SIGINT, 1, 60, 0.2, "given back"),
        # Ctrl-C again, once the worker said it is stopping: the grace of a minute ends at
        # once (well within the 30 s waited)
        (signal.SIGINT, 2, 60, 60, "given back"),
    ],
)
def test_a_signal_stops_pgcoord_work_after_its_burst_finished_or_was_given_back(
    handlers: str,
    tmp_path: Path,
    conn: psycopg.Connection[Any],
    db_url: str,
    signum: int,
    times: int,
    seconds: float,
    grace: float,
    outcome: str,
) -> None:
    inbox.message_ingest(conn, "t", "1", "cli:1", "hello", debounce=timedelta(0))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["HANDLER_SECONDS"] = str(seconds)
    command = [str(PGCOORD), "work", f"{handlers}:reply", "--database-url", db_url]
    command += ["--grace", str(grace), "--lease", "1", "--name", "cli-worker"]
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "started").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the handler did not start"
            time.sleep(0.02)
        proc.send_signal(signum)
        said = b""  # what the worker logged before the signal is sent again
        if times > 1:
            assert proc.stderr is not None
            while b"stop again" not in said:  # (two signals sent at once may merge)
                ready, _, _ = select.select([proc.stderr.fileno()], [], [], 30)
                assert ready, said
                chunk = os.read(proc.stderr.fileno(), 65536)
                assert chunk, said  # it ended before it was stopped again
                said += chunk
            proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
        err = said.decode() + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == ""
    assert "Traceback" not in err
    rows = inbox.buffer_status(conn)
    if outcome == "finished":
        assert (tmp_path / "finished").read_text() == "hello"
        assert rows == []
        assert "INFO pgcoord.worker: completed 'cli:1': 1 message, attempt 1, " in err
        assert "worker cli-worker stopped: batches completed 1, give-backs 0 (" in err
    else:
        assert not (tmp_path / "finished").exists()
        [row] = rows
        assert (row.claimed_by, row.attempt, row.last_error) == (None, 0, None)
        assert f"WARNING pgcoord.worker: gave back 'cli:1' (attempt 1): {STOPPED}" in err
        assert "worker cli-worker stopped: batches completed 0, give-backs 1 (" in err


def test_work_payloads_gives_the_handler_the_stored_payloads(
    handlers: str, tmp_path: Path, conn: psycopg.Connection[Any], db_url: str
) -> None:
    for i, name in enumerate(["Ana", "Bo"]):
        inbox.message_ingest(
            conn, "t", str(i), "cli:p", f"m{i}", payload={"name": name}, debounce=timedelta(0)
        )
    command = pgcoord("work", f"{handlers}:reply_with_payloads", "--payloads")
    with started([*command, "--database-url", db_url], cwd=tmp_path) as (proc, output):
        deadline = time.monotonic() + 30
        while not (tmp_path / "payloads").exists():
            assert proc.poll() is None, "the worker stopped"
            assert time.monotonic() < deadline, "the handler was not called"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        err = output.err()
    assert (tmp_path / "payloads").read_text() == "Ana Bo", err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("spec", "options", "error"),
    [
        (
            "{m}:reply",
            ["--payloads"],
            "{m}:reply: with --payloads the handler takes two arguments: (batch, payloads)",
        ),
        (
            "{m}:reply_with_payloads",
            [],
            "{m}:reply_with_payloads: the handler takes one argument, the batch (a handler "
            "of (batch, payloads) needs --payloads)",
        ),
    ],
)
def test_a_handler_that_does_not_take_what_it_gets_is_one_line(
    handlers: str,
    db_url: str,
    spec: str,
    options: list[str],
    error: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec, error = spec.format(m=handlers), error.format(m=handlers)
    assert cli.main(["work", spec, "--database-url", db_url, *options]) == 1
    err = capsys.readouterr().err
    assert err == f"pgcoord: error: {error}\n"
    assert "payloads=True" not in err


@pytest.mark.parametrize(("code", "shown"), [("sys.exit(0)", "0"), ("raise SystemExit(3)", "3")])
def test_a_handler_module_that_exits_as_it_is_imported_is_said_so(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    code: str,
    shown: str,
) -> None:
    name = f"exits_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(f"import sys\n{code}\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["work", f"{name}:reply", "--database-url", UNREACHABLE]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"pgcoord: error: importing '{name}' exited (SystemExit: {shown}): a handler's module "
        "should define it, not run a program\n"
    )
