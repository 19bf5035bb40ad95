"""The fake provider (pgcoord.demo.provider): its idempotent gateway and model, its own
rate limit, seeded and scripted faults, and its ledger."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import httpx
import pytest

from pgcoord.demo.parts import PART_LIMIT, InvalidText, split_parts, validate
from pgcoord.demo.provider import FakeProvider, Ledger, Options

QUIET = Options(latency=(0.0, 0.0), errors=0.0, throttled=0.0, gateway_limit=1000)


@contextmanager
def serving(options: Options = QUIET) -> Iterator[tuple[FakeProvider, httpx.Client]]:
    with FakeProvider(options) as provider, httpx.Client(base_url=provider.url) as http:
        yield provider, http


def send(
    http: httpx.Client, key: str | None, text: str = "hello there", to: str = "+1"
) -> httpx.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    return http.post("/gateway/messages", json={"to": to, "text": text}, headers=headers)


def generate(http: httpx.Client, key: str | None, prompt: str = "write") -> httpx.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    return http.post("/llm/generate", json={"prompt": prompt}, headers=headers)


def test_a_repeated_key_gets_the_original_acceptance_and_is_not_counted_again() -> None:
    with serving() as (provider, http):
        first = send(http, "7:0", "part one")
        again = send(http, "7:0", "part one")
        other = send(http, "7:1", "part two")
        assert first.status_code == again.status_code == other.status_code == 200
        assert again.json() == first.json()
        assert first.json()["key"] == "7:0" and first.json()["id"] != other.json()["id"]
        assert "Idempotent-Replayed" not in first.headers
        assert again.headers["Idempotent-Replayed"] == "true"
        ledger = provider.ledger()
    assert [(a.key, a.replays) for a in ledger.accepted] == [("7:0", 1), ("7:1", 0)]
    assert ledger.answers == {"gateway 200": 3}
    assert ledger.accepted[0].accepted_at == first.json()["accepted_at"]


def test_the_gateway_refuses_a_key_reused_for_another_part_and_bad_requests() -> None:
    with serving() as (provider, http):
        assert send(http, "1:0", "the first text").status_code == 200
        reused = send(http, "1:0", "another text")
        assert reused.status_code == 422 and "another part" in reused.json()["error"]
        assert send(http, "1:0", "the first text", to="+2").status_code == 422
        assert send(http, None).status_code == 400
        assert send(http, "2:0", "x" * (PART_LIMIT + 1)).status_code == 400
        assert send(http, "2:0", "é" * PART_LIMIT).status_code == 200  # characters, not bytes
        assert send(http, "3:0", "").status_code == 400
        bad = http.post(
            "/gateway/messages", content=b"{not json", headers={"Idempotency-Key": "4:0"}
        )
        assert bad.status_code == 400
        ledger = provider.ledger()
    assert [a.key for a in ledger.accepted] == ["1:0", "2:0"]
    assert ledger.answers == {"gateway 200": 2, "gateway 422": 2, "gateway 400": 4}


def test_the_gateway_enforces_its_own_rate_limit() -> None:
    limit, sent = 4, 30

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url) as http:
            return await asyncio.gather(
                *(
                    http.post(
                        "/gateway/messages",
                        json={"to": "+1", "text": f"part {i}"},
                        headers={"Idempotency-Key": f"{i}:0"},
                    )
                    for i in range(sent)
                )
            )

    with FakeProvider(replace(QUIET, gateway_limit=limit, retry_after=7)) as provider:
        answers = asyncio.run(burst(provider.url))
        ledger = provider.ledger()
    statuses = Counter(a.status_code for a in answers)
    assert set(statuses) == {200, 429}
    assert all(a.headers["Retry-After"] == "1" for a in answers if a.status_code == 429)
    # however the burst fell on the provider's seconds, each served at most `limit`
    assert sum(s.requests for s in ledger.seconds) == sent
    assert all(s.over_limit == max(0, s.requests - limit) for s in ledger.seconds)
    assert (
        statuses[200] == len(ledger.accepted) == sum(min(s.requests, limit) for s in ledger.seconds)
    )
    assert (
        statuses[429]
        == sum(s.over_limit for s in ledger.seconds)
        >= sent - limit * len(ledger.seconds)
    )
    assert ledger.gateway_limit == limit


def test_the_model_answers_a_repeated_key_with_the_same_generation() -> None:
    with serving() as (provider, http):
        first = generate(http, "41", "write something nice")
        again = generate(http, "41", "write something nice")
        other = generate(http, "42")
        keyless = [generate(http, None) for _ in range(2)]
        assert first.json() == again.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert first.json()["tokens"] >= len("write something nice") // 4
        assert generate(http, "43", "").status_code == 400
        ledger = provider.ledger()
    assert all(a.status_code == 200 for a in (first, again, other, *keyless))
    assert ledger.generations == 4  # the repeat spent nothing
    assert ledger.tokens == sum(r.json()["tokens"] for r in (first, other, *keyless))


@pytest.mark.parametrize(
    ("shape", "looks"),
    [
        ({"fenced": 1.0}, lambda text: text.startswith("```json\n[") and text.endswith("]\n```")),
        ({"fenced": 0.0}, lambda text: isinstance(json.loads(text), list)),
        ({"malformed": 1.0}, lambda text: not text.startswith(("[", "```"))),
    ],
)
def test_the_model_writes_json_lists_fenced_or_not_or_plain_text(
    shape: dict[str, float], looks: Callable[[str], bool]
) -> None:
    plain = {"fenced": 0.0, "malformed": 0.0, "long": 0.0}
    with serving(replace(QUIET, **(plain | shape))) as (_, http):
        texts = [generate(http, str(i)).json()["text"] for i in range(20)]
    assert all(looks(text) for text in texts)
    assert all(validate(split_parts(text)) for text in texts)


def test_the_model_writes_parts_over_the_limit_and_answers_too_short() -> None:
    with serving(replace(QUIET, long=1.0, fenced=0.0, malformed=0.0)) as (_, http):
        lists = [json.loads(generate(http, str(i)).json()["text"]) for i in range(10)]
    assert all(max(map(len, parts)) > PART_LIMIT for parts in lists)
    assert all(len(set(parts)) == len(parts) for parts in lists)  # no part twice
    with serving(replace(QUIET, short=1.0)) as (_, http):
        for i in range(10):
            with pytest.raises(InvalidText):
                validate(split_parts(generate(http, str(i)).json()["text"]))


def fates(options: Options, keys: int = 40) -> list[tuple[int, str]]:
    """What the provider answers a first request for each of `keys` keys, in reverse
    order on the gateway."""
    with serving(options) as (_, http):
        model = [generate(http, str(i)) for i in range(keys)]
        gateway = [send(http, f"{i}:0") for i in reversed(range(keys))]
    return [(r.status_code, r.text) for r in model] + [(r.status_code, "") for r in gateway]


def test_fates_are_seeded_per_key() -> None:
    options = replace(QUIET, errors=0.3, throttled=0.2, seed=11)
    first = fates(options)
    assert first == fates(options)
    assert first != fates(replace(options, seed=12))
    assert {status for status, _ in first} == {200, 429, 503}


def test_scripted_faults_answer_a_keys_requests_in_turn() -> None:
    script = {("gateway", "1:0"): (503, 429), ("llm", "5"): (429,)}
    with serving(replace(QUIET, retry_after=7, faults=script)) as (provider, http):
        gateway = [send(http, "1:0") for _ in range(4)]
        model = [generate(http, "5") for _ in range(2)]
        ledger = provider.ledger()
    assert [r.status_code for r in gateway] == [503, 429, 200, 200]
    assert gateway[1].headers["Retry-After"] == "7"
    assert gateway[3].headers["Idempotent-Replayed"] == "true"
    assert [r.status_code for r in model] == [429, 200]
    assert ledger.answers == {
        "gateway 503": 1,
        "gateway 429": 1,
        "gateway 200": 2,
        "llm 429": 1,
        "llm 200": 1,
    }
    assert [(a.key, a.replays) for a in ledger.accepted] == [("1:0", 1)]
    assert ledger.seconds[0].over_limit == 0  # a fault is no excess


def test_every_call_takes_its_latency() -> None:
    with serving(replace(QUIET, latency=(0.2, 0.25))) as (_, http):
        for answer in (send(http, "1:0"), generate(http, "1")):
            assert answer.elapsed.total_seconds() >= 0.2


def test_the_ledger_reads_the_same_over_http() -> None:
    with serving(replace(QUIET, errors=0.3, throttled=0.2, seed=3)) as (provider, http):
        for i in range(10):
            send(http, f"{i}:0")
            send(http, f"{i % 3}:0")
            generate(http, str(i % 4))
        ledger = provider.ledger()
        served = http.get("/ledger")
    assert served.status_code == 200
    assert Ledger.from_json(served.json()) == ledger
    assert provider.ledger() == ledger  # after the end too
    assert ledger.accepted and ledger.seconds and ledger.generations
    assert sum(ledger.answers.values()) == 30


def test_a_storm_answers_the_gateway_429_for_its_length_and_the_ledger_keeps_the_times() -> None:
    with serving(replace(QUIET, storm=(4, 0.4), retry_after=2)) as (provider, http):
        http.headers["User-Agent"] = "campaign-7"
        answers = []
        for i in range(12):
            answers.append(send(http, f"{i}:0").status_code)
            time.sleep(0.1)
        ledger = provider.ledger()
    # the fourth request starts the storm: 200 before it, 429 for 0.4 s from it
    assert answers[:3] == [200] * 3 and answers[3] == 429 and answers[-1] == 200
    assert 3 <= answers.count(429) <= 5
    assert len(ledger.arrivals) == 12 and list(ledger.arrivals) == sorted(ledger.arrivals)
    assert [(t.after, t.client) for t in ledger.throttles] == [(2, "campaign-7")] * answers.count(
        429
    )
    storm_start = ledger.arrivals[3]
    assert all(storm_start <= t.answered < storm_start + 0.4 + 0.05 for t in ledger.throttles)


def test_the_options_say_their_failures_once_for_every_report() -> None:
    stormy = replace(QUIET, errors=0.04, throttled=0.01, gateway_throttled=0.0, storm=(20, 1.5))
    assert stormy.failures() == (
        "4% of calls 503, 1% of the model's 429 with Retry-After: 1, the gateway's all 429 "
        "for 1.5 s from request 20 on"
    )
    plain = replace(QUIET, errors=0.05, throttled=0.02)
    assert plain.failures() == (
        "5% of calls 503, 2% of the model's 429 with Retry-After: 1 (the gateway's too)"
    )
