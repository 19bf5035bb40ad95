"""The torture's campaign: a run whose messages are scheduled all through the load and
enqueued while it lasts (`torture_producer`), sent by campaign worker processes
(`campaign_worker`, as the campaign scene runs them) through the fake provider
(`provider`) under the fleet's budget; with what the faults and the checks need to know
of it."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import psycopg

from pgcoord.campaigns import campaign_create, campaign_progress

from .campaign_scene import (
    BACKOFF,
    MAX_RETRIES,
    PROVIDER,
    campaign_items,
    held_by,
    queued_messages,
    worker_args,
)
from .facts import QueuedMessage
from .provider import FakeProvider
from .server import server_clock
from .torture_producer import Producer

PER_SECOND = 4  # messages scheduled per second of load
CONCURRENCY = 4  # messages a worker process sends at once
# the workers' claims: short, so that a killed or stopped worker's messages are taken
# over within seconds (the heartbeat extends them every third of it)
LEASE = timedelta(seconds=2)


@dataclass(slots=True)
class Campaign:
    """The torture's campaign run: the fake provider it sends through, its id, and once
    its producer is made, the producer and when the last message is due (server
    clock)."""

    provider: FakeProvider
    run_id: int
    producer: Producer | None = None
    last_due: datetime | None = None

    @classmethod
    def create(
        cls, stack: ExitStack, conn: psycopg.Connection[Any], name: str, seed: int
    ) -> Campaign:
        """Start the provider (stopped when `stack` closes) and create the run."""
        provider = stack.enter_context(FakeProvider(replace(PROVIDER, seed=seed)))
        return cls(provider, campaign_create(conn, name, MAX_RETRIES, BACKOFF))

    def worker_args(self, schema: str) -> list[str]:
        """The options of a campaign worker process of the torture (besides its name)."""
        return [
            *worker_args(schema, self.run_id, self.provider.url),
            f"--concurrency={CONCURRENCY}",
            f"--lease-ms={LEASE.total_seconds() * 1000:.0f}",
        ]

    def produce(
        self, conn: psycopg.Connection[Any], url: str, seconds: float, seed: int
    ) -> Producer:
        """The producer (not started yet) of PER_SECOND messages for each of `seconds`
        seconds from now, each due at its own instant, enqueued a second's worth at a
        time into the run on the server at `url` (see `torture_producer`)."""
        count = max(1, int(PER_SECOND * seconds))
        every = timedelta(seconds=1 / PER_SECOND)
        first = server_clock(conn)
        items = campaign_items(count, seed, first, every)
        self.producer = Producer(url, self.run_id, items, PER_SECOND, seed)
        self.last_due = first + (count - 1) * every
        return self.producer

    @property
    def enqueued(self) -> int:
        return self.producer.enqueued if self.producer else 0

    def active(self, now: datetime) -> bool:
        """Whether messages are still to fall due at `now`."""
        return self.last_due is not None and now < self.last_due

    def held(self, conn: psycopg.Connection[Any], worker: str) -> dict[int, int]:
        """The messages `worker` holds: id -> the attempt of its claim."""
        return held_by(conn, self.run_id, worker)

    def settled(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether none of the run's messages is pending or processing."""
        [progress] = campaign_progress(conn, self.run_id)
        return progress.pending == progress.processing == 0

    def queued(self, conn: psycopg.Connection[Any]) -> list[QueuedMessage]:
        return queued_messages(conn, self.run_id)
