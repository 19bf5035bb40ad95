"""The torture's faults: when they strike (`schedule`, drawn from the run's seed), how
each is injected, and how long until work flows again after it (`Injector`).

    kill       SIGKILL a buffer worker, mid-batch when one holds a fresh claim, and a
               campaign worker, holding messages when one does; new workers replace
               them. Recovered when the batch is answered by another worker and the
               messages are tried again by another.
    stop       SIGSTOP a lock contender that just got a grant, a buffer worker that just
               claimed a batch and a campaign worker holding messages, keep them stopped
               until others have taken over their grant, batches and messages (so past
               their leases), then SIGCONT: zombies, whose late writes must be refused.
    terminate  pg_terminate_backend of every client connection of the scratch database.
    restart    crash the server (pg_ctl stop -m immediate) and start it again (the
               torture's own embedded server only).

After a terminate or a restart, work has flowed again once each flow has moved on
(after a restart, counting only what happened once the server answered again):

    webhooks   a new message stored (while the webhooks still arrive)
    replies    a batch answered (while the webhooks still arrive)
    locks      a fenced write let through
    campaign   a campaign message sent (while its messages still fall due)

All times are the server's clock (`clock_timestamp()`), every wait is bounded.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, LiteralString, TypeVar

import psycopg

from .facts import Fault, reply_of
from .ledger import Claim, Reply
from .output import plural
from .plan import Plan
from .senders import Storm
from .server import Link, server_clock
from .storm_worker import LEASE
from .torture_campaign import LEASE as CAMPAIGN_LEASE
from .torture_campaign import Campaign
from .torture_crew import Crew, TortureLedger
from .torture_lockers import TTL, Hold
from .waiting import poll
from .workers import WorkerProcess

T = TypeVar("T")

KINDS = ("kill", "stop", "terminate", "restart")
ROUND = 15.0  # seconds of load per round of faults (one of each kind, in a seeded order)
FIRST = 1.5  # seconds of load before the first fault
LAST = 1.0  # seconds of load after the last fault is due
RECOVERY_TIMEOUT = 20.0  # seconds work may take to flow again after a fault
TAKEOVER_TIMEOUT = 20.0  # seconds past a stopped holder's lease for another to take over
FIND_TIMEOUT = 3.0  # seconds to look for a process holding a fresh grant or claim
FIND_TRIES = 5  # stops that landed after the holder's write, before giving up
FRESH_GRANT = timedelta(milliseconds=150)  # contenders work 200-500 ms before writing
FRESH_CLAIM = timedelta(milliseconds=50)  # buffer workers think 100-300 ms before replying
POLL = 0.02  # seconds between looks at the ledger

TERMINATE: LiteralString = (
    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    " AND backend_type = 'client backend'"
)
FLOWS: dict[str, LiteralString] = {
    "webhooks": "SELECT min(received_at) FROM pgcoord.messages"
    " WHERE provider = %(provider)s AND received_at > %(since)s",
    "replies": "SELECT min(replied_at) FROM {schema}.replies WHERE replied_at > %(since)s",
    "locks": "SELECT min(tried_at) FROM {schema}.lock_tries WHERE current AND tried_at > %(since)s",
    "campaign": "SELECT min(finished_at) FROM pgcoord.campaign_outcomes"
    " WHERE run_id = %(run_id)s AND status = 'sent' AND finished_at > %(since)s",
}


def schedule(seed: int, seconds: float, kinds: Sequence[str]) -> list[tuple[float, str]]:
    """When each fault is due, in seconds after the load begins: a round of every kind
    per ROUND seconds of load (at least one), in a seeded order, spread over the load."""
    rng = random.Random(f"faults/{seed}")
    order: list[str] = []
    for _ in range(max(1, int(seconds // ROUND))):
        kinds_of_round = list(kinds)
        rng.shuffle(kinds_of_round)
        order += kinds_of_round
    slot = max(seconds - FIRST - LAST, 0.0) / len(order)
    return [(FIRST + slot * (i + rng.uniform(0.0, 0.5)), kind) for i, kind in enumerate(order)]


@dataclass(frozen=True, slots=True)
class Suspended:
    """A zombie in the making: a process stopped while it held grants, claims or
    messages."""

    process: WorkerProcess
    kind: str  # "lock", "buffer" or "campaign"
    at: datetime  # server clock, at the stop
    grant: Hold | None = None  # a contender's grant
    claims: tuple[Claim, ...] = ()  # a buffer worker's unanswered claims
    messages: Mapping[int, int] = field(default_factory=dict)  # a campaign worker's: id -> attempt
    taken_over: bool = False


@dataclass(frozen=True, slots=True)
class Stage:
    """Where a run plays: a `link` to its scratch database (direct, never through a
    pooler), its ledger, the webhooks' plan and their senders, the contenders' keys
    (their prefix), the campaign and the processes."""

    link: Link
    ledger: TortureLedger
    plan: Plan
    storm: Storm
    keys: str
    campaign: Campaign
    crew: Crew


class Injector:
    """Injects the faults of one run on its `stage`; `restart` crashes and starts the
    server again (None: it cannot). `zombies`: the processes it stopped."""

    def __init__(self, stage: Stage, seed: int, restart: Callable[[], float] | None) -> None:
        self.stage = stage
        self.link = stage.link
        self.ledger = stage.ledger
        self.crew = stage.crew
        self.storm = stage.storm
        self.campaign = stage.campaign
        self.rng = random.Random(f"targets/{seed}")
        self.restart_server = restart
        self.zombies: list[Suspended] = []
        # the campaign workers it killed, and the messages each held: id -> attempt
        self.handovers: list[tuple[str, dict[int, int]]] = []

    def inject(self, kind: str) -> Fault:
        """Inject a fault of `kind` (KINDS) now; what it did and how work came back."""
        at = time.perf_counter() - self.storm.started
        fault: Fault = getattr(self, kind)(at)
        return fault

    # the faults -----------------------------------------------------------------------

    def kill(self, at: float) -> Fault:
        claim = poll(self._fresh_claim, FIND_TIMEOUT, POLL)
        buffer = (self.crew.named(claim.worker) if claim else None) or self._any("buffer")
        # stopped first, so that what they hold cannot change before the kill lands
        buffer.suspend()
        self._settle(buffer)
        stopped = self._suspend_sender()
        sender = stopped.process if stopped else self._any("campaign")
        for victim in (buffer, sender):
            victim.kill()
        since = self.now()
        held = self.read(partial(self.campaign.held, worker=sender.name))  # as it left them
        replacements = [self.crew.spawn("buffer"), self.crew.spawn("campaign")]
        flows: dict[str, float | None] = {}
        replies = self.read(self.ledger.replies)
        if claim is None or any(r.claim_token == claim.claim_token for r in replies):
            # between two batches, or just after its reply: the next reply will do (while
            # the webhooks still arrive)
            flows |= self.recover(since, ["replies"] if self.storm.running else [])
            what = f"{buffer.name} (between batches)"
        else:
            flows["its batch answered by another worker"] = self._answered_elsewhere([claim], since)
            what = (
                f"{buffer.name} mid-batch ({plural(len(claim.message_ids), 'message')}, "
                f"claim token {claim.claim_token}, attempt {claim.attempt})"
            )
        if held:
            self.handovers.append((sender.name, held))
            flows["its messages tried again by another"] = self._tried_again(sender, held, since)
            what += f" and {sender.name} holding {plural(len(held), 'message')}"
        else:
            flows |= self.recover(since, ["campaign"] if self._campaign_active() else [])
            what += f" and {sender.name} (holding no message)"
        self.link.call(lambda conn: self.crew.wait_ready(conn, replacements))
        names = " and ".join(p.name for p in replacements)
        return self._fault("kill", at, f"SIGKILL {what}; {names} replace them", flows)

    def stop(self, at: float) -> Fault:
        stopped = (self._suspend_holder(), self._suspend_worker(), self._suspend_sender())
        zombies = [z for z in stopped if z is not None]
        flows: dict[str, float | None] = {}
        for zombie in zombies:
            if zombie.grant is not None:
                after = self._taken_over(zombie.grant, zombie.at)
                flows[f"{zombie.grant.key} granted to another"] = after
            elif zombie.claims:
                after = self._answered_elsewhere(zombie.claims, zombie.at)
                flows["its batches answered by another worker"] = after
            else:
                after = self._tried_again(zombie.process, zombie.messages, zombie.at)
                flows["its messages tried again by another"] = after
            self.zombies.append(replace(zombie, taken_over=after is not None))
        for zombie in zombies:
            zombie.process.resume()
        what = "SIGSTOP " + (", ".join(map(_held, zombies)) or "nobody (no holder found)")
        return self._fault("stop", at, f"{what}; SIGCONT once taken over", flows)

    def terminate(self, at: float) -> Fault:
        expected = self._flows()
        row = self.link.call(lambda conn: conn.execute(TERMINATE).fetchone())
        count = int(row[0]) if row else 0
        flows = self.recover(self.now(), expected)
        what = f"pg_terminate_backend of every client connection ({count})"
        return self._fault("terminate", at, what, flows)

    def restart(self, at: float) -> Fault:
        if self.restart_server is None:
            raise RuntimeError("this server cannot be restarted")
        expected = self._flows()
        down = self.restart_server()
        # timed from the moment it answers again (the work it did before the crash is
        # not work after it), then from the crash
        after_down = self.recover(self.now(), expected)
        flows = {name: None if t is None else down + t for name, t in after_down.items()}
        what = f"crash (pg_ctl stop -m immediate) and start again, down {down:.2f} s"
        return self._fault("restart", at, what, flows)

    # recovery -------------------------------------------------------------------------

    def recover(self, since: datetime, flows: Sequence[str]) -> dict[str, float | None]:
        """Seconds from `since` until each flow moved on (None: not within
        RECOVERY_TIMEOUT); the webhooks' flow is left out once they have all arrived."""
        found: dict[str, float | None] = dict.fromkeys(flows)
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while time.monotonic() < deadline:
            for name in [n for n, after in found.items() if after is None]:
                moved = self.read(partial(self._moved, name=name, since=since))
                if moved is not None:
                    found[name] = (moved - since).total_seconds()
                elif name == "webhooks" and not self.storm.running:
                    del found[name]  # they have all arrived meanwhile
            if all(after is not None for after in found.values()):
                break
            time.sleep(POLL)
        return found

    def _flows(self) -> list[str]:
        """The flows that must move on after a fault that strikes now."""
        webhooks = ["webhooks", "replies"] if self.storm.running else []
        return [*webhooks, "locks", *(["campaign"] if self._campaign_active() else [])]

    def _campaign_active(self) -> bool:
        return self.campaign.active(self.now())

    def _moved(self, conn: psycopg.Connection[Any], name: str, since: datetime) -> datetime | None:
        params = {
            "since": since,
            "provider": self.stage.plan.provider,
            "run_id": self.campaign.run_id,
        }
        row = conn.execute(self.ledger.query(FLOWS[name]), params).fetchone()
        return row[0] if row else None

    def _answered_elsewhere(self, claims: Sequence[Claim], since: datetime) -> float | None:
        """Seconds from `since` until every one of `claims` was answered by a later claim
        of the same batch; None when one was not within TAKEOVER_TIMEOUT."""

        def answered() -> list[Reply] | None:
            replies = self.read(self.ledger.replies)
            found = [reply_of(replies, c) for c in claims]
            if all(
                r is not None and r.claim_token > c.claim_token
                for r, c in zip(found, claims, strict=True)
            ):
                return [r for r in found if r is not None]
            return None

        replies = poll(answered, LEASE.total_seconds() + TAKEOVER_TIMEOUT, POLL)
        if not replies:
            return None
        return (max(r.replied_at for r in replies) - since).total_seconds()

    def _tried_again(
        self, worker: WorkerProcess, held: Mapping[int, int], since: datetime
    ) -> float | None:
        """Seconds from `since` until every message of `held` (id -> attempt) was tried
        again by another worker, or failed for good (its lost lease was its last try);
        None when one was not within TAKEOVER_TIMEOUT past the lease (orphans are
        claimed before any backlog)."""

        def again() -> list[datetime] | None:
            tries = self.read(self.ledger.tries)
            final = {
                m.message_id: m.finished_at
                for m in self.read(self.campaign.queued)
                if m.message_id in held and m.status == "failed"
            }
            found = []
            for message_id, attempt in held.items():
                started = [
                    t.started_at
                    for t in tries
                    if t.message_id == message_id
                    and t.attempt > attempt
                    and t.worker != worker.name
                ]
                when = min(started, default=None) or final.get(message_id)
                if when is None:
                    return None
                found.append(when)
            return found

        first = CAMPAIGN_LEASE.total_seconds() + TAKEOVER_TIMEOUT
        times = poll(again, first, POLL)
        if times is None:
            return None
        return (max(times, default=since) - since).total_seconds()

    def _taken_over(self, grant: Hold, since: datetime) -> float | None:
        """Seconds from `since` until a newer grant of the key wrote through the fence."""

        def newer() -> datetime | None:
            tries = self.read(self.ledger.lock_tries)
            return next(
                (
                    t.tried_at
                    for t in tries
                    if t.key == grant.key and t.token > grant.token and t.current
                ),
                None,
            )

        taken = poll(newer, TTL.total_seconds() + TAKEOVER_TIMEOUT, POLL)
        return None if taken is None else (taken - since).total_seconds()

    # finding holders ------------------------------------------------------------------

    def _fresh_claim(self) -> Claim | None:
        live = {p.name for p in self.crew.live("buffer")}
        claims = self.read(lambda conn: self.ledger.holding(conn, FRESH_CLAIM))
        return next((c for c in claims if c.worker in live), None)

    def _suspend_holder(self) -> Suspended | None:
        """Stop a contender that just got a grant, before its write."""
        for _ in range(FIND_TRIES):
            hold = poll(lambda: self._fresh_grant(), FIND_TIMEOUT, POLL)
            process = self.crew.named(hold.owner) if hold is not None else None
            if hold is None or process is None:
                return None
            process.suspend()
            since = self.now()
            if not self._settle(process):
                process.resume()  # a statement of its own still runs: try another
                continue
            tries = self.read(self.ledger.lock_tries)
            if not any((t.key, t.token) == (hold.key, hold.token) for t in tries):
                return Suspended(process, "lock", since, grant=hold)
            process.resume()  # it wrote just before the stop: try another
        return None

    def _fresh_grant(self) -> Hold | None:
        live = {p.name for p in self.crew.live("locker")}
        holds = self.read(lambda conn: self.ledger.fresh_holds(conn, self.stage.keys, FRESH_GRANT))
        return next((h for h in holds if h.owner in live), None)

    def _suspend_worker(self) -> Suspended | None:
        """Stop a buffer worker that just claimed a batch, before its reply."""
        for _ in range(FIND_TRIES):
            claim = poll(lambda: self._fresh_claim(), FIND_TIMEOUT, POLL)
            process = self.crew.named(claim.worker) if claim is not None else None
            if claim is None or process is None:
                return None
            process.suspend()
            since = self.now()
            if not self._settle(process):
                process.resume()  # a statement of its own still runs: try another
                continue
            # every batch it holds unanswered now: logged within the lease, still its own
            held = tuple(
                c
                for c in self.read(lambda conn: self.ledger.holding(conn, LEASE))
                if c.worker == process.name
            )
            if held:
                return Suspended(process, "buffer", since, claims=held)
            process.resume()  # it answered just before the stop: try another
        return None

    def _campaign_holder(self) -> tuple[WorkerProcess, dict[int, int]] | None:
        """A live campaign worker holding messages, and those it holds."""
        for process in self.crew.live("campaign"):
            held = self.read(partial(self.campaign.held, worker=process.name))
            if held:
                return process, held
        return None

    def _suspend_sender(self) -> Suspended | None:
        """Stop a campaign worker that holds messages."""
        for _ in range(FIND_TRIES):
            found = poll(self._campaign_holder, FIND_TIMEOUT, POLL)
            if found is None:
                return None
            process = found[0]
            process.suspend()
            since = self.now()
            if not self._settle(process):
                process.resume()  # a statement of its own still runs: try another
                continue
            held = self.read(partial(self.campaign.held, worker=process.name))
            if held:
                return Suspended(process, "campaign", since, messages=held)
            process.resume()  # it settled them just before the stop: try another
        return None

    def _settle(self, process: WorkerProcess) -> bool:
        """Whether the stopped `process`'s statements were done within FIND_TIMEOUT."""
        return self.read(partial(process.settled, timeout=FIND_TIMEOUT))

    def _any(self, role: str) -> WorkerProcess:
        return self.rng.choice(self.crew.live(role))

    # the database ---------------------------------------------------------------------

    def read(self, call: Callable[[psycopg.Connection[Any]], T]) -> T:
        return self.link.call(call)

    def now(self) -> datetime:
        return self.read(server_clock)

    def _fault(self, kind: str, at: float, what: str, flows: dict[str, float | None]) -> Fault:
        """The fault, recovered when every flow moved on: after the slowest."""
        done = [after for after in flows.values() if after is not None]
        recovered = bool(flows) and len(done) == len(flows)
        return Fault(kind, at, what, max(done) if recovered else None, flows)


def _held(zombie: Suspended) -> str:
    if zombie.grant is not None:
        return f"{zombie.process.name} holding {zombie.grant.key} (token {zombie.grant.token})"
    if zombie.claims:
        tokens = ", ".join(str(c.claim_token) for c in zombie.claims)
        return (
            f"{zombie.process.name} holding {len(zombie.claims)} batch(es) (claim tokens {tokens})"
        )
    return f"{zombie.process.name} holding {plural(len(zombie.messages), 'campaign message')}"
