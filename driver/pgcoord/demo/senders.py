"""The storm's senders: the provider's webhooks delivering a plan's messages on its
schedule through `message_ingest`, retries included, and what each delivery was answered."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from pgcoord.inbox import message_ingest

from .plan import Message, Plan, PlannedBurst
from .server import connect
from .waiting import STEP_TIMEOUT, SceneError


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message_ingest call of the storm and its answer. `kind`: "burst" (sent with
    its burst), "double" (the same instant, another connection) or "late"."""

    provider_message_id: str
    conversation_key: str
    burst: int
    kind: str
    message_id: int
    duplicate: bool
    received_at: datetime


class _Twin:
    """A second connection that delivers a message at the same instant as its lane."""

    def __init__(self, storm: Storm, conn: psycopg.Connection[Any]) -> None:
        self.storm = storm
        self.conn = conn
        self.jobs: queue.SimpleQueue[tuple[PlannedBurst, Message] | None] = queue.SimpleQueue()
        self.barrier = threading.Barrier(2, timeout=STEP_TIMEOUT)
        self.thread = threading.Thread(target=self._run, daemon=True, name="storm twin")

    def _run(self) -> None:
        try:
            while (job := self.jobs.get()) is not None:
                self.barrier.wait()
                self.storm.deliver(self.conn, job[0], job[1], "double")
        except BaseException as exc:
            self.storm.errors.append(exc)
            self.barrier.abort()

    def deliver_with(self, burst: PlannedBurst, message: Message) -> None:
        """Queue the double delivery and meet the twin at the barrier."""
        self.jobs.put((burst, message))
        self.barrier.wait()


class Storm:
    """Sends a plan's messages on its schedule in the background: `lanes` threads with a
    connection each (one conversation always on the same lane, its bursts in order), and
    a twin connection per lane for the double deliveries."""

    def __init__(self, url: str, plan: Plan, lanes: int = 6) -> None:
        self.url = url
        self.plan = plan
        self.lanes = max(1, min(lanes, plan.conversations))
        self.deliveries: list[Delivery] = []
        self.errors: list[BaseException] = []
        self.started = 0.0  # perf_counter when the first lane began
        self.finished = 0.0
        self._barrier = threading.Barrier(self.lanes, action=self._go, timeout=STEP_TIMEOUT)
        self._threads: list[threading.Thread] = []

    def _go(self) -> None:
        self.started = time.perf_counter()

    def start(self) -> None:
        keys = sorted({b.conversation_key for b in self.plan.bursts})
        lane_of = {key: i % self.lanes for i, key in enumerate(keys)}
        work: list[list[PlannedBurst]] = [[] for _ in range(self.lanes)]
        for burst in self.plan.bursts:
            work[lane_of[burst.conversation_key]].append(burst)
        self._threads = [
            threading.Thread(target=self._lane, args=(bursts,), daemon=True, name="storm lane")
            for bursts in work
        ]
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float) -> list[Delivery]:
        """Wait for every lane; the deliveries, or the first error of a lane."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            raise SceneError(f"the storm's senders did not finish within {timeout:g} s")
        if self.errors:
            real = [e for e in self.errors if not isinstance(e, threading.BrokenBarrierError)]
            raise (real or self.errors)[0]
        self.finished = time.perf_counter()
        return list(self.deliveries)

    def deliver(
        self, conn: psycopg.Connection[Any], burst: PlannedBurst, message: Message, kind: str
    ) -> None:
        got = message_ingest(
            conn,
            self.plan.provider,
            message.provider_message_id,
            burst.conversation_key,
            message.body,
            debounce=self.plan.debounce,
            max_wait=self.plan.max_wait,
        )
        self.deliveries.append(
            Delivery(
                message.provider_message_id,
                burst.conversation_key,
                burst.number,
                kind,
                got.message_id,
                got.duplicate,
                got.received_at,
            )
        )

    def _lane(self, bursts: list[PlannedBurst]) -> None:
        try:
            with connect(self.url) as conn, connect(self.url) as twin_conn:
                twin = _Twin(self, twin_conn)
                twin.thread.start()
                try:
                    self._barrier.wait()
                    self._send(conn, twin, bursts)
                finally:
                    twin.jobs.put(None)
                    twin.thread.join(STEP_TIMEOUT)
        except BaseException as exc:
            self.errors.append(exc)
            self._barrier.abort()

    def _send(self, conn: psycopg.Connection[Any], twin: _Twin, bursts: list[PlannedBurst]) -> None:
        for at, burst, late in _schedule(bursts):
            if late is not None:
                self._sleep_until(at)
                self.deliver(conn, burst, late, "late")
                continue
            for message in burst.messages:
                self._sleep_until(at + message.offset)
                if message.retry == "double":
                    twin.deliver_with(burst, message)
                self.deliver(conn, burst, message, "burst")

    def _sleep_until(self, at: float) -> None:
        pause = self.started + at - time.perf_counter()
        if pause > 0:
            time.sleep(pause)


def _schedule(
    bursts: list[PlannedBurst],
) -> list[tuple[float, PlannedBurst, Message | None]]:
    """A lane's events in time order: each burst at its start (None), and each late
    retry of one of its messages."""
    events: list[tuple[float, int, PlannedBurst, Message | None]] = []
    for burst in bursts:
        events.append((burst.at, 0, burst, None))
        events.extend(
            (burst.at + m.retry_after, 1, burst, m) for m in burst.messages if m.retry == "late"
        )
    events.sort(key=lambda e: (e[0], e[1], e[2].number))
    return [(at, burst, late) for at, _, burst, late in events]
