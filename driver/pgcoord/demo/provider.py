"""A local fake of the two providers the campaign pipeline calls: a model that writes
the messages and a WhatsApp-like gateway that sends them; slow, failing now and then,
rate limited, all seeded. It serves on 127.0.0.1 at a free port, in a thread of its own:

    with FakeProvider(Options(seed=7, gateway_limit=20)) as provider:
        handler = make_handler(provider.url, http)
        ...
        ledger = provider.ledger()  # from another process: GET {provider.url}/ledger

POST /llm/generate  {"prompt": str}, header Idempotency-Key (optional)
    200 {"text": str, "tokens": int}: a JSON list of parts, sometimes fenced in ```json,
    sometimes plain text instead, sometimes with a part over 1,000 characters or too
    short to send. A repeated key gets the same generation again, no tokens spent.
POST /gateway/messages  {"to": str, "text": 1 to 1,000 characters}, header Idempotency-Key
    200 {"id": "acc-000001", "key": str, "to": str, "accepted_at": seconds}. A repeated
    key gets the original acceptance and sends nothing; the same key with another body
    is refused (422).
GET /ledger  what the gateway accepted and how busy it was (`Ledger`, as JSON)

A repeated key is answered with the header Idempotent-Replayed: true. Every call waits
a seeded latency and may then be answered 503 or 429 with Retry-After; `Options.faults`
scripts the answers to given keys. The gateway serves at most `gateway_limit` requests
in each second of its clock (counted from its start) and answers the rest 429 at once,
with Retry-After: 1. A request without its key or with a bad body is answered 400.
A call's fate is drawn from the seed, the endpoint, its key and how often that key came
before, so a seed gives a request the same fate whatever the order of arrival.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from http import HTTPStatus
from types import TracebackType
from typing import Any

from aiohttp import web

from .parts import PART_LIMIT

START_TIMEOUT = 10.0  # seconds the server may take to start

PHRASES = (
    "Olá Ana! 🎉",
    "Your order ships today.",
    "Größere Auswahl, kleinere Preise.",
    "We kept you a seat at Friday's tasting.",
    "今週末はセール中です。",
    "Tap the link to see what's new: https://example.com/new",
    "Reply STOP to opt out.",
    "¿Te ayudamos con algo más?",
    "Thanks for being with us this year ❤️",
)


@dataclass(frozen=True, slots=True)
class Options:
    """How the fake behaves. Shares are probabilities per call or per generation."""

    seed: int = 0
    latency: tuple[float, float] = (0.02, 0.2)  # seconds every call takes, from..to
    errors: float = 0.05  # share of calls answered 503
    throttled: float = 0.02  # share of calls answered 429
    gateway_throttled: float | None = None  # ... of the gateway's, when not `throttled`
    retry_after: int = 1  # seconds, in those 429s
    # a 429 storm: (first, length): from its first-th request, for length seconds, the
    # gateway answers every request 429 with Retry-After (counted in requests, not in
    # seconds, so that a storm meets requests however slow the machine)
    storm: tuple[int, float] | None = None
    gateway_limit: int = 20  # requests the gateway serves in one second
    fenced: float = 0.3  # share of generations fenced in ```json ... ```
    malformed: float = 0.1  # ... in plain text instead of JSON
    long: float = 0.1  # ... with a part over 1,000 characters
    short: float = 0.0  # ... too short to send
    unknown: str = ""  # numbers beginning so are unknown to the gateway: 404 to them
    # scripted answers: ("gateway", "5:1") -> (503, 429) answers the first two requests
    # with that key 503 and 429 (endpoint "llm" or "gateway"; 200 leaves it unharmed)
    faults: Mapping[tuple[str, str], Sequence[int]] = field(default_factory=dict)

    def failures(self) -> str:
        """Its failures, said once for every report: "4% of calls 503, 1% of the model's
        429 with Retry-After: 1, ..."."""
        throttled = "" if self.gateway_throttled is not None else " (the gateway's too)"
        said = (
            f"{self.errors:.0%} of calls 503, {self.throttled:.0%} of the model's 429 with "
            f"Retry-After: {self.retry_after}{throttled}"
        )
        if self.unknown:
            said += f", numbers {self.unknown}... unknown to the gateway (404)"
        if self.storm is not None:
            said += (
                f", the gateway's all 429 for {self.storm[1]:g} s from request {self.storm[0]} on"
            )
        return said


@dataclass(frozen=True, slots=True)
class Acceptance:
    """A part the gateway took. `digest` hashes recipient and text, so the same part
    taken under two keys shows; `replays` counts the repeats of the key answered with
    this acceptance."""

    key: str
    id: str
    to: str
    digest: str
    accepted_at: float  # seconds since the provider started
    replays: int = 0


@dataclass(frozen=True, slots=True)
class Second:
    """One second of the gateway's clock: the requests that arrived in it, and how many
    of them were answered 429 for being over the limit."""

    second: int
    requests: int
    over_limit: int


@dataclass(frozen=True, slots=True)
class Throttle:
    """A gateway 429: when it was answered (seconds since the provider started), its
    Retry-After in seconds, and the User-Agent of the request it answered (the demo's
    worker processes send their name)."""

    answered: float
    after: int
    client: str


@dataclass(frozen=True, slots=True)
class Ledger:
    """What the provider did, as `GET /ledger` answers it."""

    gateway_limit: int
    accepted: tuple[Acceptance, ...]  # in the order taken, one per key
    seconds: tuple[Second, ...]  # the gateway's busy seconds, in order
    answers: dict[str, int]  # "gateway 503" -> how many such answers
    generations: int  # texts the model wrote (repeats of a key not counted)
    tokens: int  # tokens spent on them
    arrivals: tuple[float, ...] = ()  # when each gateway request came, in order
    throttles: tuple[Throttle, ...] = ()  # the gateway's 429s, in order
    refused: tuple[str, ...] = ()  # the keys of the parts answered 404: recipient unknown

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Ledger:
        return cls(
            data["gateway_limit"],
            tuple(Acceptance(**a) for a in data["accepted"]),
            tuple(Second(**s) for s in data["seconds"]),
            dict(data["answers"]),
            data["generations"],
            data["tokens"],
            tuple(data["arrivals"]),
            tuple(Throttle(**t) for t in data["throttles"]),
            tuple(data["refused"]),
        )


class FakeProvider:
    """The fake, served from a thread of its own while the `with` block runs."""

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or Options()
        self.url = ""
        self._start = time.monotonic()
        self._seen: Counter[tuple[str, str]] = Counter()  # requests per endpoint and key
        self._generations: dict[str, dict[str, Any]] = {}  # by key
        self._accepted: dict[str, Acceptance] = {}
        self._seconds: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0])
        self._answers: Counter[str] = Counter()
        self._arrivals: list[float] = []
        self._throttles: list[Throttle] = []
        self._storm_from: float | None = None  # when the storm began
        self._refused: list[str] = []
        self._written = 0
        self._tokens = 0
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="fake provider", daemon=True)

    def __enter__(self) -> FakeProvider:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT) or self._failed is not None:
            self.__exit__(None, None, None)
            raise RuntimeError(f"the fake provider did not start: {self._failed!r}")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(START_TIMEOUT)

    def ledger(self) -> Ledger:
        """What the provider did so far, taken in its own thread while it runs (so it is
        consistent); after the `with` block, what it did in all."""
        if self._loop is not None and self._thread.is_alive():
            taken = asyncio.run_coroutine_threadsafe(self._ledger(), self._loop)
            return taken.result(START_TIMEOUT)
        return self._snapshot()

    # the server -------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # told to the thread that waits in __enter__
            self._failed = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.add_routes(
            [
                web.post("/llm/generate", self._generate),
                web.post("/gateway/messages", self._send),
                web.get("/ledger", self._read_ledger),
            ]
        )
        # requests still waiting out their latency at the end are cut short
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            self.url = f"http://{host}:{port}"
            self._start = time.monotonic()
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def _clock(self) -> float:
        return time.monotonic() - self._start

    def on_clock(self, instant: float) -> float:
        """`instant`, a time.monotonic() of any process of this machine, on the
        provider's clock (the ledger's seconds since it started)."""
        return instant - self._start

    async def _fate(self, endpoint: str, key: str) -> tuple[int, random.Random]:
        """Wait the call's latency; its status, and its draw for anything else random."""
        n = self._seen[endpoint, key]
        self._seen[endpoint, key] += 1
        draw = random.Random(f"{self.options.seed}/{endpoint}/{key}/{n}")
        await asyncio.sleep(draw.uniform(*self.options.latency))
        script = self.options.faults.get((endpoint, key), ())
        if n < len(script):
            return script[n], draw
        roll = draw.random()
        if roll < self.options.errors:
            return 503, draw
        throttled = self.options.throttled
        if endpoint == "gateway" and self.options.gateway_throttled is not None:
            throttled = self.options.gateway_throttled
        return (429 if roll < self.options.errors + throttled else 200), draw

    def _answer(
        self,
        endpoint: str,
        status: int,
        body: Mapping[str, Any],
        *,
        replayed: bool = False,
        retry_after: int | None = None,
        client: str = "",
    ) -> web.Response:
        """The answer; a gateway's 429 (`retry_after` given) is kept with the `client`
        it answered."""
        self._answers[f"{endpoint} {status}"] += 1
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
            if endpoint == "gateway":
                self._throttles.append(Throttle(round(self._clock(), 3), retry_after, client))
        return web.json_response(body, status=status, headers=headers)

    def _fault(self, endpoint: str, status: int, client: str = "") -> web.Response:
        """A drawn or scripted failure; a 429 says when to come back."""
        wait = self.options.retry_after if status == 429 else None
        body = {"error": HTTPStatus(status).phrase}
        return self._answer(endpoint, status, body, retry_after=wait, client=client)

    def _storming(self, now: float) -> bool:
        """Whether the gateway's request arriving at `now` is in the storm."""
        storm = self.options.storm
        if storm is None or len(self._arrivals) < storm[0]:
            return False
        if self._storm_from is None:
            self._storm_from = now
        return now - self._storm_from < storm[1]

    async def _generate(self, request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key", "")
        prompt = (await _body(request)).get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return self._answer("llm", 400, {"error": "prompt: a text is required"})
        status, draw = await self._fate("llm", key)
        if status != 200:
            return self._fault("llm", status)
        if key in self._generations:
            return self._answer("llm", 200, self._generations[key], replayed=True)
        text = self._write(draw)
        tokens = (len(prompt) + len(text)) // 4 + 1  # about four characters a token
        generation = {"text": text, "tokens": tokens}
        if key:
            self._generations[key] = generation
        self._written += 1
        self._tokens += tokens
        return self._answer("llm", 200, generation)

    def _write(self, draw: random.Random) -> str:
        """A model's answer: parts as JSON, fenced or not, or plain text."""
        if draw.random() < self.options.short:
            parts = [draw.choice(("ok", " ", "Hi!"))]
        else:  # up to nine phrases, none twice, so no two parts are the same
            sizes = [draw.randint(1, 3) for _ in range(draw.randint(1, 3))]
            phrases = iter(draw.sample(PHRASES, sum(sizes)))
            parts = [" ".join(next(phrases) for _ in range(size)) for size in sizes]
            if draw.random() < self.options.long:
                parts.append(" ".join(draw.choices(PHRASES, k=60)))
        shape = draw.random()
        if shape < self.options.malformed:
            return "\n\n".join(parts)
        if shape < self.options.malformed + self.options.fenced:
            return f"```json\n{json.dumps(parts, ensure_ascii=False, indent=2)}\n```"
        return json.dumps(parts, ensure_ascii=False)

    async def _send(self, request: web.Request) -> web.Response:
        now = self._clock()
        self._arrivals.append(round(now, 3))
        second = self._seconds[int(now)]
        second[0] += 1
        client = request.headers.get("User-Agent", "")
        if self._storming(now):
            await asyncio.sleep(random.Random(now).uniform(*self.options.latency))
            body = {"error": "a 429 storm: too many requests"}
            wait = self.options.retry_after
            return self._answer("gateway", 429, body, retry_after=wait, client=client)
        if second[0] > self.options.gateway_limit:
            second[1] += 1
            # the next second, and with it room, begins within one
            body = {"error": "over the gateway's rate limit"}
            return self._answer("gateway", 429, body, retry_after=1, client=client)
        key = request.headers.get("Idempotency-Key", "")
        body = await _body(request)
        to, text = body.get("to"), body.get("text")
        if not (key and isinstance(to, str) and to and isinstance(text, str)) or not (
            0 < len(text) <= PART_LIMIT
        ):
            return self._answer(
                "gateway",
                400,
                {"error": f"Idempotency-Key, to and text (1 to {PART_LIMIT} characters) needed"},
            )
        status, _ = await self._fate("gateway", key)
        if status != 200:
            return self._fault("gateway", status, client)
        if self.options.unknown and to.startswith(self.options.unknown):
            self._refused.append(key)
            return self._answer("gateway", 404, {"error": f"{to} is not a WhatsApp number"})
        digest = hashlib.sha256(f"{to}\n{text}".encode()).hexdigest()
        taken = self._accepted.get(key)
        if taken is None:
            taken = Acceptance(
                key, f"acc-{len(self._accepted) + 1:06d}", to, digest, round(self._clock(), 3)
            )
            self._accepted[key] = taken
            return self._answer("gateway", 200, _acceptance(taken))
        if taken.digest != digest:
            return self._answer("gateway", 422, {"error": f"key {key} was used for another part"})
        self._accepted[key] = replace(taken, replays=taken.replays + 1)
        return self._answer("gateway", 200, _acceptance(taken), replayed=True)

    async def _ledger(self) -> Ledger:
        return self._snapshot()

    def _snapshot(self) -> Ledger:
        return Ledger(
            self.options.gateway_limit,
            tuple(self._accepted.values()),
            tuple(Second(s, *counts) for s, counts in sorted(self._seconds.items())),
            dict(self._answers),
            self._written,
            self._tokens,
            tuple(self._arrivals),
            tuple(self._throttles),
            tuple(self._refused),
        )

    async def _read_ledger(self, request: web.Request) -> web.Response:
        return web.json_response(self._snapshot().to_json())


def _acceptance(taken: Acceptance) -> dict[str, Any]:
    """The gateway's answer for a part it took: the same on every repeat of its key."""
    return {"id": taken.id, "key": taken.key, "to": taken.to, "accepted_at": taken.accepted_at}


async def _body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or {} when it sent none."""
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
