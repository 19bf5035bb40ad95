"""campaign_enqueue_once through the clients: a typed answer, and a call made again after
its answer was lost enqueues nothing more."""

from __future__ import annotations

import asyncio

import psycopg

from pgcoord import AsyncClient, CampaignEnqueued, Client, campaigns

RECIPIENTS = [{"recipient": f"+1555{i}", "payload": {"n": i}} for i in range(40)]


def total(client: Client, run_id: int) -> int:
    [progress] = [p for p in client.campaign_progress() if p.run_id == run_id]
    return progress.total


def test_a_retry_after_a_lost_answer_enqueues_nothing_more(db_url: str) -> None:
    with Client(db_url) as client:
        run_id = client.campaign_create("retried")
        # a producer's call on its own connection commits; the answer is lost on the
        # way back (the server's state is the same whether the caller read it or not),
        # so the producer calls again, through the pool
        with psycopg.connect(db_url, autocommit=True) as conn:
            first = campaigns.campaign_enqueue_once(conn, run_id, "import-7", RECIPIENTS)
        assert first == CampaignEnqueued(enqueued=40, duplicate=False)
        again = client.campaign_enqueue_once(run_id, "import-7", RECIPIENTS)
        assert type(again) is CampaignEnqueued
        assert again == CampaignEnqueued(enqueued=40, duplicate=True)
        assert total(client, run_id) == 40
        assert client.campaign_enqueue_once(run_id, "import-8", RECIPIENTS[:5]) == (
            CampaignEnqueued(enqueued=5, duplicate=False)
        )
        assert total(client, run_id) == 45


def test_the_async_client_answers_the_same(db_url: str) -> None:
    async def main() -> tuple[CampaignEnqueued, CampaignEnqueued, int]:
        async with AsyncClient(db_url) as client:
            run_id = await client.campaign_create("async")
            first = await client.campaign_enqueue_once(run_id, "k", RECIPIENTS[:3])
            again = await client.campaign_enqueue_once(run_id, "k", RECIPIENTS[:3])
            [progress] = [p for p in await client.campaign_progress() if p.run_id == run_id]
            return first, again, progress.total

    first, again, stored = asyncio.run(main())
    assert first == CampaignEnqueued(enqueued=3, duplicate=False)
    assert again == CampaignEnqueued(enqueued=3, duplicate=True)
    assert stored == 3
