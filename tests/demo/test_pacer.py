"""The demo workers' pace for gateway requests (campaign_worker.Pacer): a short wait for
a token is sat out in the handler; a paused budget gives the message back instead."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from dying import die_once

from pgcoord import RateLimited, rates_async
from pgcoord.config import async_pool
from pgcoord.demo.campaign_worker import PACE_WAIT_MAX, Pacer
from pgcoord.worker import RateBudget


def pace(db_url: str, budget: RateBudget, calls: int, pause: timedelta | None = None) -> float:
    """Seconds `calls` paces took, after pausing the key for `pause` when given."""

    async def main() -> float:
        async with async_pool(db_url) as pool:
            if pause is not None:
                async with pool.connection() as conn:
                    await rates_async.rate_pause(conn, budget.key, pause)
            pacer = Pacer(pool, budget)
            start = time.monotonic()
            for _ in range(calls):
                await pacer()
            return time.monotonic() - start

    return asyncio.run(main())


def test_a_short_wait_for_a_token_is_sat_out(db_url: str) -> None:
    # a burst of 1 at 10 a second: the 2nd and 3rd wait about 0.1 s each
    took = pace(db_url, RateBudget("pace", per_second=10, burst=1), 3)
    assert 0.15 < took < PACE_WAIT_MAX.total_seconds()


def test_a_paused_budget_gives_the_message_back_instead_of_holding_its_handler(
    db_url: str,
) -> None:
    budget = RateBudget("paused", per_second=10, burst=1)
    with pytest.raises(RateLimited) as limited:
        pace(db_url, budget, 1, pause=timedelta(seconds=20))
    assert timedelta(seconds=15) < limited.value.after <= timedelta(seconds=20)


def test_a_pause_whose_connection_died_is_made_on_another(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = RateBudget("dropped", per_second=10, burst=1)
    killed = die_once(monkeypatch, rates_async, "rate_pause")

    async def main() -> timedelta:
        async with async_pool(db_url) as pool:
            await Pacer(pool, budget).pause(20)
            with pytest.raises(RateLimited) as limited:
                await Pacer(pool, budget)()
            return limited.value.after

    after = asyncio.run(main())
    assert killed, "the pause met its dead connection"
    assert timedelta(seconds=15) < after <= timedelta(seconds=20)
