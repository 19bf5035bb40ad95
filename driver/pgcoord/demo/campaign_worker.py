"""The campaign's worker process: a CampaignWorker running the campaign pipeline
(`pipeline`) against the fake provider, one httpx client for the process, every gateway
request paced by the fleet's shared budget (`Pacer`), every try logged in the ledger
before the pipeline runs.

    python -m pgcoord.demo.campaign_worker --schema S --name N --run-id R --provider URL
        --budget KEY --per-second RATE --burst N [--gated] [--hang] [--database-url URL]

The URL defaults to $DATABASE_URL. The process stops on SIGTERM or SIGINT (finishing its
messages in flight, giving back the rest), and by itself when the process that started
it is gone. `campaign_scene` starts, kills and stops such processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from datetime import timedelta
from typing import Any

import httpx

from pgcoord import CampaignMessage, CampaignWorker, RateLimited, rates_async
from pgcoord.config import AsyncPool, async_pool
from pgcoord.errors import FAULTS
from pgcoord.worker import RateBudget

from . import process
from .ledger import TryLog
from .pipeline import GENERATE_TIMEOUT, SEND_TIMEOUT, Handler, make_handler

LEASE = timedelta(seconds=4)
IDLE_POLL = timedelta(seconds=1)
CONCURRENCY = 12
# the worker's limit for a whole message: room for the pipeline's own limits (30 s for
# the model's answer, 10 s for each part) with a dozen parts, and the waits for the
# gateway's budget
TIMEOUT = timedelta(seconds=GENERATE_TIMEOUT + 12 * SEND_TIMEOUT + 10)
# the longest wait for a token that a handler sits out: a longer one is a pause of the
# budget (a gateway 429's Retry-After), which the message waits out snoozed instead
PACE_WAIT_MAX = timedelta(seconds=5)
# seconds between the tries of a pause whose call met a dropped connection
PAUSE_RETRY = 0.05


class Pacer:
    """Every gateway request of this process waits here for a token of the fleet's
    shared budget (`rate_acquire` with cost 1 on `budget.key`, which every worker process
    asks with the same rate and burst). One request of the process asks at a time, so a
    busy process asks the bucket about once per grant, not once per waiting request. A
    wait longer than PACE_WAIT_MAX (the key paused) raises RateLimited: the message is
    snoozed for it without spending a try, rather than holding a handler, and its
    timeout, that long."""

    def __init__(self, pool: AsyncPool, budget: RateBudget) -> None:
        self.pool = pool
        self.budget = budget
        self._turn = asyncio.Lock()

    async def __call__(self) -> None:
        budget = self.budget
        async with self._turn:
            while True:
                async with self.pool.connection() as conn:
                    wait = await rates_async.rate_acquire(
                        conn, budget.key, budget.per_second, budget.burst
                    )
                if wait <= timedelta(0):
                    return
                if wait > PACE_WAIT_MAX:
                    raise RateLimited(wait, f"the budget {budget.key!r} is paused")
                await asyncio.sleep(wait.total_seconds())

    async def pause(self, seconds: float) -> None:
        """The gateway answered 429: pause the budget's key for `seconds` (the
        pipeline's Retry-After, at most the longest pause), so that every worker's next
        request waits. A call that meets a dropped connection (a restarted pooler, a
        terminated backend) goes again on another, for what is left of the pause: a
        lost pause would leave the fleet sending into the gateway's 429s."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            try:
                async with self.pool.connection() as conn:
                    await rates_async.rate_pause(
                        conn, self.budget.key, timedelta(seconds=max(left, 0.001))
                    )
                return
            except Exception as exc:  # the message is snoozed all the same
                print(f"pausing {self.budget.key!r} failed: {exc}", file=sys.stderr, flush=True)
                if not isinstance(exc, FAULTS) or left < PAUSE_RETRY:
                    return
            await asyncio.sleep(PAUSE_RETRY)


def main(argv: list[str] | None = None) -> int:
    return process.main(_parser(), argv, _work)


async def _work(args: argparse.Namespace) -> int:
    # the runtime's claims, completions, heartbeats and settles, the logs and the pacer:
    # fewer than the runtime's 2 * concurrency + 2, as every one of them is short and
    # a wait for a connection only delays it
    pool = async_pool(
        args.database_url, max_size=args.concurrency + 4, name=f"campaign {args.name}"
    )
    log = TryLog(args.schema)
    budget = RateBudget(args.budget, args.per_second, args.burst)
    pacer = Pacer(pool, budget)
    # the worker's name as its User-Agent: the provider's ledger says whom it answered
    async with httpx.AsyncClient(headers={"User-Agent": args.name}) as http:
        pipeline = make_handler(args.provider, http, pace=pacer, pause=pacer.pause)
        worker = CampaignWorker(
            _logged(pipeline, pool, log, args),
            **process.options(args, pool),
            run_id=args.run_id,
            timeout=TIMEOUT,
            idle_poll=IDLE_POLL,
            skip_stale_every=None,
        )
        return await process.serve(worker, pool, log, args)


def _logged(pipeline: Handler, pool: AsyncPool, log: TryLog, args: argparse.Namespace) -> Handler:
    """The pipeline, each try logged first; the metrics name the worker that sent it.
    With --hang, the handler never returns once the message is sent (the process hangs
    before its sends are recorded, until it is killed)."""
    name: str = args.name

    async def send(message: CampaignMessage) -> dict[str, Any]:
        async with pool.connection() as conn:
            await log.log_try(conn, message, name)
        metrics = await pipeline(message)
        if args.hang:
            await asyncio.Event().wait()
        return {**metrics, "worker": name}

    return send


def _parser() -> argparse.ArgumentParser:
    parser = process.parser(
        "pgcoord.demo.campaign_worker",
        "Send the campaign run's due messages through the fake provider's model and "
        "gateway until SIGTERM or SIGINT.",
        LEASE,
    )
    parser.set_defaults(concurrency=CONCURRENCY)
    parser.add_argument("--run-id", type=int, required=True, help="the campaign run")
    parser.add_argument("--provider", required=True, help="the fake provider's base URL")
    parser.add_argument("--budget", required=True, help="the gateway budget's rate key")
    parser.add_argument(
        "--per-second", type=float, required=True, help="gateway requests a second, fleet-wide"
    )
    parser.add_argument("--burst", type=int, required=True, help="of the gateway budget")
    parser.add_argument(
        "--hang", action="store_true", help="never complete a message once it is sent"
    )
    return parser


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
