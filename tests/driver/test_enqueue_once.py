"""campaign_enqueue_once through the clients: a typed answer, and a call made again after
its answer was really lost (a proxy closes the connection once the server has committed,
before the answer reaches the client) enqueues nothing more, where the contract's
campaign_enqueue enqueues the list twice."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from pgcoord import AsyncClient, CampaignEnqueued, Client, campaigns
from pgcoord.demo.lostanswer import lost_answer

RECIPIENTS = [{"recipient": f"+1555{i}", "payload": {"n": i}} for i in range(40)]


def total(client: Client, run_id: int) -> int:
    [progress] = [p for p in client.campaign_progress() if p.run_id == run_id]
    return progress.total


def test_the_sync_client_answers_a_repeat_with_the_first_count(db_url: str) -> None:
    with Client(db_url) as client:
        run_id = client.campaign_create("retried")
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


def test_after_a_lost_answer_only_the_keyed_enqueue_may_be_called_again(db_url: str) -> None:
    with lost_answer(db_url) as proxy, Client(db_url) as client:
        plain, keyed = client.campaign_create("plain"), client.campaign_create("keyed")
        with psycopg.connect(proxy.url, autocommit=True) as conn:
            proxy.arm()
            with pytest.raises(psycopg.OperationalError):
                campaigns.campaign_enqueue(conn, plain, RECIPIENTS)
        assert proxy.lost.is_set()
        assert total(client, plain) == 40, "the call landed; its caller cannot know"
        assert client.campaign_enqueue(plain, RECIPIENTS) == 40
        assert total(client, plain) == 80, "called again, the contract's enqueue doubles"

        with psycopg.connect(proxy.url, autocommit=True) as conn:
            proxy.arm()
            with pytest.raises(psycopg.OperationalError):
                campaigns.campaign_enqueue_once(conn, keyed, "import-9", RECIPIENTS)
        assert total(client, keyed) == 40
        again = client.campaign_enqueue_once(keyed, "import-9", RECIPIENTS)
        assert again == CampaignEnqueued(enqueued=40, duplicate=True)
        assert total(client, keyed) == 40


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
