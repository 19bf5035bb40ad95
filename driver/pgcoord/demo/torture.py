"""`pgcoord torture` (`python -m pgcoord.demo.torture`): every primitive at once, as
separate processes, against a server that is made to fail; then the checks.

For `--seconds` (default 50), webhooks arrive (`senders`, with the provider's repeated
and concurrent deliveries of the same message ids, delivered again when a fault cuts
their answer), buffer workers answer the bursts with fenced replies (`storm_worker`),
lock contenders take a few keys with a short lease and write their fencing token fenced
by `lock_is_current` (`torture_lockers`), and campaign workers send a campaign whose
messages fall due all along through a fake model and WhatsApp gateway
(`torture_campaign`), enqueued while the faults strike in keyed chunks, some of whose
answers a proxy loses after the commit (`torture_producer`). Meanwhile the faults
strike on a seeded schedule (`torture_faults`): SIGKILL of workers mid-batch, SIGSTOP
of a lock holder and of workers past their leases then SIGCONT (zombies),
pg_terminate_backend of every client connection, and a crash and restart of the
server; after each, the time until work flowed again is measured. Then the webhooks
stop, the work drains, and the ledgers, the database and the gateway are checked: no
duplicate effect, nothing lost, nothing stuck, every zombie's late write refused. Exit
status 0 when every check held, 1 when one did not (or the run broke), 2 on bad usage.

The server is --database-url, else DATABASE_URL, else an embedded PostgreSQL of the
torture's own, the only one it crashes and restarts. Everything runs in a scratch
database (`pgcoord_torture_<run>`) dropped at the end. The same --seed plays the same
webhooks, the same faults in the same order, and the same choices of the processes;
how the processes interleave is up to the machine.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from datetime import timedelta
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from pgcoord import PgcoordError
from pgcoord.cli import database, options
from pgcoord.cli.errors import CommandError, UsageError, one_line
from pgcoord.cli.main import guarded
from pgcoord.cli.options import Parser
from pgcoord.config import describe

from . import campaign_worker, checks, storm_worker, torture_lockers
from .campaign_scene import MAX_RETRIES, deaf_spans
from .facts import (
    Fault,
    LockOutcome,
    Outcome,
    QueuedMessage,
    Zombie,
    analyse,
    analyse_locks,
    buffer_zombie,
    campaign_zombie,
    handover,
    lock_zombie,
)
from .ledger import Reply, Try, buffered, stored
from .output import Report, plural, spread, summary
from .plan import Plan, make_plan
from .provider import Ledger as ProviderLedger
from .scratch import open_scratch
from .senders import Delivery, Storm
from .server import CannotRun, Link, connect, server, server_version
from .torture_campaign import PER_SECOND, Campaign
from .torture_crew import Crew, TortureLedger
from .torture_faults import KINDS, RECOVERY_TIMEOUT, Injector, Stage, Suspended, schedule
from .torture_lockers import LockTry, LockWrite
from .torture_producer import LEAD, PATIENCE, Producer
from .torture_server import RestartableServer
from .waiting import SceneError, poll, wait_until

SECONDS = timedelta(seconds=50)
SECONDS_RANGE = options.Seconds(10, options.HOUR)
SEED_RANGE = options.Integer(0, 2**31 - 1)
CONVERSATIONS = 3  # per second of load
LANES = 4  # sending connections, each with a twin for the double deliveries
PROCESSES = {"buffer": 3, "locker": 3, "campaign": 2}
KEYS = torture_lockers.KEYS
REDELIVER_FOR = 30.0  # seconds a webhook is delivered again while its connection fails
DRAIN_TIMEOUT = 30.0  # seconds for the last bursts after the webhooks (leases included)
DEADLINE = 150.0  # seconds the whole run may take beyond --seconds, then it is cut short
SCHEMA = "torture"
CUT_SHORT = (signal.SIGTERM, signal.SIGUSR1)  # signals that stop the run, cleaning up
ROLES = {
    "buffer": f"buffer workers (python -m {storm_worker.__name__})",
    "locker": f"lock contenders on {KEYS} keys (python -m {torture_lockers.__name__})",
    "campaign": f"campaign workers (python -m {campaign_worker.__name__})",
}


class Deadline(Exception):
    """The run took longer than its hard deadline and was cut short."""


def main(argv: list[str] | None = None) -> int:
    """Run the torture; the exit status is that of every pgcoord command, 1 also when a
    check failed."""
    return guarded("pgcoord torture: error: ", lambda: _play(build_parser().parse_args(argv)))


def _play(args: argparse.Namespace) -> int:
    url = database.given_url(args)
    if args.through_pooler is not None:
        database.check(args.through_pooler, "--through-pooler")
        if url is None:
            raise UsageError(
                "--through-pooler needs --database-url (or DATABASE_URL): the server "
                "behind the pooler"
            )
    seconds = args.seconds.total_seconds()
    seed = args.seed if args.seed is not None else random.randrange(1, 1_000_000)
    report = Report(sys.stdout, ascii_only=args.ascii)
    print(
        f"pgcoord torture: seed {seed}, {seconds:g} s of webhooks, lock contention, a "
        f"campaign and faults (again: pgcoord torture --seed {seed} --seconds {seconds:g})",
        flush=True,
    )
    embedded = RestartableServer()
    start = time.perf_counter()
    result: dict[str, Any] = {"seed": seed, "seconds": seconds}
    try:
        with _bounded(seconds + DEADLINE), server(url, embedded.running) as (target, where):
            start = time.perf_counter()
            restart = None if url or args.no_restart else embedded.restart
            torture = Torture(target, where, report, seed, seconds, restart, args)
            try:
                torture.run()
            finally:
                result.update(torture.summary())
    except (CannotRun, Deadline, SceneError, psycopg.Error, PgcoordError) as exc:
        cause = (
            database.connection_cause(exc)
            if isinstance(exc, psycopg.OperationalError)
            else one_line(exc)
        )
        result.update(ok=False, error=cause)
        _write(args.json, result, report)
        raise CommandError(f"the run broke: {cause}") from exc
    took = time.perf_counter() - start
    ok = bool(report.checks) and not report.failed
    result.update(ok=ok, took=round(took, 1))
    _write(args.json, result, report)
    print(f"\n{summary(report.checks, took)}", flush=True)
    return 0 if ok else 1


def _write(path: str | None, result: dict[str, Any], report: Report) -> None:
    """The report as JSON, for --json."""
    if path:
        result["checks"] = [asdict(c) for c in report.checks]
        Path(path).write_text(json.dumps(result, indent=2, default=str) + "\n")


class Torture:
    """One run on the server of `url` (see the module documentation); its checks land in
    `report`. `restart`: crashes and starts the server again (None: it is not done)."""

    def __init__(
        self,
        url: str,
        where: str,
        report: Report,
        seed: int,
        seconds: float,
        restart: Callable[[], float] | None,
        args: argparse.Namespace,
    ) -> None:
        self.url = url
        self.where = where
        self.report = report
        self.seed = seed
        self.seconds = seconds
        self.restart = restart
        self.args = args
        self.run_id = uuid.uuid4().hex[:8]
        self.kinds = [k for k in KINDS if k != "restart" or restart is not None]
        self.faults: list[Fault] = []

    def run(self) -> None:
        with connect(self.url) as admin:
            self.report.line(
                f"server: PostgreSQL {server_version(admin)}, {self.where}; "
                + ("it is crashed and restarted" if self.restart else self._why_no_restart())
            )
        with ExitStack() as stack:
            ledger = TortureLedger(SCHEMA)
            name = f"pgcoord_torture_{self.run_id}"
            scratch = open_scratch(stack, self.url, name, ledger, self.report, "the torture")
            if scratch is None:
                return
            clients = self._clients(scratch.url, name)
            link = Link(scratch.url, patience=RECOVERY_TIMEOUT)
            stack.callback(link.close)
            plan = make_plan(
                self.run_id, int(CONVERSATIONS * self.seconds), seed=self.seed, span=self.seconds
            )
            keys = f"lock:{self.run_id}:"
            campaign = self._campaign(stack, scratch.conn, name)
            crew = Crew.of(
                clients,
                ledger,
                scratch.logs,
                plan=plan,
                keys=keys,
                seed=self.seed,
                campaign=campaign,
            )
            stack.callback(crew.stop)
            self._start(link, crew)
            storm = Storm(clients, plan, lanes=LANES, redeliver_for=REDELIVER_FOR)
            stack.callback(storm.stop)
            self._describe_storm(plan, storm)
            stage = Stage(link, ledger, plan, storm, keys, campaign, crew)
            injector = Injector(stage, self.seed, self.restart)
            producer = link.call(
                lambda conn: campaign.produce(conn, clients, self.seconds, self.seed)
            )
            stack.callback(producer.stop)
            deliveries = self._strike(stage, injector, producer)
            drained = link.call(
                lambda conn: wait_until(
                    lambda: ledger.drained(conn, plan) and campaign.settled(conn), DRAIN_TIMEOUT
                )
            )
            if not drained:
                self.report.line(f"NOT all done {DRAIN_TIMEOUT:g} s after the last webhook")
            codes = crew.stop()
            self._judge(stage, deliveries, injector, codes)

    # the run --------------------------------------------------------------------------

    def _why_no_restart(self) -> str:
        if self.args.no_restart:
            return "not restarted (--no-restart)"
        return "a server given by URL is not restarted: no restart fault"

    def _clients(self, direct: str, name: str) -> str:
        """Where the processes, webhooks and producer connect: the scratch database,
        through the pooler when there is one (the torture itself always connects
        directly)."""
        pooler = self.args.through_pooler
        if not pooler:
            return direct
        pooled = make_conninfo(pooler, dbname=name)
        try:
            with connect(pooled) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            raise CannotRun(f"the pooler does not reach the scratch database: {exc}") from exc
        self.report.line(
            f"the processes, webhooks and producer connect through the pooler at {describe(pooled)}"
        )
        return pooled

    def _start(self, link: Link, crew: Crew) -> None:
        start = time.perf_counter()
        for role, count in PROCESSES.items():
            for _ in range(count):
                crew.spawn(role)
        link.call(crew.wait_ready)
        self.report.line(
            f"{len(crew.processes)} processes ready in {time.perf_counter() - start:.1f} s: "
            + ", ".join(f"{count} {ROLES[role]}" for role, count in PROCESSES.items())
        )

    def _campaign(self, stack: ExitStack, conn: psycopg.Connection[Any], name: str) -> Campaign:
        """The fake provider and the campaign run (its messages are enqueued when the
        load begins)."""
        try:
            campaign = Campaign.create(stack, conn, name, self.seed)
        except RuntimeError as exc:  # the provider did not start
            raise SceneError(str(exc)) from exc
        options = campaign.provider.options
        self.report.line(
            f"campaign: run {campaign.run_id}, {PER_SECOND} messages falling due a second, "
            f"enqueued {LEAD:g} s ahead a second's worth at a time under a key while the "
            "faults strike (a proxy loses some answers after the commit), through a fake "
            f"provider on {campaign.provider.url} ({options.failures()}), up to "
            f"{MAX_RETRIES} retries each"
        )
        return campaign

    def _describe_storm(self, plan: Plan, storm: Storm) -> None:
        self.report.line(
            f"webhooks: {plan.conversations} conversations over {self.seconds:g} s, "
            f"{plan.messages} messages in {len(plan.bursts)} bursts, "
            f"{plan.retries('late') + plan.retries('double')} provider retries "
            f"({plan.retries('double')} at the same instant), {storm.lanes} sending "
            "connections, each delivery made again while a fault cuts its answer"
        )

    def _strike(self, stage: Stage, injector: Injector, producer: Producer) -> list[Delivery]:
        """Send the webhooks, enqueue and send the campaign, and inject the faults on
        their schedule; the deliveries."""
        due = schedule(self.seed, self.seconds, self.kinds)
        self.report.heading(
            f"1. {plural(len(due), 'fault')} in a seeded order; after each, the time until "
            "work flowed again"
        )
        storm = stage.storm
        producer.start()
        storm.start()
        if poll(lambda: storm.started or None, RECOVERY_TIMEOUT) is None:
            raise SceneError("the webhooks did not start")
        for at, kind in due:
            pause = storm.started + at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            fault = injector.inject(kind)
            self.faults.append(fault)
            self.report.line(_fault_line(fault))
        if not producer.join(self.seconds + PATIENCE):
            raise SceneError(
                "the campaign's producer did not enqueue every chunk: "
                + (one_line(producer.errors[0]) if producer.errors else "it did not finish")
            )
        return storm.join(self.seconds + REDELIVER_FOR + RECOVERY_TIMEOUT)

    # the end --------------------------------------------------------------------------

    def _judge(
        self, stage: Stage, deliveries: list[Delivery], injector: Injector, codes: dict[str, int]
    ) -> None:
        """Read the ledger, the database and the provider, show what they hold, and check
        it."""
        link, ledger, plan, campaign = stage.link, stage.ledger, stage.plan, stage.campaign
        replies = link.call(ledger.replies)
        outcome = analyse(
            plan,
            deliveries,
            link.call(lambda conn: stored(conn, plan)),
            link.call(ledger.claims),
            replies,
            link.call(lambda conn: buffered(conn, plan)),
            stage.storm.lost_answers,
        )
        lock_tries = link.call(ledger.lock_tries)
        writes = link.call(ledger.lock_writes)
        locks = analyse_locks(
            lock_tries, writes, link.call(partial(ledger.live, prefix=stage.keys))
        )
        tries = link.call(ledger.tries)
        queued = link.call(campaign.queued)
        chunks = campaign.producer.chunks if campaign.producer else []
        gateway = campaign.provider.ledger()
        zombies = [_zombie(z, lock_tries, writes, replies, tries, queued) for z in injector.zombies]
        handovers = [handover(name, held, tries, (), queued) for name, held in injector.handovers]
        self.report.heading("2. What the ledger, the queue and the gateway show")
        self._show(outcome, locks, queued, gateway, zombies)
        self.report.heading("3. Checks")
        for check in [
            checks.faults_injected(self.faults, self.kinds),
            checks.work_flowed_again(self.faults, RECOVERY_TIMEOUT),
            checks.stored_once(outcome),
            checks.answered_once(outcome),
            checks.replies_fenced(outcome),
            checks.nothing_stuck(outcome),
            checks.lock_writes_fenced(locks),
            checks.no_lease_left(locks),
            *checks.campaign_checks(
                queued,
                campaign.enqueued,
                MAX_RETRIES,
                gateway,
                deaf_spans(campaign.provider, stage.crew.processes),
            ),
            checks.enqueued_once_under_faults(chunks, queued),
            *(checks.messages_delivered_again(h, MAX_RETRIES) for h in handovers),
            checks.zombie_writes_refused(zombies),
            checks.workers_stopped_cleanly(stage.crew.survivors, codes),
        ]:
            self.report.add(check)

    def _show(
        self,
        o: Outcome,
        locks: LockOutcome,
        queued: list[QueuedMessage],
        gateway: ProviderLedger,
        zombies: list[Zombie],
    ) -> None:
        lost = f", {o.lost_answers} delivered again after a fault cut their answer"
        self.report.line(
            f"webhooks: {o.stored} messages stored from {o.deliveries} deliveries"
            + (lost if o.lost_answers else "")
        )
        per_worker = ", ".join(f"{w} {n}" for w, n in o.by_worker.items())
        self.report.line(f"replies: {o.replies} for {o.bursts} bursts ({per_worker or 'none'})")
        self.report.line(f"from a burst's last message to its reply: {spread(o.latencies)}")
        self.report.line(
            f"fenced lock writes: {locks.tries - locks.refused} let through, "
            f"{locks.refused} refused"
        )
        statuses = Counter(m.status for m in queued)
        senders = Counter(
            str((m.metrics or {}).get("worker")) for m in queued if m.status == "sent"
        )
        self.report.line(
            f"campaign: {statuses['sent']} sent ("
            + ", ".join(f"{w} {n}" for w, n in sorted(senders.items()))
            + f"), {statuses['failed']} failed after their tries; the gateway took "
            f"{len(gateway.accepted)} parts and answered "
            f"{sum(a.replays for a in gateway.accepted)} sent again with the first acceptance"
        )
        for z in zombies:
            late = (
                f"its late writes: {['let through' if t else 'refused' for t in z.late_tries]}"
                if z.kind == "lock"
                else f"late {'replies' if z.kind == 'buffer' else 'completions'} landed: {z.landed}"
            )
            taken = "taken over" if z.taken_over else "NOT taken over"
            self.report.line(f"zombie {z.name} (tokens {list(z.tokens)}): {taken}, {late}")
        by_kind: dict[str, list[float]] = {}
        for f in self.faults:
            if f.recovery is not None:
                by_kind.setdefault(f.kind, []).append(f.recovery)
        if by_kind:
            self.report.line(
                "recovery: "
                + "; ".join(
                    f"{kind} {', '.join(f'{s:.2f}' for s in seconds)} s"
                    for kind, seconds in by_kind.items()
                )
            )

    def summary(self) -> dict[str, Any]:
        """The run for --json: its faults and what came of them."""
        return {
            "run": self.run_id,
            "kinds": self.kinds,
            "faults": [asdict(f) for f in self.faults],
            "injected": dict(Counter(f.kind for f in self.faults)),
        }


def _zombie(
    z: Suspended,
    lock_tries: list[LockTry],
    writes: list[LockWrite],
    replies: list[Reply],
    tries: list[Try],
    queued: list[QueuedMessage],
) -> Zombie:
    """What became of a stopped process's late writes, by its kind."""
    if z.grant is not None:
        return lock_zombie(z.process.name, z.grant, z.taken_over, lock_tries, writes)
    if z.claims:
        return buffer_zombie(z.process.name, z.claims, z.taken_over, replies, z.at)
    return campaign_zombie(z.process.name, z.messages, z.taken_over, tries, queued)


def _fault_line(fault: Fault) -> str:
    flows = ", ".join(
        f"{name} {'-' if after is None else f'{after:.2f} s'}"
        for name, after in fault.flows.items()
    )
    recovered = (
        "NOT recovered" if fault.recovery is None else f"recovered in {fault.recovery:.2f} s"
    )
    return f"{fault.at:5.1f} s  {fault.kind}: {fault.what}; {recovered} ({flows})"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


@contextmanager
def _bounded(seconds: float) -> Iterator[None]:
    """Cut the run short (Deadline) after `seconds`, and turn SIGTERM into an interrupt,
    so that everything is stopped and removed on the way out. The deadline is a signal
    to the main thread (SIGUSR1), which also ends a sleep or a wait it is in."""
    fired = threading.Event()
    main_thread = threading.main_thread().ident
    assert main_thread is not None

    def expire() -> None:
        fired.set()
        signal.pthread_kill(main_thread, signal.SIGUSR1)

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    previous = {signum: signal.signal(signum, interrupt) for signum in CUT_SHORT}
    timer.start()
    try:
        yield
    except KeyboardInterrupt:
        if fired.is_set():
            raise Deadline(f"the hard deadline of {seconds:g} s passed") from None
        raise
    finally:
        timer.cancel()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="pgcoord torture",
        description="Run webhooks, buffer workers, lock contenders and campaign workers as "
        "separate processes against a server while killing, stopping and cutting them off "
        "and crashing the server; then check that no effect happened twice, nothing was "
        "lost or stuck, and every zombie's late write was refused. Exits 0 when every check "
        "held, 1 when one did not, 2 on bad usage.",
    )
    parser.add_argument(
        "--seed",
        type=SEED_RANGE,
        default=None,
        help="of the webhooks, the faults and the processes' choices (default: a random "
        "one, printed first)",
    )
    parser.add_argument(
        "--seconds",
        type=SECONDS_RANGE,
        default=SECONDS,
        help=f"how long the webhooks arrive and the faults strike (default "
        f"{options.seconds(SECONDS)}; start-up and drain come on top, and the run is cut "
        f"short {DEADLINE:g} s after it)",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        default=None,
        help="server to use (default: $DATABASE_URL, else an embedded PostgreSQL of the "
        "torture's own, which it also crashes and restarts); the role must be able to "
        "create databases and terminate connections",
    )
    parser.add_argument(
        "--no-restart", action="store_true", help="do not crash and restart the server"
    )
    parser.add_argument(
        "--through-pooler",
        metavar="URL",
        default=None,
        help="connect the processes, webhooks and campaign producer through this "
        "transaction-mode pooler in front of --database-url's server (it must serve any "
        "database of that server)",
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        type=options.output_file,
        default=None,
        help="also write the report here",
    )
    parser.add_argument("--ascii", action="store_true", help="print ok/FAIL instead of ✓/✗")
    return parser


if __name__ == "__main__":
    sys.exit(main())
