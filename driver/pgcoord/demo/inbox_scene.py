"""The inbox scene: a WhatsApp-like storm (see `plan`, `senders`): many conversations
send bursts of rapid messages, the provider retries some message ids (some at the same
instant from a second connection), and worker processes (`workers`) answer each burst
with a fenced reply (the reply row and buffer_complete in one transaction). One worker
is SIGKILLed while it holds a batch: after its lease another worker gets the same
messages as attempt 2, and the dead worker's late completion is refused by its token.
Then the checks: every message stored once and answered exactly once, every burst by
one reply, nothing stuck.

The storm runs in a scratch database of its own (`pgcoord_demo_<run>`, created next to
the given one and dropped at the end), so no worker of the demo ever touches another
application's conversations, nor another application's workers the demo's."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from pgcoord import ClaimLost
from pgcoord.inbox import buffer_complete, buffer_extend

from . import checks
from .facts import Outcome, Takeover, analyse, next_delivery, reply_of
from .ledger import Claim, Ledger, buffered, stored
from .output import plural, spread
from .plan import Plan, make_plan
from .scratch import READY_TIMEOUT, Scene, open_scratch
from .senders import Delivery, Storm
from .server import server_clock
from .storm_worker import LEASE
from .waiting import SceneError, poll, wait_until
from .workers import COMMAND, WorkerProcess, stop_all, storm_process

STORM_SEED = 9  # the same storm every run
STORM_LANES = 6  # sending connections, each with a twin for the double deliveries
WORKER_CONCURRENCY = 4
VICTIM_THINK = 60.0  # seconds: the killed worker's model never answers in time
DRAIN_TIMEOUT = 30.0  # seconds for the last bursts after the storm (leases included)


@dataclass(frozen=True, slots=True)
class Stage:
    """Where the storm plays: its scratch database (URL and a connection), the ledger,
    the plan, and a folder for the workers' logs."""

    url: str
    conn: psycopg.Connection[Any]
    ledger: Ledger
    plan: Plan
    logs: Path


def connections_needed(workers: int) -> int:
    """The most connections the storm opens at once with `workers` workers."""
    return 2 * STORM_LANES + workers * (2 * WORKER_CONCURRENCY + 2) + 6


class InboxScenes(Scene):
    """The inbox scenes: the storm in a scratch database next to the given one."""

    def play(self, conversations: int, workers: int) -> None:
        self.report.heading(
            f"{self.number}. An inbox storm: {conversations} WhatsApp conversations, "
            f"{workers} worker processes, one more killed mid-batch"
        )
        name = f"pgcoord_demo_{self.run}"
        ledger = Ledger(name)
        with ExitStack() as stack:
            scratch = open_scratch(stack, self.url, name, ledger, self.report, "the storm")
            if scratch is None:
                return
            plan = make_plan(self.run, conversations, seed=STORM_SEED)
            stage = Stage(scratch.url, scratch.conn, ledger, plan, scratch.logs)
            self._storm(stage, stack, workers)

    def _storm(self, stage: Stage, stack: ExitStack, workers: int) -> None:
        crew, victim = self._start_workers(stage, stack, workers)
        sender = Storm(stage.url, stage.plan, lanes=STORM_LANES)
        sender.start()
        # the victim starts alone, so the first due burst is surely its own
        claim, killed_at = self._kill_mid_batch(stage, victim)
        stage.ledger.release(stage.conn, [w.name for w in crew])
        deliveries = self._sent(stage.plan, sender)
        if not wait_until(lambda: stage.ledger.drained(stage.conn, stage.plan), DRAIN_TIMEOUT):
            self.report.line(f"NOT all answered {DRAIN_TIMEOUT:g} s after the last delivery")
        takeover = self._late(stage, victim.name, claim, killed_at)
        codes = stop_all(crew)
        outcome = _outcome(stage, deliveries)
        found = checks.storm_checks(outcome, takeover)
        for check in found[:2]:
            self.report.add(check)
        self._show_ledger(outcome)
        for check in found[2:]:
            self.report.add(check)
        self.report.add(checks.workers_stopped_cleanly(crew, codes))

    def _start_workers(
        self, stage: Stage, stack: ExitStack, workers: int
    ) -> tuple[list[WorkerProcess], WorkerProcess]:
        """`workers` gated worker processes and a victim that claims alone and never
        answers in time; wait until all are ready. Every one is stopped on exit."""
        crew = [
            storm_process(
                stage.url,
                stage.ledger,
                stage.plan,
                f"worker-{i}",
                stage.logs,
                concurrency=WORKER_CONCURRENCY,
                gated=True,
            )
            for i in range(1, workers + 1)
        ]
        victim = storm_process(
            stage.url,
            stage.ledger,
            stage.plan,
            f"worker-{workers + 1}",
            stage.logs,
            concurrency=1,
            think=(VICTIM_THINK, VICTIM_THINK),
        )
        self.muster(stack, stage.conn, stage.ledger, [*crew, victim], COMMAND)
        plan = stage.plan
        self.report.line(
            f"debounce {plan.debounce.total_seconds() * 1000:.0f} ms, max wait "
            f"{plan.max_wait.total_seconds():g} s, lease {LEASE.total_seconds():g} s; each "
            "reply is written in one transaction with buffer_complete (complete_in)"
        )
        return crew, victim

    def _kill_mid_batch(
        self, stage: Stage, victim: WorkerProcess
    ) -> tuple[Claim | None, datetime | None]:
        """Wait for the victim's first claim and SIGKILL it then; the claim and the
        server's clock at the kill (None, None: it never claimed)."""

        def victims_claim() -> Claim | None:
            if not victim.alive():
                raise SceneError(f"{victim.name} exited early:\n{victim.log_tail()}")
            return next(
                (c for c in stage.ledger.claims(stage.conn) if c.worker == victim.name), None
            )

        claim = poll(victims_claim, stage.plan.span + READY_TIMEOUT)
        if claim is None:
            self.report.line(f"{victim.name} never claimed a batch")
            return None, None
        held = [
            s
            for s in buffered(stage.conn, stage.plan)
            if s.conversation_key == claim.conversation_key
        ]
        victim.kill()
        killed_at = server_clock(stage.conn)
        shown = f"claimed_by {held[0].claimed_by}, attempt {held[0].attempt}" if held else "-"
        self.report.line(
            f"{victim.name} claims {claim.conversation_key} "
            f"({plural(len(claim.message_ids), 'message')}, claim token "
            f"{claim.claim_token}, attempt {claim.attempt}; buffer_status: {shown}) "
            "and is SIGKILLed mid-batch"
        )
        return claim, killed_at

    def _sent(self, plan: Plan, sender: Storm) -> list[Delivery]:
        """Wait for the senders; say what they sent."""
        deliveries = sender.join(plan.span + READY_TIMEOUT)
        self.report.line(
            f"{plan.messages} messages in {len(plan.bursts)} bursts sent by {sender.lanes} "
            f"connections over {sender.finished - sender.started:.1f} s, with "
            f"{plan.retries('late') + plan.retries('double')} provider retries "
            f"({plan.retries('double')} at the same instant from a second connection)"
        )
        return deliveries

    def _late(
        self, stage: Stage, victim: str, claim: Claim | None, killed_at: datetime | None
    ) -> Takeover:
        """What became of the victim's batch, and the dead worker's late calls."""
        if claim is None:
            return Takeover(victim, None, None, None, None, None, False, 0)
        conn, ledger = stage.conn, stage.ledger
        again = next_delivery(ledger.claims(conn), claim)
        reply = reply_of(ledger.replies(conn), claim)
        if again is not None and killed_at is not None:
            after = (again.claimed_at - killed_at).total_seconds()
            self.report.line(
                f"after the lease ran out, {again.worker} got the same "
                f"{plural(len(claim.message_ids), 'message')} as attempt {again.attempt} "
                f"(claim token {again.claim_token}), {after:.1f} s after the kill"
            )
        late_complete = buffer_complete(conn, claim.conversation_key, claim.claim_token)
        late_extend = buffer_extend(conn, claim.conversation_key, claim.claim_token)
        refused = asyncio.run(_late_reply(stage.url, ledger, claim))
        stale = sum(r.claim_token == claim.claim_token for r in ledger.replies(conn))
        self.report.line(
            f"{victim} comes back with token {claim.claim_token}: buffer_complete -> "
            f"{late_complete}, buffer_extend -> {late_extend}, its fenced reply -> "
            f"{'ClaimLost, rolled back' if refused else 'written'}"
        )
        return Takeover(victim, claim, again, reply, late_complete, late_extend, refused, stale)

    def _show_ledger(self, outcome: Outcome) -> None:
        self.report.heading(f"{self.number + 1}. What the fenced ledger shows")
        per_worker = ", ".join(f"{w} {n}" for w, n in outcome.by_worker.items())
        self.report.line(f"replies per worker: {per_worker or 'none'}")
        merged = f" ({outcome.merged} answered two bursts that queued up)" if outcome.merged else ""
        self.report.line(f"{outcome.replies} replies for {outcome.bursts} bursts{merged}")
        self.report.line(f"from a burst's last message to its reply: {spread(outcome.latencies)}")
        if outcome.drain is not None:
            self.report.line(
                f"the last reply came {outcome.drain:.1f} s after the last new message"
            )


def _outcome(stage: Stage, deliveries: list[Delivery]) -> Outcome:
    conn, plan, ledger = stage.conn, stage.plan, stage.ledger
    return analyse(
        plan,
        deliveries,
        stored(conn, plan),
        ledger.claims(conn),
        ledger.replies(conn),
        buffered(conn, plan),
    )


async def _late_reply(url: str, ledger: Ledger, claim: Claim) -> bool:
    """The dead worker's reply, run late through the same code as the workers' replies:
    True when the claim was refused (ClaimLost) and the reply rolled back."""
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, prepare_threshold=None
    ) as conn:
        try:
            await ledger.reply_fenced(conn, claim.burst(), claim.worker)
        except ClaimLost:
            return True
    return False
