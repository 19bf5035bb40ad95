"""The campaign's invariants (pgcoord.demo.checks): each holds on a run that keeps it
and fails on facts that break it; all hold after messages sent through the fake
provider with failures, 429s and retries."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from pgcoord import CampaignMessage, RateLimited
from pgcoord.demo.checks import (
    campaign_checks,
    none_lost_or_stuck,
    parts_accepted_once,
    sent_or_failed,
    sent_parts_accepted,
    within_gateway_limit,
)
from pgcoord.demo.facts import QueuedMessage
from pgcoord.demo.pipeline import make_handler
from pgcoord.demo.provider import Acceptance, FakeProvider, Ledger, Options, Second

MAX_RETRIES = 2


def ledger(*keys: str, seconds: tuple[Second, ...] = (), limit: int = 5) -> Ledger:
    accepted = tuple(
        Acceptance(key, f"acc-{i:06d}", "+1", f"digest of {key}", float(i))
        for i, key in enumerate(keys)
    )
    return Ledger(limit, accepted, seconds, {"gateway 200": len(keys)}, len(keys), 10 * len(keys))


def sent(message_id: int, parts: int) -> QueuedMessage:
    return QueuedMessage(message_id, "+1", "sent", 1, None, {"parts": parts})


def failed(
    message_id: int, attempt: int = MAX_RETRIES + 1, error: str | None = "boom"
) -> QueuedMessage:
    return QueuedMessage(message_id, "+1", "failed", attempt, error, None)


def test_none_lost_or_stuck() -> None:
    done = [sent(1, 1), failed(2)]
    assert none_lost_or_stuck(done, 2).held
    assert not none_lost_or_stuck(done, 3).held  # one lost
    assert not none_lost_or_stuck([*done, sent(1, 1)], 3).held  # one twice
    stuck = QueuedMessage(3, "+1", "processing", 1, None, None)
    check = none_lost_or_stuck([*done, stuck], 3)
    assert not check.held and "(3, 'processing')" in check.detail


def test_sent_or_failed_after_every_try_with_the_error_kept() -> None:
    assert sent_or_failed([sent(1, 1), failed(2)], MAX_RETRIES).held
    assert not sent_or_failed([], MAX_RETRIES).held
    assert not sent_or_failed([sent(1, 1), failed(2, attempt=2)], MAX_RETRIES).held
    assert not sent_or_failed([failed(2, error=None)], MAX_RETRIES).held
    assert not sent_or_failed([failed(2, error="")], MAX_RETRIES).held
    skipped = QueuedMessage(3, "+1", "skipped", 1, None, None)
    assert not sent_or_failed([sent(1, 1), skipped], MAX_RETRIES).held


def test_sent_parts_accepted() -> None:
    messages = [sent(1, 2), failed(2), failed(3)]
    assert sent_parts_accepted(messages, ledger("1:0", "1:1", "2:0")).held
    assert not sent_parts_accepted(messages, ledger("1:0", "2:0")).held  # 1:1 missing
    assert not sent_parts_accepted(messages, ledger("1:0", "1:1", "1:2")).held  # one extra
    assert not sent_parts_accepted(messages, ledger("1:0", "1:1", "2:1")).held  # not in order
    check = sent_parts_accepted(messages, ledger("1:0", "1:1", "4:0", "x"))
    assert not check.held and "['4:0', 'x']" in check.detail  # parts of no message
    no_metrics = QueuedMessage(1, "+1", "sent", 1, None, None)
    assert not sent_parts_accepted([no_metrics], ledger("1:0")).held
    assert not sent_parts_accepted([sent(1, 0)], ledger()).held  # nothing sent at all


def test_parts_accepted_once() -> None:
    once = ledger("1:0", "1:1")
    assert parts_accepted_once(once).held
    twice = replace(once, accepted=(*once.accepted, once.accepted[0]))
    assert not parts_accepted_once(twice).held
    same_text = replace(once.accepted[1], key="1:2", digest=once.accepted[0].digest)
    check = parts_accepted_once(replace(once, accepted=(*once.accepted, same_text)))
    assert not check.held and "1:2" in check.detail
    assert not parts_accepted_once(ledger()).held


def test_within_gateway_limit() -> None:
    calm = (Second(0, 5, 0), Second(1, 3, 0))
    check = within_gateway_limit(ledger(seconds=calm, limit=5))
    assert check.held and "the busiest had 5" in check.label
    busy = within_gateway_limit(ledger(seconds=(*calm, Second(2, 7, 2)), limit=5))
    assert not busy.held and "second 2: 7 requests, 2 answered 429" in busy.detail


def run_campaign(url: str, messages: list[CampaignMessage]) -> list[QueuedMessage]:
    """Each message tried until it is sent or has failed MAX_RETRIES + 1 times; a 429
    spends no try. What a campaign worker does, without the queue."""

    async def main() -> list[QueuedMessage]:
        async with httpx.AsyncClient() as http:
            handler = make_handler(url, http)
            return list(await asyncio.gather(*(attempts(handler, m) for m in messages)))

    async def attempts(handler: Any, m: CampaignMessage) -> QueuedMessage:
        attempt, error = 1, None
        for _ in range(100):
            try:
                metrics = await handler(replace(m, attempt=attempt))
            except RateLimited:
                continue
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                if attempt == MAX_RETRIES + 1:
                    return QueuedMessage(m.message_id, m.recipient, "failed", attempt, error, None)
                attempt += 1
            else:
                return QueuedMessage(m.message_id, m.recipient, "sent", attempt, error, metrics)
        raise AssertionError(f"message {m.message_id} was throttled 100 times")

    return asyncio.run(main())


@pytest.mark.timeout(60)
def test_every_check_holds_after_sending_through_the_fake_provider() -> None:
    options = Options(
        seed=4,
        latency=(0.0, 0.02),
        errors=0.15,
        throttled=0.1,
        retry_after=0,
        gateway_limit=10_000,
        short=0.1,
        long=0.2,
    )
    messages = [
        CampaignMessage(i, 1, f"+4915{i:07d}", {"offer": "spring"}, 1, i, datetime.now(UTC))
        for i in range(1, 41)
    ]
    with FakeProvider(options) as fake:
        queued = run_campaign(fake.url, messages)
        facts = fake.ledger()
    statuses = {q.status for q in queued}
    assert statuses == {"sent", "failed"}  # the seed gives both
    assert any(a.replays for a in facts.accepted)  # and retries that re-sent parts
    checks = campaign_checks(queued, len(messages), MAX_RETRIES, facts)
    assert [c.label for c in checks if not c.held] == []
