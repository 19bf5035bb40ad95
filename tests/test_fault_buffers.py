"""Process-level faults: worker processes are SIGKILLed at random points while a stream of
messages arrives. At the end every message is answered exactly once by the fenced
ledger (the reply and buffer_complete commit in one transaction), none is left
buffered, no batch is dead, and every reply carries the last claim of its messages.

The workers are real processes (`python -m pgcoord.demo.storm_worker`). The kill instants are
drawn from a seeded RNG; the first kill lands on a worker that holds a fresh claim
(mid-batch; should its reply have committed first, the next kill tries again), the others
on a random worker, each replaced at once by a new process. Three kills in all, so no
batch can lose five leases and be parked.
"""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path
from typing import Any, LiteralString

import psycopg

from pgcoord.demo.facts import analyse, next_delivery
from pgcoord.demo.ledger import Ledger, buffered, stored
from pgcoord.demo.plan import Plan, make_plan
from pgcoord.demo.senders import Storm
from pgcoord.demo.server import connect
from pgcoord.demo.waiting import poll, wait_until
from pgcoord.demo.workers import WorkerProcess, storm_process, wait_ready
from pgcoord.inbox import buffer_complete, buffer_extend

SEED = 20240917
CONVERSATIONS = 60
SPAN = 4.0  # seconds of new messages
WORKERS = 3
KILLS = 3
CONCURRENCY = 3
THINK = (0.15, 0.4)  # seconds per burst: long enough for a kill to land mid-batch
DRAIN_TIMEOUT = 30.0

# Workers holding a claim they logged in the last 50 ms and have not answered: a kill
# now lands mid-batch (the model thinks for at least 150 ms after the log).
HOLDING: LiteralString = (
    "SELECT c.worker, c.claim_token FROM {schema}.claims AS c"
    " JOIN pgcoord.buffer_status AS s"
    " ON s.conversation_key = c.conversation_key AND s.claimed_by = c.worker"
    " WHERE c.claimed_at > clock_timestamp() - interval '50 milliseconds'"
    " AND NOT EXISTS (SELECT 1 FROM {schema}.replies AS r WHERE r.claim_token = c.claim_token)"
    " ORDER BY c.claim_token"
)


class Crew:
    """The worker processes of the test; a killed one is replaced by a new one."""

    def __init__(self, url: str, ledger: Ledger, plan: Plan, logs: Path) -> None:
        self.url, self.ledger, self.plan, self.logs = url, ledger, plan, logs
        self.workers: list[WorkerProcess] = []
        self.killed: list[WorkerProcess] = []

    def spawn(self) -> WorkerProcess:
        worker = storm_process(
            self.url,
            self.ledger,
            self.plan,
            f"worker-{len(self.workers) + 1}",
            self.logs,
            concurrency=CONCURRENCY,
            think=THINK,
        )
        self.workers.append(worker)
        return worker

    def live(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive()]

    def kill(self, worker: WorkerProcess) -> None:
        worker.kill()
        self.killed.append(worker)
        self.spawn()

    def stop(self) -> dict[str, int]:
        return {w.name: w.stop() for w in self.workers}


def holder(conn: psycopg.Connection[Any], crew: Crew) -> tuple[WorkerProcess, int] | None:
    """A live worker that holds a fresh, unanswered claim, and the claim's token."""
    by_name = {w.name: w for w in crew.live()}
    for name, token in conn.execute(crew.ledger.query(HOLDING)):
        if name in by_name:
            return by_name[name], token
    return None


def test_sigkilled_workers_lose_no_message_and_answer_none_twice(
    db_url: str, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    run = uuid.uuid4().hex[:8]
    plan = make_plan(run, CONVERSATIONS, seed=SEED, span=SPAN)
    ledger = Ledger(f"storm_{run}")
    kill_at = sorted(rng.uniform(0.5, SPAN) for _ in range(KILLS))
    targeted: int | None = None  # the token of the claim a kill interrupted

    with connect(db_url) as conn:
        ledger.create(conn)
        crew = Crew(db_url, ledger, plan, tmp_path)
        try:
            for _ in range(WORKERS):
                crew.spawn()
            wait_ready(conn, ledger, crew.workers)
            sender = Storm(db_url, plan, lanes=4)
            sender.start()
            assert poll(lambda: sender.started or None, DRAIN_TIMEOUT) is not None
            for at in kill_at:
                # the random instant of this kill
                time.sleep(max(0.0, sender.started + at - time.perf_counter()))
                if targeted is None:  # until a kill has landed mid-batch
                    found = poll(lambda: holder(conn, crew), DRAIN_TIMEOUT, interval=0.01)
                    assert found is not None, "no worker ever held a claim to kill it in"
                    victim, token = found
                    crew.kill(victim)
                    if token not in {r.claim_token for r in ledger.replies(conn)}:
                        targeted = token
                else:
                    crew.kill(rng.choice(sorted(crew.live(), key=lambda w: w.name)))
            deliveries = sender.join(SPAN + 60)
            drained = wait_until(lambda: ledger.drained(conn, plan), DRAIN_TIMEOUT)
        finally:
            codes = crew.stop()
        claims = ledger.claims(conn)
        replies = ledger.replies(conn)
        outcome = analyse(
            plan, deliveries, stored(conn, plan), claims, replies, buffered(conn, plan)
        )
        logs = "\n".join(f"--- {w.name}\n{w.log_tail()}" for w in crew.workers)
        assert drained, f"not drained within {DRAIN_TIMEOUT} s: {outcome.buffered}\n{logs}"

        # every message stored once, whatever the retries
        assert outcome.stored == outcome.messages == plan.messages
        assert outcome.misdelivered == ()
        assert outcome.repeats == plan.retries("late") + plan.retries("double") > 0
        # every message answered exactly once by the fenced ledger
        assert outcome.unanswered == ()
        assert outcome.answered_twice == ()
        assert outcome.strangers == ()
        assert outcome.split == ()
        # none left buffered, no dead batch
        assert outcome.buffered == ()
        assert outcome.not_done == ()
        assert max(r.attempt for r in replies) < 5
        # every reply is its messages' last claim; every claim without one was delivered
        # again, with a higher attempt
        assert outcome.not_final == ()
        assert outcome.unrecovered == ()

        # the kills: each one a SIGKILL, the first mid-batch; every batch a killed
        # worker held is answered by another claim, and its own token is refused now
        killed = {w.name for w in crew.killed}
        assert len(crew.killed) == KILLS
        assert all(w.process.returncode == -9 for w in crew.killed)
        replied = {r.claim_token for r in replies}
        lost = [c for c in claims if c.worker in killed and c.claim_token not in replied]
        assert targeted is not None, "no kill landed mid-batch"
        assert targeted in {c.claim_token for c in lost}, logs
        for claim in lost:
            again = next_delivery(claims, claim)
            assert again is not None and again.attempt > claim.attempt
            assert buffer_complete(conn, claim.conversation_key, claim.claim_token) is False
            assert buffer_extend(conn, claim.conversation_key, claim.claim_token) is None
        first = next(c for c in lost if c.claim_token == targeted)
        again = next_delivery(claims, first)
        assert again is not None and again.worker != first.worker
        assert outcome.superseded >= len(lost)
        # the workers that were not killed stop cleanly on SIGTERM
        assert {name: code for name, code in codes.items() if name not in killed} == {
            w.name: 0 for w in crew.workers if w.name not in killed
        }, logs
