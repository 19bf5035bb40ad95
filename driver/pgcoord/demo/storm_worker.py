"""The storm's worker process: a BufferWorker that answers each burst with a fenced
reply (the reply row and buffer_complete in one transaction), logging every claim in
the ledger first.

    python -m pgcoord.demo.storm_worker --schema S --prefix P --name N [--database-url URL]

The URL defaults to $DATABASE_URL. The process stops on SIGTERM or SIGINT (finishing its
bursts in flight), and by itself when the process that started it is gone. `workers`
starts, kills and stops such processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta

from pgcoord import Batch, BufferWorker, Retry
from pgcoord.config import AsyncPool, async_pool

from . import process
from .ledger import Ledger

LEASE = timedelta(milliseconds=1500)
RETRY_IN = timedelta(milliseconds=200)
IDLE_POLL = timedelta(milliseconds=250)
THINK = (0.05, 0.15)  # seconds a worker's "model" takes per burst, from..to

Pool = AsyncPool


def main(argv: list[str] | None = None) -> int:
    return process.main(_parser(), argv, _work)


async def _work(args: argparse.Namespace) -> int:
    pool = async_pool(
        args.database_url, max_size=2 * args.concurrency + 2, name=f"storm {args.name}"
    )
    ledger = Ledger(args.schema)
    worker = BufferWorker(
        _answer(pool, ledger, args),
        **process.options(args, pool),
        retry_in=RETRY_IN,
        idle_poll=IDLE_POLL,
    )
    return await process.serve(worker, pool, ledger, args)


def _answer(
    pool: Pool, ledger: Ledger, args: argparse.Namespace
) -> Callable[[Batch], Awaitable[None]]:
    """The handler: log the claim, let the "model" think, reply fenced."""
    name: str = args.name
    low, high = args.think
    rng = random.Random(name)

    async def answer(burst: Batch) -> None:
        if not burst.conversation_key.startswith(args.prefix):
            raise Retry(timedelta(0), "not a conversation of this storm")
        async with pool.connection() as conn:
            await ledger.log_claim(conn, burst, name)
        await asyncio.sleep(rng.uniform(low, high))  # the model thinks
        async with pool.connection() as conn:
            await ledger.reply_fenced(conn, burst, name)

    return answer


def _think(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    seconds = (float(low) / 1000, float(high or low) / 1000)
    if not 0 <= seconds[0] <= seconds[1]:
        raise argparse.ArgumentTypeError(f"expected MS or MIN-MAX milliseconds, got {text!r}")
    return seconds


def _parser() -> argparse.ArgumentParser:
    parser = process.parser(
        "pgcoord.demo.storm_worker",
        "Claim the storm's due bursts and answer each with a fenced reply "
        "(the reply and buffer_complete in one transaction) until SIGTERM or SIGINT.",
        LEASE,
    )
    parser.add_argument("--prefix", required=True, help="of the storm's conversation keys")
    parser.add_argument(
        "--think-ms",
        dest="think",
        type=_think,
        default=THINK,
        help="how long the model takes per burst: MS or MIN-MAX (default 50-150)",
    )
    return parser


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
