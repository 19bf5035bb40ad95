"""The campaign handler (pgcoord.demo.pipeline) against the fake provider: metrics,
429 -> RateLimited with the provider's delay, 5xx and timeouts -> an error, a retried
message never sending a part twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from pgcoord import CampaignMessage, FailForGood, RateLimited
from pgcoord.demo.parts import InvalidText, part_key
from pgcoord.demo.pipeline import (
    MAX_RETRY_AFTER,
    RETRY_AFTER,
    ProviderError,
    make_handler,
    prompt,
    retry_after,
)
from pgcoord.demo.provider import FakeProvider, Ledger, Options
from pgcoord.demo.waiting import wait_until

QUIET = Options(latency=(0.0, 0.0), errors=0.0, throttled=0.0, gateway_limit=1000)
LONG = replace(QUIET, long=1.0)  # every message has two parts or more


def message(message_id: int, attempt: int = 1) -> CampaignMessage:
    return CampaignMessage(
        message_id=message_id,
        run_id=1,
        recipient=f"+4915{message_id:07d}",
        payload={"offer": "spring sale", "name": "Zoë"},
        attempt=attempt,
        claim_token=message_id * 10 + attempt,
        scheduled_at=datetime.now(UTC),
    )


@contextmanager
def provider(options: Options = QUIET) -> Iterator[FakeProvider]:
    with FakeProvider(options) as fake:
        yield fake


def handle(url: str, *messages: CampaignMessage, **timeouts: float) -> list[dict[str, Any]]:
    """Run the handler on `messages` one after the other, with one client, as a worker
    process would; the first error raises."""

    async def main() -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as http:
            handler = make_handler(url, http, **timeouts)
            return [await handler(m) for m in messages]

    return asyncio.run(main())


def keys(ledger: Ledger) -> list[str]:
    return [a.key for a in ledger.accepted]


def test_a_message_is_generated_split_and_sent_with_its_metrics() -> None:
    with provider(replace(LONG, latency=(0.02, 0.03))) as fake:
        [metrics] = handle(fake.url, message(3))
        ledger = fake.ledger()
    assert set(metrics) == {"tokens", "generate_ms", "send_ms", "parts", "replayed"}
    assert metrics["parts"] >= 2 and metrics["replayed"] == 0
    assert keys(ledger) == [part_key(3, i) for i in range(metrics["parts"])]
    assert {a.to for a in ledger.accepted} == {"+49150000003"}
    assert metrics["tokens"] == ledger.tokens > 0
    assert metrics["generate_ms"] >= 20  # the latency of one call
    assert metrics["send_ms"] >= 20 * metrics["parts"]


def test_pace_is_awaited_before_each_request_to_the_gateway() -> None:
    paced: list[int] = []

    async def main(url: str) -> dict[str, Any]:
        async with httpx.AsyncClient() as http:

            async def pace() -> None:
                paced.append(len(fake.ledger().accepted))  # parts taken before this one
                await asyncio.sleep(0.05)

            return await make_handler(url, http, pace=pace)(message(3))

    with provider(LONG) as fake:
        metrics = asyncio.run(main(fake.url))
    assert paced == list(range(metrics["parts"]))
    assert metrics["send_ms"] >= 50 * metrics["parts"]


def test_the_prompt_carries_recipient_and_payload() -> None:
    text = prompt(message(3))
    assert "+49150000003" in text and '"name": "Zoë"' in text and "JSON list" in text


@pytest.mark.parametrize("endpoint", ["llm", "gateway"])
def test_a_429_raises_rate_limited_with_the_providers_delay(endpoint: str) -> None:
    key = "8" if endpoint == "llm" else part_key(8, 0)
    with provider(replace(QUIET, retry_after=7, faults={(endpoint, key): (429,)})) as fake:
        with pytest.raises(RateLimited) as raised:
            handle(fake.url, message(8))
        [metrics] = handle(fake.url, message(8, attempt=2))  # snoozed, then sent
        ledger = fake.ledger()
    assert raised.value.after == timedelta(seconds=7)
    assert "429" in str(raised.value)
    assert ledger.answers[f"{endpoint} 429"] == 1
    assert keys(ledger) == [part_key(8, i) for i in range(metrics["parts"])]


def test_a_gateway_429_pauses_before_it_raises() -> None:
    """A gateway budget paced per request is paused for the Retry-After (the fleet
    waits); the model's 429 pauses nothing of the gateway's."""
    paused: list[float] = []

    async def pause(seconds: float) -> None:
        paused.append(seconds)

    async def main(url: str, *messages: CampaignMessage) -> None:
        async with httpx.AsyncClient() as http:
            handler = make_handler(url, http, pause=pause)
            for m in messages:
                with pytest.raises(RateLimited):
                    await handler(m)

    script = {("gateway", part_key(8, 0)): (429,), ("llm", "9"): (429,)}
    with provider(replace(QUIET, retry_after=7, faults=script)) as fake:
        asyncio.run(main(fake.url, message(8), message(9)))
    assert paused == [7.0]


def test_the_gateways_own_limit_raises_rate_limited() -> None:
    with provider(replace(QUIET, gateway_limit=0, retry_after=7)) as fake:
        with pytest.raises(RateLimited) as raised:
            handle(fake.url, message(4))
        ledger = fake.ledger()
    assert raised.value.after == timedelta(seconds=1)
    assert [(s.requests, s.over_limit) for s in ledger.seconds] == [(1, 1)]


# a wrong key (401, 403) or model (404) fails every message: retried, each goes once fixed
@pytest.mark.parametrize(
    ("endpoint", "status"),
    [("llm", 503), ("gateway", 500), ("gateway", 401), ("gateway", 403), ("llm", 404)],
)
def test_a_5xx_or_a_wrong_key_fails_the_try(endpoint: str, status: int) -> None:
    key = "9" if endpoint == "llm" else part_key(9, 0)
    with provider(replace(QUIET, faults={(endpoint, key): (status,)})) as fake:
        with pytest.raises(ProviderError, match=rf"answered {status}"):
            handle(fake.url, message(9))
        ledger = fake.ledger()
    assert ledger.accepted == ()


@pytest.mark.parametrize("status", [400, 404, 410, 422])
def test_the_gateway_refusing_the_message_fails_it_for_good(status: int) -> None:
    refused = rf"the gateway \(part 1 of \d+\) answered {status}"
    with (
        provider(replace(QUIET, faults={("gateway", part_key(9, 0)): (status,)})) as fake,
        pytest.raises(FailForGood, match=refused),
    ):
        handle(fake.url, message(9))


def test_a_recipient_the_gateway_does_not_know_is_refused_on_every_try() -> None:
    with provider(replace(QUIET, unknown="+4915")) as fake:
        for attempt in (1, 2):
            with pytest.raises(FailForGood, match=r"answered 404: .*not a WhatsApp number"):
                handle(fake.url, message(9, attempt))
        ledger = fake.ledger()
    assert ledger.refused == (part_key(9, 0), part_key(9, 0)) and ledger.accepted == ()


def test_a_retried_message_never_sends_a_part_twice() -> None:
    # the gateway fails the second part once: the first was sent on the failed try
    with provider(replace(LONG, faults={("gateway", part_key(5, 1)): (503,)})) as fake:
        with pytest.raises(ProviderError, match=r"the gateway \(part 2 of \d+\) answered 503"):
            handle(fake.url, message(5))
        assert keys(fake.ledger()) == [part_key(5, 0)]
        [metrics] = handle(fake.url, message(5, attempt=2))
        [again] = handle(fake.url, message(5, attempt=3))  # as if its completion was lost
        ledger = fake.ledger()
    parts = metrics["parts"]
    assert metrics["replayed"] == 1 and again["replayed"] == parts
    assert keys(ledger) == [part_key(5, i) for i in range(parts)]  # each once
    assert [a.replays for a in ledger.accepted] == [2] + [1] * (parts - 1)
    assert ledger.generations == 1  # the same text on every try
    assert metrics["tokens"] == again["tokens"] == ledger.tokens


def test_an_answer_too_short_fails_the_try_and_sends_nothing() -> None:
    with provider(replace(QUIET, short=1.0)) as fake:
        with pytest.raises(InvalidText, match="too short to send"):
            handle(fake.url, message(6))
        ledger = fake.ledger()
    assert ledger.accepted == () and ledger.generations == 1


def test_the_model_taking_too_long_fails_the_try_within_the_timeout() -> None:
    async def timed(url: str) -> tuple[BaseException | None, float]:
        async with httpx.AsyncClient() as http:
            handler = make_handler(url, http, generate_timeout=0.2)
            start = time.perf_counter()
            try:
                await handler(message(7))
            except Exception as exc:
                return exc, time.perf_counter() - start
            return None, time.perf_counter() - start

    with provider(replace(QUIET, latency=(2.0, 2.0))) as fake:
        error, took = asyncio.run(timed(fake.url))
    assert isinstance(error, ProviderError)
    assert str(error) == "the model: no answer within 0.2 s"
    assert 0.2 <= took < 1.5  # the answer would have come after 2 s


def test_a_part_whose_answer_was_lost_is_not_sent_again() -> None:
    # the gateway takes the part but answers after the handler gave up on it
    with provider(replace(LONG, latency=(0.3, 0.3))) as fake:
        with pytest.raises(ProviderError, match=r"the gateway \(part 1 of \d+\): no answer"):
            handle(fake.url, message(2), generate_timeout=5.0, send_timeout=0.1)
        assert wait_until(lambda: keys(fake.ledger()) == [part_key(2, 0)], timeout=10)
        [metrics] = handle(fake.url, message(2, attempt=2), generate_timeout=5.0)
        ledger = fake.ledger()
    assert metrics["replayed"] == 1
    assert keys(ledger) == [part_key(2, i) for i in range(metrics["parts"])]
    assert ledger.accepted[0].replays == 1


def test_messages_of_every_shape_are_sent_in_parts_the_gateway_takes() -> None:
    options = replace(QUIET, fenced=0.4, malformed=0.3, long=0.3, seed=5)
    with provider(options) as fake:
        results = handle(fake.url, *(message(i) for i in range(1, 31)))
        ledger = fake.ledger()
    assert sum(m["parts"] for m in results) == len(ledger.accepted)
    assert max(m["parts"] for m in results) >= 2
    assert set(ledger.answers) == {"llm 200", "gateway 200"}  # no part refused as too long


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        ("0.25", 0.25),
        ("0", 0.0),
        ("-5", 0.0),
        (None, RETRY_AFTER),
        ("soon", RETRY_AFTER),
        ("nan", RETRY_AFTER),
        ("inf", RETRY_AFTER),
        ("99999999", MAX_RETRY_AFTER),
        (format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True), 0.0),
    ],
)
def test_retry_after_reads_seconds_and_dates(header: str | None, seconds: float) -> None:
    headers = {} if header is None else {"Retry-After": header}
    assert retry_after(httpx.Response(429, headers=headers)) == seconds


def test_retry_after_reads_a_date_to_come() -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    answer = httpx.Response(429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    assert 100 < retry_after(answer) <= 120
