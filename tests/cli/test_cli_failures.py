"""Bad input never shows a traceback. A refused option or database URL, an unreachable
server, a reader that went away and Ctrl-C end every command, the demo included, with
one line and the same exit status: 1 a runtime error or a closed pipe, 2 bad usage,
130 interrupted."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo

from pgcoord import cli
from pgcoord.cli import options
from pgcoord.cli.errors import SHOWN_WIDTH, shown
from pgcoord.cli.main import build_parser
from pgcoord.demo.main import build_parser as build_demo_parser
from pgcoord.demo.torture import build_parser as build_torture_parser

PGCOORD = Path(sys.executable).parent / "pgcoord"
CHECKED = (options.Seconds, options.Integer, options.PerSecond, options.Text)
Checked = options.Seconds | options.Integer | options.PerSecond | options.Text
REFUSED = "postgresql://u@127.0.0.1:1/postgres?connect_timeout=5"  # a connection fails at once


@pytest.fixture(autouse=True)
def no_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says where the database is; the environment's DATABASE_URL is not used."""
    monkeypatch.delenv("DATABASE_URL", raising=False)


def run(argv: list[str], stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """A program run to its end, without DATABASE_URL."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run(
        argv, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60
    )


def assert_one_line(err: str) -> None:
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err


# Every numeric option of every command ------------------------------------------------


def parsers() -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
    """Each command's parser with the words that lead to it (`work`, `demo`), command
    groups' subcommands included."""

    def walk(
        words: list[str], parser: argparse.ArgumentParser
    ) -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
        yield words, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk([*words, name], sub)

    yield from walk([], build_parser())
    yield ["demo"], build_demo_parser()
    yield ["torture"], build_torture_parser()


def placeholder(action: argparse.Action) -> str:
    """A value the positional argument takes."""
    if isinstance(action.type, options.Seconds | options.Integer | options.PerSecond):
        return str(action.type.least)
    return "x"


def checked_options() -> list[tuple[list[str], str, Checked]]:
    """(the command line before the value, the option or positional argument, its type)
    for every one with a checked type. An option's value comes last, as OPTION=VALUE,
    after a placeholder for each positional argument; a positional argument's value
    comes after `--` (so that one starting with '-' is no option), in its place."""
    found: list[tuple[list[str], str, Checked]] = []
    for words, parser in parsers():
        positionals = [
            action
            for action in parser._actions
            if not action.option_strings and not isinstance(action, argparse._SubParsersAction)
        ]
        for action in parser._actions:
            if not isinstance(action.type, CHECKED):
                continue
            if action.option_strings:
                argv = [*words, *map(placeholder, positionals)]
                found.append((argv, action.option_strings[-1], action.type))
            else:
                assert action is positionals[-1], "a checked positional argument comes last"
                argv = [*words, *map(placeholder, positionals[:-1]), "--"]
                found.append((argv, str(action.metavar), action.type))
    return found


def given(argv: list[str], option: str, value: str) -> list[str]:
    """The command line of checked_options() with `value` for the option or argument."""
    return [*argv, f"{option}={value}" if option.startswith("-") else value]


def bad_values(kind: Checked) -> list[str]:
    if isinstance(kind, options.Text):
        return ["", "x" * (kind.most + 1), "é" * (kind.most // 2 + 1)]
    common = ["", " ", "abc", "nan", "NaN", "inf", "-inf", "Infinity", "1e400", "0x10", "1,5"]
    common += [str(kind.least - 1), str(kind.most * 2), "1e15", "9" * 400]
    if isinstance(kind, options.Integer):
        return [*common, "1.5", "1e3", str(kind.most + 1)]
    return [*common, "-0.5", repr(kind.most + 0.001)] + (["0"] if kind.least > 0 else [])


CASES = [
    pytest.param(
        argv, option, value, id=f"{' '.join(argv[:1] + argv[1:2])} {option}={value[:12]!r}"
    )
    for argv, option, kind in checked_options()
    for value in bad_values(kind)
]


def test_the_walk_finds_the_options_of_every_command() -> None:
    found = {(argv[0], option) for argv, option, _ in checked_options()}
    assert {
        ("work", "--concurrency"),
        ("work", "--lease"),
        ("work", "--timeout"),
        ("work", "--retry-in"),
        ("work", "--grace"),
        ("work", "--name"),
        ("demo", "--webhooks"),
        ("demo", "--conversations"),
        ("demo", "--workers"),
        ("work", "--run-id"),
        ("work", "--batch"),
        ("work", "--skip-stale-every"),
        ("work", "--rate-key"),
        ("work", "--rate"),
        ("work", "--burst"),
        ("campaigns", "--run"),
        ("watch", "RUN_ID"),
        ("watch", "--interval"),
        ("maintain", "--older-than"),
        ("maintain", "--prune-ended"),
        ("torture", "--seconds"),
        ("torture", "--seed"),
    } <= found


@pytest.mark.parametrize(("argv", "option", "value"), CASES)
def test_a_bad_value_of_any_option_is_one_line_naming_it(
    argv: list[str], option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(given(argv, option, value))
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert_one_line(err)
    assert f": error: argument {option}: must be " in err
    assert f", got {shown(value)}" in err or f": {shown(value)}" in err


def test_every_number_option_is_checked() -> None:
    """No option takes a bare int or float, which lets NaN, infinities and any size in."""
    for words, parser in parsers():
        for action in parser._actions:
            assert action.type not in (int, float), (words, action.option_strings)


def test_the_defaults_and_the_bounds_are_accepted() -> None:
    for argv, option, kind in checked_options():
        if isinstance(kind, options.Text):
            assert kind("x" * kind.most) == "x" * kind.most
            continue
        kind(str(kind.least))
        kind(str(kind.most))
        for _words, parser in parsers():
            for action in parser._actions:
                if action.type is kind and option in action.option_strings:
                    default = action.default
                    if isinstance(default, timedelta):
                        assert kind(options.seconds(default)) == default, (argv, option)
                    elif default is not None:
                        assert kind(str(default)) == default, (argv, option)


def test_the_ranges_of_work_are_the_sql_arguments_ranges() -> None:
    day = timedelta(days=1)
    assert options.LEASE("86400") == day
    assert options.LEASE("0.001") == timedelta(milliseconds=1)
    assert options.RETRY_IN("0") == timedelta(0)
    assert options.RETRY_IN(str(30 * 86400)) == 30 * day
    assert options.CLAIM_LIMIT("10000") == 10_000
    for kind, refused in [
        (options.LEASE, "0"),
        (options.LEASE, "86400.001"),
        (options.RETRY_IN, "-0.001"),
        (options.RETRY_IN, str(30 * 86400 + 1)),
        (options.CLAIM_LIMIT, "0"),
        (options.CLAIM_LIMIT, "10001"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError):
            kind(refused)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            [str(PGCOORD), "work", "x:y", "--lease", "inf"],
            "pgcoord work: error: argument --lease: must be a number of seconds from 0.001 "
            "to 86400 (1 day), got 'inf'\n",
        ),
        (
            [str(PGCOORD), "work", "x:y", "--retry-in", "1e15"],
            "pgcoord work: error: argument --retry-in: must be a number of seconds from 0 "
            "to 2592000 (30 days), got '1e15'\n",
        ),
        (
            [str(PGCOORD), "work", "x:y", "--lease", "nan"],
            "pgcoord work: error: argument --lease: must be a number of seconds from 0.001 "
            "to 86400 (1 day), got 'nan'\n",
        ),
        (
            [sys.executable, "-m", "pgcoord.cli", "work", "x:y", "--name="],
            "pgcoord work: error: argument --name: must be a text of 1 to 1024 bytes, "
            "got 0 bytes: ''\n",
        ),
        (
            [str(PGCOORD), "revive", ""],
            "pgcoord revive: error: argument CONVERSATION: must be a text of 1 to 1024 bytes, "
            "got 0 bytes: ''\n",
        ),
        (
            [str(PGCOORD), "revive", "\udcff\udcfe"],  # the bytes ff fe: not UTF-8
            "pgcoord revive: error: argument CONVERSATION: must be UTF-8 text, got bytes "
            "that are not: '\\udcff\\udcfe'\n",
        ),
        (
            [str(PGCOORD), "work", "x:y", "--name", "w\udcff"],
            "pgcoord work: error: argument --name: must be UTF-8 text, got bytes that are "
            "not: 'w\\udcff'\n",
        ),
        (
            [str(PGCOORD), "demo", "--webhooks", "1e9"],
            "pgcoord demo: error: argument --webhooks: must be a whole number from 2 to 1000, "
            "got '1e9'\n",
        ),
        (
            [sys.executable, "-m", "pgcoord.demo", "--workers=-1"],
            "pgcoord demo: error: argument --workers: must be a whole number from 1 to 64, "
            "got '-1'\n",
        ),
        (
            [
                str(PGCOORD),
                "torture",
                "--json",
                "/nonexistent/dir/x.json",
                "--database-url",
                REFUSED,
            ],
            "pgcoord torture: error: argument --json: must be a file in an existing folder, "
            "got '/nonexistent/dir/x.json'\n",
        ),
        (
            [
                sys.executable,
                "-m",
                "pgcoord.demo.torture",
                "--json",
                "/tmp",
                "--database-url",
                REFUSED,
            ],
            "pgcoord torture: error: argument --json: must be a file, not a folder, got '/tmp'\n",
        ),
        (
            [str(PGCOORD), "nothing"],
            "pgcoord: error: argument COMMAND: invalid choice: 'nothing' (choose from "
            "'migrate', 'status', 'campaigns', 'watch', 'revive', 'work', 'maintain', "
            "'version', 'demo', 'torture')\n",
        ),
    ],
)
def test_bad_options_in_a_process_are_one_line(argv: list[str], message: str) -> None:
    done = run(argv)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message)


def test_values_in_messages_show_empty_and_cut_visibly() -> None:
    assert shown("") == "''"
    assert shown("a\nb") == "'a\\nb'"
    long = "y" * (SHOWN_WIDTH + 1)
    assert shown(long) == repr(long[:SHOWN_WIDTH]) + "..."
    assert shown("z" * SHOWN_WIDTH) == repr("z" * SHOWN_WIDTH)


# Files the commands write ---------------------------------------------------------------


def test_every_file_option_is_checked() -> None:
    """An option naming a file that the command writes is checked when the command line
    is read, not when the file is written, at the end of the run."""
    found = [
        (words, action.option_strings)
        for words, parser in parsers()
        for action in parser._actions
        if action.metavar == "FILE"
    ]
    assert (["torture"], ["--json"]) in found
    for words, parser in parsers():
        for action in parser._actions:
            if action.metavar == "FILE":
                assert action.type is options.output_file, (words, action.option_strings)


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("/nonexistent/dir/x.json", "must be a file in an existing folder"),
        ("{tmp}", "must be a file, not a folder"),
        ("{tmp}/", "must be a file, not a folder"),
        ("{tmp}/new/", "must be a file in an existing folder"),
        ("{tmp}/plain/x.json", "must be a file in an existing folder"),
        ("", "must be a file path"),
    ],
)
def test_a_file_to_write_is_refused_before_the_command_starts(
    tmp_path: Path, path: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "plain").write_text("a file, not a folder")
    path = path.format(tmp=tmp_path)
    argv = ["torture", "--json", path, "--seconds", "10", "--database-url", REFUSED]
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing ran: the seed line comes first
    assert captured.err == f"pgcoord torture: error: argument --json: {said}, got {shown(path)}\n"


def test_a_file_that_cannot_be_written_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # as for a user, not root
    with pytest.raises(SystemExit) as exited:
        build_torture_parser().parse_args(["--json", str(tmp_path / "x.json")])
    assert exited.value.code == 2
    assert "argument --json: must be a file you can write, got " in capsys.readouterr().err


def test_a_file_to_write_in_an_existing_folder_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "old.json").write_text("{}")
    for path in ["x.json", "old.json", str(tmp_path / "x.json"), "./x.json"]:
        assert build_torture_parser().parse_args(["--json", path]).json == path


# The database URL ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "status", "said"),
    [
        ("postgres://u:secret@[bad", 2, "invalid database URL: end of string reached"),
        ("mysql://u:secret@host/db", 2, "must start with postgresql:// or postgres://, got "),
        ("no-such-option=1", 2, 'invalid connection option "no-such-option" (--database-url)'),
        ("", 2, "invalid database URL: --database-url is empty, got ''"),
        ("postgresql://u:secret@host/\udcff", 2, "--database-url is not UTF-8 text, got "),
        ("postgresql://u:secret@host:port/db", 2, "the port must be a number, got 'port'"),
        (
            "postgresql://postgres:secret@127.0.0.1:1/postgres?connect_timeout=5",
            1,
            "cannot connect to the database: 127.0.0.1:1/postgres: Connection refused",
        ),
    ],
)
@pytest.mark.parametrize("command", ["migrate", "status", "version", "revive c"])
def test_a_bad_database_url_is_one_line_naming_the_cause(
    url: str, status: int, said: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([*command.split(), "--database-url", url]) == status
    err = capsys.readouterr().err
    assert_one_line(err)
    assert err.startswith("pgcoord: error: ")
    assert said in err
    assert "secret" not in err


def test_database_url_from_the_environment_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://u:secret@host/db")
    assert cli.main(["status"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "pgcoord: error: invalid database URL: DATABASE_URL must start with postgresql:// "
        "or postgres://, got 'mysql://u:***@host/db'\n"
    )


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            {"dbname": "pgcoord_no_such_database"},
            'database "pgcoord_no_such_database" does not exist',
        ),
        ({"user": "pgcoord_no_such_role"}, "pgcoord_no_such_role"),
    ],
)
def test_an_unknown_database_or_role_is_named(
    server_url: str, change: dict[str, str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = make_conninfo(server_url, **change)
    assert cli.main(["status", "--database-url", url]) == 1
    err = capsys.readouterr().err
    assert_one_line(err)
    assert err.startswith("pgcoord: error: cannot connect to the database: ")
    assert said in err


@pytest.fixture
def silent_server() -> Iterator[tuple[int, threading.Event]]:
    """A port that accepts connections and never answers; the event is set when one was
    accepted."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed at the end of the test
                return
            held.append(conn)
            accepted.set()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        listener.close()
        for conn in held:
            conn.close()


def test_a_server_that_does_not_answer_fails_in_seconds(
    silent_server: tuple[int, threading.Event],
) -> None:
    port, _accepted = silent_server
    url = f"postgresql://u@127.0.0.1:{port}/db?connect_timeout=1"
    started = time.monotonic()
    done = run([str(PGCOORD), "status", "--database-url", url])
    assert time.monotonic() - started < 30
    assert done.returncode == 1
    assert done.stderr == (
        f"pgcoord: error: cannot connect to the database: 127.0.0.1:{port}/db: "
        "connection timeout expired\n"
    )


# Ctrl-C and a reader that goes away --------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        ([str(PGCOORD), "migrate"], "pgcoord: error: interrupted\n"),
        ([sys.executable, "-m", "pgcoord.cli", "status"], "pgcoord: error: interrupted\n"),
        ([sys.executable, "-m", "pgcoord.demo"], "pgcoord demo: error: interrupted\n"),
    ],
)
def test_ctrl_c_is_one_line_and_status_130(
    silent_server: tuple[int, threading.Event], argv: list[str], said: str
) -> None:
    port, accepted = silent_server
    url = f"postgresql://u@127.0.0.1:{port}/db?connect_timeout=60"
    proc = subprocess.Popen(
        [*argv, "--database-url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert accepted.wait(30), "the command did not connect"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, err) == (130, said)


def run_into_a_closed_pipe(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run with stdout a pipe whose reader is already gone: every write fails (EPIPE)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return run(argv, stdout=write_end)
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "words",
    [["version"], ["--help"], ["work", "--help"], ["demo", "--help"], ["status"]],
    ids=" ".join,
)
def test_a_reader_that_went_away_stops_the_command_quietly(words: list[str], db_url: str) -> None:
    argv = [str(PGCOORD), *words]
    if words == ["status"]:
        argv += ["--database-url", db_url]
    done = run_into_a_closed_pipe(argv)
    assert (done.returncode, done.stderr) == (1, "")


def test_python_m_pgcoord_cli_is_the_command() -> None:
    done = run([sys.executable, "-m", "pgcoord.cli", "version"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("driver:    ")


@pytest.mark.parametrize(
    ("url", "status", "said"),
    [
        (
            "postgres://u:secret@[bad",
            2,
            "pgcoord demo: error: invalid database URL: end of string reached when looking for "
            'matching "]" in IPv6 host address in URI (--database-url)\n',
        ),
        (
            "postgresql://u:secret@127.0.0.1:1/postgres?connect_timeout=5",
            1,
            "pgcoord demo: error: connection to 127.0.0.1:1/postgres failed: Connection refused; "
            "is the server running on that host and accepting TCP/IP connections?\n",
        ),
    ],
)
def test_the_demo_says_what_is_wrong_with_its_database_url_on_one_line(
    url: str, status: int, said: str
) -> None:
    done = run([sys.executable, "-m", "pgcoord.demo", "--database-url", url])
    assert (done.returncode, done.stderr) == (status, said)
