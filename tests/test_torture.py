"""The torture (`pgcoord torture`): a short seeded run on its own embedded server, which
it crashes and restarts, injects every kind of fault and holds every check; so does a
run through PgBouncer on the test server; both leave nothing behind. Its checks fail on
facts that break them, its fenced lock write refuses a stale token, and its schedule
follows the seed."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from poolerkit import Pooler
from test_demo import calm_storm

from pgcoord import CampaignEnqueued
from pgcoord.demo import checks
from pgcoord.demo.facts import (
    Chunk,
    Fault,
    QueuedMessage,
    Zombie,
    analyse,
    analyse_locks,
    campaign_zombie,
    lock_zombie,
)
from pgcoord.demo.ledger import Try
from pgcoord.demo.torture import Deadline, _bounded, main
from pgcoord.demo.torture_faults import FIRST, KINDS, LAST, ROUND, schedule
from pgcoord.demo.torture_lockers import Hold, LockLedger, LockTry, LockWrite
from pgcoord.locks import lock_acquire

# end to end, the same on any server: one suite of two runs it (scripts/test)
pytestmark = pytest.mark.one_suite

SEED = 20261202
PROGRAMS = (
    b"pgcoord.demo.storm_worker",
    b"pgcoord.demo.torture_lockers",
    b"pgcoord.demo.campaign_worker",
)


def torture(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """Run the torture with `args` and the test's seed; its exit status and --json."""
    report = tmp_path / "torture.json"
    code = main([*args, "--seed", str(SEED), "--json", str(report), "--ascii"])
    return code, json.loads(report.read_text())


def processes_of(database: str) -> list[str]:
    """The torture's worker processes still running for the scratch database `database`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if any(p in cmdline for p in PROGRAMS) and database.encode() in environ:
            found.append(proc.name)
    return found


def assert_held(code: int, report: dict[str, Any], out: str) -> None:
    assert code == 0, out
    assert report["ok"] and report["checks"], out
    assert [c["label"] for c in report["checks"] if not c["held"]] == [], out
    assert all(f["recovery"] is not None for f in report["faults"]), out


def test_a_short_run_on_its_own_server_injects_every_fault_and_holds_every_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    code, report = torture(tmp_path, "--seconds", "15")
    out = capsys.readouterr().out
    assert_held(code, report, out)
    assert report["injected"] == dict.fromkeys(KINDS, 1), out
    assert "it is crashed and restarted" in out
    assert "restart: crash (pg_ctl stop -m immediate) and start again" in out
    # both zombies were taken over, and their late writes refused
    assert (
        "ok every zombie's late write refused (1 lock holder, 1 buffer worker, 1 campaign "
        "worker stopped past their lease" in out
    )
    # the campaign workers sent and the killed one's messages came again to another
    assert "ok none lost or stuck: the 60 messages enqueued are all there" in out
    assert re.search(r"ok campaign-\d's \d+ messages? came again to campaign-\d", out), out
    assert "its late writes: ['refused']" in out
    assert processes_of(f"pgcoord_torture_{report['run']}") == []


def test_a_run_through_the_pooler_holds_every_check_and_leaves_nothing_behind(
    tmp_path: Path, server_url: str, pooler: Pooler, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = torture(
        tmp_path, "--seconds", "10", "--database-url", server_url, "--through-pooler", pooler.url
    )
    out = capsys.readouterr().out
    assert_held(code, report, out)
    # a server given by URL is not restarted
    assert report["injected"] == {"kill": 1, "stop": 1, "terminate": 1}, out
    assert "a server given by URL is not restarted: no restart fault" in out
    assert "the processes, webhooks and producer connect through the pooler" in out
    database = f"pgcoord_torture_{report['run']}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database])
        assert left.fetchall() == []
    assert processes_of(database) == []


def test_bad_usage_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    for args in (["--seconds", "3"], ["--seed", "x"], ["--seconds", "inf"]):
        with pytest.raises(SystemExit) as exited:
            main(args)
        assert exited.value.code == 2
        assert capsys.readouterr().err.startswith("pgcoord torture: error: argument --se")
    assert main(["--through-pooler", "postgresql://127.0.0.1:1/x"]) == 2
    assert capsys.readouterr().err == (
        "pgcoord torture: error: --through-pooler needs --database-url (or DATABASE_URL): the "
        "server behind the pooler\n"
    )
    assert main(["--database-url", "postgresql:///x", "--through-pooler", "http://x"]) == 2
    assert "--through-pooler must start with postgresql://" in capsys.readouterr().err


def test_a_run_past_its_hard_deadline_is_cut_short() -> None:
    with pytest.raises(Deadline, match=r"the hard deadline of 0\.2 s passed"), _bounded(0.2):
        time.sleep(10)
    with _bounded(10):  # within it, nothing happens
        pass


def test_the_schedule_follows_the_seed_with_every_kind_in_each_round() -> None:
    first = schedule(SEED, 50, KINDS)
    assert first == schedule(SEED, 50, KINDS) != schedule(SEED + 1, 50, KINDS)
    rounds = int(50 // ROUND)
    assert len(first) == rounds * len(KINDS)
    for r in range(rounds):
        assert sorted(kind for _, kind in first[r * 4 : r * 4 + 4]) == sorted(KINDS)
    times = [at for at, _ in first]
    assert times == sorted(times) and times[0] >= FIRST and times[-1] <= 50 - LAST
    assert [kind for _, kind in schedule(SEED, 12, ["kill", "stop"])] in (
        ["kill", "stop"],
        ["stop", "kill"],
    )


# the fenced lock write on a real server ------------------------------------------------


def test_the_fenced_write_refuses_a_stale_token_and_a_landed_one_is_caught(
    conn: psycopg.Connection[Any],
) -> None:
    ledger = LockLedger("torture_test")
    ledger.create(conn)
    key = "lock:test:0"
    a = lock_acquire(conn, key, "locker-a", ttl=timedelta(milliseconds=200))
    b = lock_acquire(conn, key, "locker-b", ttl=timedelta(seconds=30), wait=timedelta(seconds=5))
    assert a.acquired and b.acquired and b.took_over and b.token > a.token
    assert ledger.write(conn, key, a.token, "locker-a") is False  # the zombie's late write
    assert ledger.write(conn, key, b.token, "locker-b") is True
    tries, writes = ledger.lock_tries(conn), ledger.lock_writes(conn)
    assert [(t.token, t.current) for t in tries] == [(a.token, False), (b.token, True)]
    assert [(w.token, w.owner) for w in writes] == [(b.token, "locker-b")]
    live = ledger.live(conn, "lock:test:")
    locks = analyse_locks(tries, writes, live)
    assert checks.lock_writes_fenced(locks).held
    assert not checks.no_lease_left(locks).held  # locker-b still holds it
    zombie = lock_zombie("locker-a", Hold("locker-a", key, a.token), True, tries, writes)
    assert checks.zombie_writes_refused([zombie]).held

    # a fence that let the zombie through: its write lands after the newer grant's
    conn.execute(
        "INSERT INTO torture_test.lock_tries (key, token, owner, current)"
        " VALUES (%s, %s, 'locker-a', true)",
        [key, a.token],
    )
    conn.execute(
        "INSERT INTO torture_test.lock_writes (key, token, owner) VALUES (%s, %s, 'locker-a')",
        [key, a.token],
    )
    tries, writes = ledger.lock_tries(conn), ledger.lock_writes(conn)
    forged = analyse_locks(tries, writes, [])
    check = checks.lock_writes_fenced(forged)
    assert not check.held and f"token {a.token} (locker-a) after {b.token}" in check.detail
    zombie = lock_zombie("locker-a", Hold("locker-a", key, a.token), True, tries, writes)
    assert (zombie.late_tries, zombie.landed) == ((False, True), 1)
    assert not checks.zombie_writes_refused([zombie]).held


# the torture's checks can fail ----------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def tried(key: str, token: int, owner: str, current: bool, at: float) -> LockTry:
    return LockTry(key, token, owner, current, T0 + timedelta(seconds=at))


def written(key: str, token: int, owner: str, at: float) -> LockWrite:
    return LockWrite(key, token, owner, T0 + timedelta(seconds=at))


FAIR_TRIES = [
    tried("k0", 1, "a", True, 0.1),
    tried("k1", 2, "b", True, 0.2),
    tried("k0", 3, "c", True, 1.5),  # a's lease ran out; c took k0 over
    tried("k0", 1, "a", False, 1.6),  # a's late write, refused
    tried("k0", 3, "c", True, 1.7),  # c wrote again after its answer was lost
]
FAIR_WRITES = [
    written("k0", 1, "a", 0.1),
    written("k1", 2, "b", 0.2),
    written("k0", 3, "c", 1.5),
    written("k0", 3, "c", 1.7),
]


def test_lock_checks_hold_for_fair_writes() -> None:
    locks = analyse_locks(FAIR_TRIES, FAIR_WRITES, [])
    assert (locks.tries, locks.refused, locks.writes) == (5, 1, 4)
    assert checks.lock_writes_fenced(locks).held
    assert checks.no_lease_left(locks).held


@pytest.mark.parametrize(
    ("tries", "writes", "found"),
    [
        # an older grant's write let through after a newer one's: two grants overlapped
        (
            [*FAIR_TRIES, tried("k0", 1, "a", True, 1.8)],
            [*FAIR_WRITES, written("k0", 1, "a", 1.8)],
            "k0: token 1 (a) after 3 (c)",
        ),
        # one grant written by two owners
        (
            [*FAIR_TRIES, tried("k1", 2, "c", True, 1.9)],
            [*FAIR_WRITES, written("k1", 2, "c", 1.9)],
            "k1: token 2 by b, c",
        ),
        # an effect the fence never let through: the refused write landed after all
        (FAIR_TRIES, [*FAIR_WRITES, written("k0", 1, "a", 1.6)], "1 let through, 2 written"),
        # a write let through without its effect
        (FAIR_TRIES, FAIR_WRITES[:-1], "2 let through, 1 written"),
    ],
)
def test_lock_checks_fail_on_writes_that_break_the_fence(
    tries: list[LockTry], writes: list[LockWrite], found: str
) -> None:
    check = checks.lock_writes_fenced(analyse_locks(tries, writes, []))
    assert not check.held and found in check.detail


def test_lock_checks_fail_with_no_write_let_through_or_a_lease_left() -> None:
    assert not checks.lock_writes_fenced(analyse_locks([], [], [])).held
    left = analyse_locks(FAIR_TRIES, FAIR_WRITES, [Hold("c", "k0", 3)])
    check = checks.no_lease_left(left)
    assert not check.held and check.detail == "k0 held by c, token 3"


REFUSED = Zombie("locker-1", "lock", (5,), True, (False,), 0)
QUIET = Zombie("buffer-2", "buffer", (7, 8), True, (), 0)
SILENT = Zombie("campaign-1", "campaign", (9,), True, (), 0)


def test_the_zombie_check_holds_when_every_late_write_was_refused() -> None:
    check = checks.zombie_writes_refused([REFUSED, QUIET, SILENT])
    assert check.held and "1 lock holder, 1 buffer worker, 1 campaign worker" in check.label
    check = checks.zombie_writes_refused([REFUSED])
    assert check.held and "1 lock holder, 0 buffer workers stopped" in check.label


@pytest.mark.parametrize(
    "zombies",
    [
        [replace(REFUSED, late_tries=(False, True), landed=1), QUIET],  # let through
        [replace(REFUSED, late_tries=()), QUIET],  # no late write seen at all
        [REFUSED, replace(QUIET, landed=1)],  # a worker's reply with its old token
        [REFUSED, QUIET, replace(SILENT, landed=1)],  # a completion with its old token
        [replace(REFUSED, taken_over=False), replace(QUIET, taken_over=False)],  # no zombie
        [],
    ],
)
def test_the_zombie_check_fails_when_a_late_write_landed_or_there_was_no_zombie(
    zombies: list[Zombie],
) -> None:
    assert not checks.zombie_writes_refused(zombies).held


def test_a_campaign_zombie_landed_only_what_it_sent_with_the_claim_it_was_stopped_in() -> None:
    def try_(message_id: int, token: int, attempt: int, worker: str) -> Try:
        return Try(message_id, token, attempt, worker, T0)

    def sent(message_id: int, attempt: int, worker: str) -> QueuedMessage:
        return QueuedMessage(message_id, "+1", "sent", attempt, None, {"worker": worker})

    held = {1: 1, 2: 1}  # both claimed by campaign-1 in claim 10 when it was stopped
    tries = [try_(1, 10, 1, "campaign-1"), try_(2, 10, 1, "campaign-1")]
    tries += [try_(1, 11, 2, "campaign-2"), try_(2, 11, 2, "campaign-2")]
    fair = campaign_zombie(
        "campaign-1", held, True, tries, [sent(1, 2, "campaign-2"), sent(2, 2, "campaign-2")]
    )
    assert (fair.kind, fair.tokens, fair.landed) == ("campaign", (10,), 0)
    # campaign-1's completion with claim 10 landed after campaign-2 had the message
    stale = campaign_zombie(
        "campaign-1", held, True, tries, [sent(1, 2, "campaign-2"), sent(2, 2, "campaign-1")]
    )
    assert stale.landed == 1
    assert not checks.zombie_writes_refused([stale]).held
    # campaign-1 got message 2 again later (a third try, its own claim 12) and sent it
    again = [*tries, try_(2, 12, 3, "campaign-1")]
    legit = campaign_zombie(
        "campaign-1", held, True, again, [sent(1, 2, "campaign-2"), sent(2, 3, "campaign-1")]
    )
    assert legit.landed == 0


def fault(kind: str, recovery: float | None) -> Fault:
    return Fault(kind, 1.0, kind, recovery, {"locks": recovery})


def test_the_fault_checks_fail_on_a_missing_kind_or_no_recovery() -> None:
    faults = [fault(kind, 0.5) for kind in KINDS]
    assert checks.faults_injected(faults, KINDS).held
    assert checks.work_flowed_again(faults, 20).held
    missing = checks.faults_injected(faults[:-1], KINDS)
    assert not missing.held and missing.detail == f"never injected: {KINDS[-1]}"
    stuck = checks.work_flowed_again([*faults, fault("kill", None)], 20)
    assert not stuck.held and stuck.detail == "kill at 1.0 s: locks"
    assert not checks.work_flowed_again([], 20).held


def test_a_message_without_its_first_answer_counts_once_only_when_the_answer_was_lost() -> None:
    plan, deliveries, rows, claims, replies, _ = calm_storm()
    first = next(d for d in deliveries if d.kind == "burst" and any(
        o.provider_message_id == d.provider_message_id and o.duplicate for o in deliveries
    ))  # fmt: skip
    # the first delivery's answer was cut by a fault: every answer seen says duplicate
    seen = [d for d in deliveries if d is not first]
    lost = analyse(plan, seen, rows, claims, replies, [], {first.provider_message_id})
    check = checks.stored_once(lost)
    assert check.held and "1 delivered again after a fault cut their answer" in check.label
    assert not checks.stored_once(analyse(plan, seen, rows, claims, replies, [])).held
    # a lost answer never excuses two stores of one id
    twice = [*deliveries, replace(first, duplicate=False)]
    lost = {first.provider_message_id}
    assert not checks.stored_once(analyse(plan, twice, rows, claims, replies, [], lost)).held


def chunk(n: int, answer: tuple[int, bool], failed: int = 0, cut: bool = False) -> Chunk:
    return Chunk(f"chunk-{n}", 2, CampaignEnqueued(*answer), failed, cut)


def queued(*recipients: str) -> list[QueuedMessage]:
    return [QueuedMessage(i, r, "sent", 1, None, {}) for i, r in enumerate(recipients, 1)]


FAIR_CHUNKS = [
    chunk(0, (2, False)),
    chunk(1, (2, True), failed=1, cut=True),  # the proxy lost its answer after the commit
    chunk(2, (2, False), failed=1),  # a terminate cut the call before it committed
    chunk(3, (2, True), failed=2),  # cut after the commit by a fault
]
FAIR_QUEUE = queued(*(f"+{i}" for i in range(8)))


def test_the_producer_check_holds_when_each_chunk_was_enqueued_once() -> None:
    check = checks.enqueued_once_under_faults(FAIR_CHUNKS, FAIR_QUEUE)
    assert check.held, check.detail
    assert "4 chunks" in check.label and "4 calls made again" in check.label
    assert "1 lost after the commit" in check.label


@pytest.mark.parametrize(
    ("chunks", "messages"),
    [
        # the chunk whose answer was lost after the commit was enqueued again
        (
            [*FAIR_CHUNKS[:1], chunk(1, (2, False), failed=1, cut=True), *FAIR_CHUNKS[2:]],
            [*FAIR_QUEUE, *queued("+2", "+3")],
        ),
        # a chunk whose one call never failed found its key already taken
        ([*FAIR_CHUNKS[:2], chunk(2, (2, True)), *FAIR_CHUNKS[3:]], FAIR_QUEUE),
        # a chunk answered with another count than its size
        ([*FAIR_CHUNKS[:3], chunk(3, (3, True), failed=2)], FAIR_QUEUE),
        # a recipient twice in the queue (as many messages as the chunks hold)
        (FAIR_CHUNKS, [*FAIR_QUEUE[:-1], *queued("+5")]),
        # a message more than the chunks hold
        (FAIR_CHUNKS, [*FAIR_QUEUE, *queued("+9")]),
        # a message missing
        (FAIR_CHUNKS, FAIR_QUEUE[:-1]),
        # no answer was lost after the commit: the check tested nothing
        ([c for c in FAIR_CHUNKS if not c.cut], FAIR_QUEUE[:6]),
        ([], []),
    ],
)
def test_the_producer_check_fails_on_a_chunk_enqueued_twice_or_lost(
    chunks: list[Chunk], messages: list[QueuedMessage]
) -> None:
    assert not checks.enqueued_once_under_faults(chunks, messages).held
