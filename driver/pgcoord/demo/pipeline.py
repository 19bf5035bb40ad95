"""A WhatsApp campaign sender, rebuilt as a pgcoord campaign handler.

The edge function it replaces took one message at a time, waited on the model and the
WhatsApp gateway with no timeout, gave up at once on HTTP 429, never retried and kept
no metrics. Here a `CampaignWorker` claims, runs handlers side by side, retries and
paces the fleet; the handler does one message's work and returns how it went:

    async with httpx.AsyncClient() as http:  # one connection pool for the process
        handler = make_handler("http://127.0.0.1:8080", http)
        await CampaignWorker(handler, database_url, concurrency=8, timeout=90).run()

For each message the handler asks the model for the text (POST /llm/generate, at most
30 s, keyed by the message id so that a retry gets the same text back), splits it into
parts (`parts`), and sends them in order (POST /gateway/messages, at most 10 s each),
each with the idempotency key "{message_id}:{index}": on a retry, the parts the gateway
already took are answered with their original acceptance, not sent twice. It returns
the metrics stored with the message. The worker's own `timeout` should leave room for
all of that (30 s + 10 s a part), or it cancels a slow message before the handler can
say which call was slow.

HTTP 429 raises `RateLimited(Retry-After)`: the worker snoozes the message without
spending a try and pauses the shared rate key, so the whole fleet waits (the worker's
`rate` key; a gateway budget paced per request pauses its own key, `pause`). The
gateway's refusal of the message itself (400, 404, 410, 422: a recipient it does not
know, a part it will not take) raises `FailForGood`: no retry can mend it, and each would
cost a generation, so the message fails at once with the gateway's answer kept. Anything
else (a 5xx, a 401 or 403 of a wrong key, no answer in time, an answer too short to
send) raises, and the worker retries the message after the run's backoff, keeping the
error if its last try fails too.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from pgcoord import CampaignMessage, FailForGood, RateLimited
from pgcoord.config import RATE_PAUSE_MAX

from .parts import part_key, split_parts, validate

GENERATE_TIMEOUT = 30.0  # seconds for the model's answer
SEND_TIMEOUT = 10.0  # seconds for the gateway's answer, per part
RETRY_AFTER = 1.0  # seconds to wait after a 429 that says nothing usable
MAX_RETRY_AFTER = RATE_PAUSE_MAX.total_seconds()  # the longest pause of a rate key
# the gateway's answers refusing the message itself, which no retry mends
REFUSED = frozenset({400, 404, 410, 422})

Handler = Callable[[CampaignMessage], Awaitable[dict[str, Any]]]
Pace = Callable[[], Awaitable[object]]
Pause = Callable[[float], Awaitable[object]]


class ProviderError(Exception):
    """A provider's call failed: an error status, no answer in time, or an answer that
    is not what was asked for."""


def make_handler(
    base_url: str,
    http: httpx.AsyncClient,
    *,
    generate_timeout: float = GENERATE_TIMEOUT,
    send_timeout: float = SEND_TIMEOUT,
    pace: Pace | None = None,
    pause: Pause | None = None,
) -> Handler:
    """The campaign handler calling the model and the gateway at `base_url` through
    `http`, one client (and so one connection pool) shared by every handler of a
    process. `pace`, when given, is awaited before each request to the gateway: a
    budget counted in requests (say, waiting on `rate_acquire`) where the worker's
    counts messages, and a message may have several parts. `pause`, given with it, is
    awaited with the seconds of a gateway 429's Retry-After before RateLimited goes to
    the worker: that budget's key paused (`rate_pause`), so the whole fleet waits, as
    the worker's own rate key is when it has one."""
    base = base_url.rstrip("/")

    async def send_campaign_message(message: CampaignMessage) -> dict[str, Any]:
        start = time.perf_counter()
        answer = await call(
            http,
            f"{base}/llm/generate",
            {"prompt": prompt(message)},
            key=str(message.message_id),
            timeout=generate_timeout,
            what="the model",
        )
        text, tokens = generation(answer)
        generated = time.perf_counter()
        parts = validate(split_parts(text))
        replayed = 0
        for index, part in enumerate(parts):
            if pace is not None:
                await pace()
            try:
                accepted = await call(
                    http,
                    f"{base}/gateway/messages",
                    {"to": message.recipient, "text": part},
                    key=part_key(message.message_id, index),
                    timeout=send_timeout,
                    what=f"the gateway (part {index + 1} of {len(parts)})",
                    refused=REFUSED,
                )
            except RateLimited as limited:
                if pause is not None:
                    await pause(limited.after.total_seconds())
                raise
            replayed += accepted.headers.get("Idempotent-Replayed") == "true"
        return {
            "tokens": tokens,
            "generate_ms": round((generated - start) * 1000),
            "send_ms": round((time.perf_counter() - generated) * 1000),  # pace included
            "parts": len(parts),
            "replayed": replayed,  # parts the gateway had taken on an earlier try
        }

    return send_campaign_message


def prompt(message: CampaignMessage) -> str:
    """What the model is asked to write for `message`."""
    payload = json.dumps(message.payload, ensure_ascii=False, sort_keys=True)
    return (
        f"Write a WhatsApp message to {message.recipient} for this campaign, "
        f"as a JSON list of parts: {payload}"
    )


async def call(
    http: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    *,
    key: str,
    timeout: float,
    what: str,
    refused: frozenset[int] = frozenset(),
) -> httpx.Response:
    """POST `body` to `url` with an idempotency key, within `timeout` seconds all told:
    the answer if it is a success, RateLimited for a 429, FailForGood for a status in
    `refused`, else ProviderError."""
    try:
        # one deadline for the whole call: a connection, the request, the answer
        async with asyncio.timeout(timeout):
            response = await http.post(
                url, json=body, headers={"Idempotency-Key": key}, timeout=None
            )
    except TimeoutError:
        raise ProviderError(f"{what}: no answer within {timeout:g} s") from None
    except httpx.RequestError as exc:
        raise ProviderError(f"{what}: {type(exc).__name__}: {exc}") from exc
    if response.status_code == 429:
        raise RateLimited(retry_after(response), f"{what} answered 429 Too Many Requests")
    if response.status_code in refused:
        raise FailForGood(f"{what} answered {response.status_code}: {response.text[:200]}")
    if not response.is_success:
        raise ProviderError(f"{what} answered {response.status_code}: {response.text[:200]}")
    return response


def generation(answer: httpx.Response) -> tuple[str, int]:
    """The text and the tokens spent, from the model's answer."""
    try:
        body = answer.json()
        return str(body["text"]), int(body["tokens"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ProviderError(
            f"the model's answer has no text and tokens: {answer.text[:200]}"
        ) from exc


def retry_after(response: httpx.Response) -> float:
    """Seconds to wait, from a 429's Retry-After (seconds or an HTTP date), at most
    MAX_RETRY_AFTER; RETRY_AFTER when it has neither."""
    value = response.headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return RETRY_AFTER
        seconds = (when.replace(tzinfo=when.tzinfo or UTC) - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER) if math.isfinite(seconds) else RETRY_AFTER
