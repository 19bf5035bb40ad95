"""The campaign scene: a WhatsApp campaign of a few thousand messages sent through a
local fake provider (`provider`: a model and a gateway on 127.0.0.1, slow, failing now
and then, answering 429 with Retry-After, and enforcing a rate limit of its own) by
worker processes (`campaign_worker`), each a CampaignWorker running the campaign
pipeline (`pipeline`), every gateway request paced by one budget shared by the fleet
(`rate_acquire`). One more worker is SIGKILLed while it holds messages: after their
lease they come again to the others as attempt 2, and its late completions are refused
by their tokens. Then the checks: every message sent once or failed after its retries
with its error kept, none lost or stuck, each part taken once by the gateway, never more
requests in a second than the gateway allows; and the throughput.

The campaign runs in a scratch database of its own (`scratch`), as the storm does."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, LiteralString

import psycopg
from psycopg.rows import class_row

from pgcoord import CampaignProgress
from pgcoord.campaigns import (
    campaign_complete,
    campaign_create,
    campaign_enqueue_once,
    campaign_extend,
    campaign_progress,
)

from . import campaign_worker, checks
from .campaign_worker import CONCURRENCY, LEASE, TIMEOUT
from .facts import LateCall, QueuedMessage, handover, next_tries
from .ledger import Try, TryLog
from .output import plural, spread
from .parts import message_of
from .pipeline import GENERATE_TIMEOUT, SEND_TIMEOUT
from .provider import FakeProvider, Ledger, Options
from .scratch import Scene, Scratch, open_scratch
from .server import server_clock
from .waiting import STEP_TIMEOUT, SceneError, poll
from .workers import WorkerProcess, stop_all

SEED = 11  # the same campaign and the same provider every run
ENQUEUE_KEY = "recipients.csv"  # the producer's key for its one enqueue call
MAX_RETRIES = 3
BACKOFF = (timedelta(seconds=1), timedelta(seconds=2))  # the last repeats
# the provider: every call 20-200 ms, 4% answered 503, 1% of the model's calls 429 with
# Retry-After: 1 (a message snoozed), 0.4% of the model's texts too short to send (failed
# on every try), a gateway that serves at most GATEWAY_LIMIT requests in each second of
# its clock, and a 429 storm: for STORM[1] s from its STORM[0]-th request, the gateway
# answers every request 429 with Retry-After: 1 (the fleet's budget paused)
GATEWAY_LIMIT = 300
# one recipient in UNKNOWN_EVERY (the first, and every UNKNOWN_EVERY-th after it) has a
# number the gateway does not know: the handler's FailForGood fails it at the first 404
UNKNOWN = "+999"
UNKNOWN_EVERY = 100
STORM = (20, 1.5)
PROVIDER = Options(
    seed=SEED,
    latency=(0.02, 0.2),
    errors=0.04,
    throttled=0.01,
    gateway_throttled=0.0,
    retry_after=1,
    gateway_limit=GATEWAY_LIMIT,
    short=0.004,
    unknown=UNKNOWN,
    storm=STORM,
)
# The fleet's budget for gateway requests: a token bucket of BUDGET_RATE a second with
# bursts of BUDGET_BURST. The gateway counts fixed seconds, in which a bucket grants up
# to burst + rate; the margin left under the limit absorbs a request that arrives later
# than its grant (a busy machine), so no second of the gateway's sees more than the limit.
BUDGET_RATE = 180.0
BUDGET_BURST = 10
BUDGET_KEY = "whatsapp-gateway"
SEED_RATE = 5  # messages a minute: the edge function that sent one message at a time
KILL_TIMEOUT = 30.0  # seconds for the victim to be caught sending
PROGRESS_POLL = 0.2  # seconds between looks at the run's progress

QUEUED: LiteralString = (
    "SELECT message_id, recipient, status, attempt, last_error AS error, metrics, finished_at"
    " FROM pgcoord.campaign_message_status WHERE run_id = %(run_id)s ORDER BY message_id"
)
HELD: LiteralString = (
    "SELECT message_id, attempt FROM pgcoord.campaign_message_status"
    " WHERE run_id = %(run_id)s AND status = 'processing' AND claimed_by = %(worker)s"
)
COMMAND = f"python -m {campaign_worker.__name__}"

NAMES = ("Ana", "Zoë", "Jörg", "Mei", "Tomás", "Aïcha", "Priya", "Olu", "Saanvi", "Lars")
OFFERS = ("spring sale", "new menu", "loyalty points", "tasting on Friday", "free delivery")


@dataclass(frozen=True, slots=True)
class Run:
    """The campaign as it runs: its scratch database, provider, run id and tries log."""

    scratch: Scratch
    provider: FakeProvider
    run_id: int
    log: TryLog

    @property
    def conn(self) -> psycopg.Connection[Any]:
        return self.scratch.conn


@dataclass(frozen=True, slots=True)
class Kill:
    """The victim's state at its SIGKILL: the messages it held (id -> attempt), the
    tokens of those it was sending (id -> claim token), and the server's clock."""

    held: dict[int, int]
    sending: dict[int, int]
    at: datetime


class CampaignScene(Scene):
    """The campaign scene, in a scratch database next to the given one."""

    def play(self, messages: int, workers: int) -> None:
        self.report.heading(
            f"{self.number}. A campaign: {messages:,} WhatsApp messages through a slow, "
            f"failing, rate-limited provider, {workers} worker processes, one more killed "
            "mid-batch"
        )
        name = f"pgcoord_demo_{self.run}_campaign"
        log = TryLog(name)
        with ExitStack() as stack:
            scratch = open_scratch(stack, self.url, name, log, self.report, "the campaign")
            if scratch is None:
                return
            try:
                provider = stack.enter_context(FakeProvider(PROVIDER))
            except RuntimeError as exc:
                raise SceneError(str(exc)) from exc
            self.report.line(
                f"fake provider on {provider.url}: model and gateway answer in "
                f"{PROVIDER.latency[0] * 1000:.0f}-{PROVIDER.latency[1] * 1000:.0f} ms, "
                f"{PROVIDER.failures()}, {PROVIDER.short:.1%} of the texts too short to "
                f"send; the gateway serves at most {GATEWAY_LIMIT} requests a second"
            )
            run_id = campaign_create(scratch.conn, f"demo {self.run}", MAX_RETRIES, BACKOFF)
            self._send(Run(scratch, provider, run_id, log), stack, messages, workers)

    def _send(self, run: Run, stack: ExitStack, messages: int, workers: int) -> None:
        crew, victim = self._start_workers(run, stack, workers)
        enqueued, started = self._enqueue(run, messages)
        kill = self._kill_mid_batch(run, victim)
        run.log.release(run.conn, [w.name for w in crew])
        self._settle(run, messages, started)
        tries = run.log.tries(run.conn)
        self._delivered_again(victim.name, kill, tries)
        late = self._late(run, victim.name, kill)
        codes = stop_all(crew)
        queued = queued_messages(run.conn, run.run_id)
        ledger = run.provider.ledger()
        self._show(tries, queued, ledger, started)
        deaf = deaf_spans(run.provider, [*crew, victim])
        for check in checks.campaign_checks(queued, enqueued, MAX_RETRIES, ledger, deaf):
            self.report.add(check)
        taken_over = handover(victim.name, kill.held, tries, late, queued)
        self.report.add(checks.messages_delivered_again(taken_over, MAX_RETRIES))
        self.report.add(checks.late_completions_refused(taken_over))
        self.report.add(checks.workers_stopped_cleanly(crew, codes))
        self._throughput(queued, started)

    def _start_workers(
        self, run: Run, stack: ExitStack, workers: int
    ) -> tuple[list[WorkerProcess], WorkerProcess]:
        """`workers` gated worker processes and one more, to be killed, that starts
        alone, so it surely holds messages, and hangs once it has sent one, so it never
        completes them; wait until all are ready. Every one is stopped on exit."""
        args = worker_args(run.log.name, run.run_id, run.provider.url)
        program, url, logs = campaign_worker.__name__, run.scratch.url, run.scratch.logs
        crew = [
            WorkerProcess(url, f"worker-{i}", logs, program, [*args, "--gated"])
            for i in range(1, workers + 1)
        ]
        victim = WorkerProcess(url, f"worker-{workers + 1}", logs, program, [*args, "--hang"])
        self.muster(stack, run.conn, run.log, [*crew, victim], COMMAND)
        self.report.line(
            f"each a CampaignWorker: {CONCURRENCY} messages at once, lease "
            f"{LEASE.total_seconds():g} s, timeout {TIMEOUT.total_seconds():g} s (model "
            f"{GENERATE_TIMEOUT:g} s, {SEND_TIMEOUT:g} s a part); before each gateway request, "
            f"rate_acquire({BUDGET_KEY!r}, {BUDGET_RATE:g}/s, burst {BUDGET_BURST}), one budget "
            "for the fleet, paused for the Retry-After of a gateway 429 (rate_pause)"
        )
        return crew, victim

    def _enqueue(self, run: Run, messages: int) -> tuple[int, datetime]:
        """Enqueue the campaign in one call under a key, then make the call again as a
        producer whose answer was lost would; how many, and when (server clock)."""
        started = server_clock(run.conn)
        items = campaign_items(messages, SEED)
        first = campaign_enqueue_once(run.conn, run.run_id, ENQUEUE_KEY, items)
        seconds = (server_clock(run.conn) - started).total_seconds()
        again = campaign_enqueue_once(run.conn, run.run_id, ENQUEUE_KEY, items)
        backoff = ", ".join(f"{b.total_seconds():g} s" for b in BACKOFF)
        self.report.line(
            f"run {run.run_id}: {plural(first.enqueued, 'message')} enqueued in one call "
            f"(key {ENQUEUE_KEY!r}) in {seconds:.2f} s; "
            f"up to {MAX_RETRIES} retries each, after {backoff} (the last repeats)"
        )
        self.report.add(checks.enqueued_once(ENQUEUE_KEY, first, again))
        return first.enqueued, started

    def _kill_mid_batch(self, run: Run, victim: WorkerProcess) -> Kill:
        """Wait until the victim, alone at work, holds messages, one of them with a part
        the gateway already took (it never completes one), and SIGKILL it then."""

        def caught() -> dict[int, int] | None:
            if not victim.alive():
                raise SceneError(f"{victim.name} exited early:\n{victim.log_tail()}")
            held = held_by(run.conn, run.run_id, victim.name)
            return held if held.keys() & _taken(run.provider.ledger()).keys() else None

        poll(caught, KILL_TIMEOUT)
        victim.kill()
        at = server_clock(run.conn)
        if not victim.settled(run.conn, STEP_TIMEOUT):
            raise SceneError(f"{victim.name}'s connections still ran a statement after its kill")
        held = held_by(run.conn, run.run_id, victim.name)  # as the dead worker left them
        sending = {
            t.message_id: t.claim_token
            for t in run.log.tries(run.conn)
            if t.worker == victim.name and held.get(t.message_id) == t.attempt
        }
        taken = _taken(run.provider.ledger())
        parts = sum(taken.get(m, 0) for m in held)
        self.report.line(
            f"{victim.name} works alone, and hangs once it has sent a message, before it "
            f"records the send; it holds {plural(len(held), 'message')} (claimed_by "
            f"{victim.name} in campaign_message_status), {len(sending)} of them in its "
            f"handlers, {plural(parts, 'part')} already taken by the gateway, and is "
            "SIGKILLed mid-batch"
        )
        return Kill(held, sending, at)

    def _settle(self, run: Run, messages: int, started: datetime) -> None:
        """Wait until no message of the run is pending or processing."""
        timeout = _settle_timeout(messages)
        progress = poll(lambda: _settled(run), timeout, PROGRESS_POLL)
        if progress is None:
            self.report.line(f"the run did NOT settle within {timeout:g} s")
            return
        seconds = (server_clock(run.conn) - started).total_seconds()
        self.report.line(
            f"the run settled {seconds:.1f} s after the enqueue (campaign_progress: "
            f"{progress.sent:,} sent, {progress.failed:,} failed, none pending or processing)"
        )

    def _delivered_again(self, victim: str, kill: Kill, tries: list[Try]) -> None:
        again = next_tries(kill.held, tries).values()
        if not again:
            return
        first = min(t.started_at for t in again)
        self.report.line(
            f"{victim}'s messages were due again when its lease ran out, ahead of the "
            f"backlog: {', '.join(sorted({t.worker for t in again}))} got them as attempt "
            f"{'/'.join(str(a) for a in sorted({t.attempt for t in again}))}, the first "
            f"{(first - kill.at).total_seconds():.1f} s after the kill"
        )

    def _late(self, run: Run, victim: str, kill: Kill) -> list[LateCall]:
        """The dead worker's late calls with the tokens it held, once its messages were
        delivered again."""
        late = [
            LateCall(
                message_id,
                token,
                campaign_complete(run.conn, message_id, token, {"worker": victim}),
                campaign_extend(run.conn, message_id, token, LEASE),
            )
            for message_id, token in sorted(kill.sending.items())
        ]
        completes = Counter(str(c.completed) for c in late)
        extends = Counter(str(c.extended) for c in late)
        self.report.line(
            f"{victim} comes back with its {plural(len(late), 'claim token')}: "
            f"campaign_complete -> {_tally(completes)}, campaign_extend -> {_tally(extends)}"
        )
        return late

    def _show(
        self,
        tries: list[Try],
        queued: list[QueuedMessage],
        ledger: Ledger,
        started: datetime,
    ) -> None:
        """What the queue, the tries log and the provider show."""
        self.report.heading(f"{self.number + 1}. What the queue and the gateway show")
        by_attempt = Counter(t.attempt for t in tries)
        self.report.line(
            "tries started: "
            + ", ".join(f"{n:,} as attempt {a}" for a, n in sorted(by_attempt.items()))
        )
        sent = [m for m in queued if m.status == "sent"]
        by_worker = Counter(str((m.metrics or {}).get("worker")) for m in sent)
        self.report.line(
            "sent per worker: " + ", ".join(f"{w} {n:,}" for w, n in sorted(by_worker.items()))
        )
        unknown = checks.refused(ledger)
        failed = [m for m in queued if m.status == "failed" and m.message_id not in unknown]
        if failed:
            kinds = Counter((m.error or "").partition(":")[0] for m in failed)
            self.report.line(
                f"{plural(len(failed), 'message')} failed after {MAX_RETRIES + 1} tries "
                f"({', '.join(f'{k} {n}' for k, n in kinds.most_common())}), each with its "
                f"error kept, e.g. message {failed[0].message_id}: {failed[0].error}"
            )
        refused = [m for m in queued if m.message_id in unknown]
        if refused:
            self.report.line(
                f"{plural(len(refused), 'message')} failed for good at the gateway's 404 "
                "(FailForGood: no retry, nor the generation each would cost, spent on a "
                f"number that does not exist), e.g. message {refused[0].message_id}: "
                f"{refused[0].error}"
            )
        answers = ledger.answers
        requests = sum(n for what, n in answers.items() if what.startswith("gateway"))
        replayed = sum(a.replays for a in ledger.accepted)
        self.report.line(
            f"gateway: {requests:,} requests, {len(ledger.accepted):,} parts taken, "
            f"{answers.get('gateway 503', 0)} answered 503, {answers.get('gateway 429', 0)} "
            f"429, {answers.get('gateway 404', 0)} 404; {plural(replayed, 'part')} sent "
            "again answered with the first acceptance"
        )
        self.report.line(
            f"model: {ledger.generations:,} texts, {ledger.tokens:,} tokens; "
            f"{plural(answers.get('llm 503', 0), 'call')} answered 503, "
            f"{answers.get('llm 429', 0)} 429 "
            "(a 429 snoozes the message without spending a try)"
        )
        self.report.line(
            "from enqueue to sent: "
            + spread([(m.finished_at - started).total_seconds() for m in sent if m.finished_at])
        )

    def _throughput(self, queued: list[QueuedMessage], started: datetime) -> None:
        sent = [m.finished_at for m in queued if m.status == "sent" and m.finished_at]
        if not sent:
            return
        seconds = (max(sent) - started).total_seconds()
        per_minute = len(sent) / seconds * 60
        self.report.line(
            f"throughput: {plural(len(sent), 'message')} sent in {seconds:.1f} s: "
            f"{per_minute:,.0f} messages/min, {per_minute / SEED_RATE:,.0f}x the old "
            f"sender's {SEED_RATE}/min"
        )


def worker_args(schema: str, run_id: int, provider: str) -> list[str]:
    """The options of a worker process of the run `run_id` (besides its name), with its
    tries log in `schema` and the fake provider at `provider`, under the fleet's budget."""
    return [
        f"--schema={schema}",
        f"--run-id={run_id}",
        f"--provider={provider}",
        f"--budget={BUDGET_KEY}",
        f"--per-second={BUDGET_RATE:g}",
        f"--burst={BUDGET_BURST}",
    ]


def deaf_spans(
    provider: FakeProvider, workers: Sequence[WorkerProcess]
) -> dict[str, list[tuple[float, float]]]:
    """When each worker could not act on the provider's answers (stopped or killed), by
    its name, on the provider's clock: the User-Agent of its requests is its name."""
    return {
        w.name: [(provider.on_clock(a), provider.on_clock(b)) for a, b in w.deaf] for w in workers
    }


def campaign_items(
    messages: int, seed: int, first: datetime | None = None, every: timedelta | None = None
) -> list[dict[str, Any]]:
    """`messages` campaign messages to enqueue, their payloads drawn from `seed`, one
    recipient in UNKNOWN_EVERY unknown to the gateway; with `first` and `every`,
    scheduled at first, first + every, ... (else due at once)."""
    rng = random.Random(seed)
    return [
        {
            "recipient": f"{UNKNOWN if i % UNKNOWN_EVERY == 1 else '+4915'}{i:08d}",
            "payload": {"name": rng.choice(NAMES), "offer": rng.choice(OFFERS)},
            **({} if first is None or every is None else {"scheduled_at": first + (i - 1) * every}),
        }
        for i in range(1, messages + 1)
    ]


def _settle_timeout(messages: int) -> float:
    """Seconds the run may take: far more than it needs at the budget's rate."""
    return 60.0 + messages / 20


def _settled(run: Run) -> CampaignProgress | None:
    """The run's progress once none of its messages is pending or processing."""
    [progress] = campaign_progress(run.conn, run.run_id)
    return progress if progress.pending == progress.processing == 0 else None


def held_by(conn: psycopg.Connection[Any], run_id: int, worker: str) -> dict[int, int]:
    """The messages of the run `worker` holds: id -> the attempt of its claim."""
    rows = conn.execute(HELD, {"run_id": run_id, "worker": worker})
    return {message_id: attempt for message_id, attempt in rows}


def _taken(ledger: Ledger) -> Counter[int]:
    """Parts taken by the gateway, per message."""
    return Counter(m for a in ledger.accepted if (m := message_of(a.key)) is not None)


def queued_messages(conn: psycopg.Connection[Any], run_id: int) -> list[QueuedMessage]:
    """The run's messages as the queue holds them."""
    with conn.cursor(row_factory=class_row(QueuedMessage)) as cur:
        return cur.execute(QUEUED, {"run_id": run_id}).fetchall()


def _tally(counts: Counter[str]) -> str:
    return ", ".join(f"{value} ({n})" for value, n in counts.most_common()) or "-"
