"""The storm's plan: which conversation sends which messages when, and which of them the
provider delivers again. Drawn from a seeded RNG, so the same seed plays the same storm."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

DEBOUNCE = timedelta(milliseconds=400)
MAX_WAIT = timedelta(seconds=2)

PHRASES = (
    "hi",
    "hello?",
    "are you open today?",
    "I need to change my order",
    "it's order 4471",
    "the blue one, not the red",
    "wait",
    "one more thing",
    "can you call me back?",
    "thanks!",
    "ok",
    "where is my parcel",
)


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a burst, sent `offset` seconds after the burst starts. `retry`:
    None, "double" (a second delivery at the same instant from another connection) or
    "late" (the provider delivers it again `retry_after` seconds after the burst starts)."""

    provider_message_id: str
    body: str
    offset: float
    retry: str | None = None
    retry_after: float = 0.0


@dataclass(frozen=True, slots=True)
class PlannedBurst:
    number: int
    conversation_key: str
    at: float  # seconds after the storm starts
    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    run: str
    provider: str
    prefix: str  # of every conversation key of the storm
    conversations: int
    bursts: tuple[PlannedBurst, ...]
    debounce: timedelta = DEBOUNCE
    max_wait: timedelta = MAX_WAIT

    @property
    def messages(self) -> int:
        return sum(len(b.messages) for b in self.bursts)

    def retries(self, kind: str) -> int:
        return sum(m.retry == kind for b in self.bursts for m in b.messages)

    @property
    def span(self) -> float:
        """Seconds from the first message to the last delivery, retries included."""
        return max(
            max(b.at + m.offset, b.at + m.retry_after) for b in self.bursts for m in b.messages
        )


def make_plan(
    run: str,
    conversations: int,
    *,
    seed: int,
    span: float = 2.5,
    gap: float = 1.2,
    second_burst: float = 0.4,
    retry_share: float = 0.3,
    double_share: float = 0.4,
    debounce: timedelta = DEBOUNCE,
    max_wait: timedelta = MAX_WAIT,
) -> Plan:
    """A storm over `span` seconds: each conversation sends one burst, or (with
    probability `second_burst`) two at least `gap` seconds apart; a burst is 1 to 5
    messages typed within a few tens of milliseconds. A `retry_share` of the messages
    are delivered again by the provider: `double_share` of those at the same instant from
    a second connection, the rest 0.3 to 1.2 s later."""
    if conversations < 1:
        raise ValueError(f"conversations must be at least 1, got {conversations}")
    rng = random.Random(seed)
    prefix = f"wa:{run}:"
    drafts: list[tuple[float, str, tuple[Message, ...]]] = []
    sent = 0
    for c in range(conversations):
        key = f"{prefix}+4915{c:07d}"
        for at in _starts(rng, span, gap, second_burst):
            messages = _messages(rng, run, sent + 1, retry_share, double_share)
            sent += len(messages)
            drafts.append((at, key, messages))
    drafts.sort(key=lambda d: (d[0], d[1]))
    bursts = tuple(PlannedBurst(i, key, at, msgs) for i, (at, key, msgs) in enumerate(drafts))
    return Plan(run, f"storm-{run}", prefix, conversations, bursts, debounce, max_wait)


def _starts(rng: random.Random, span: float, gap: float, second_burst: float) -> list[float]:
    """When a conversation's bursts start: one, or two at least `gap` apart."""
    if rng.random() < second_burst and span > gap:
        first = rng.uniform(0, span - gap)
        return [first, first + gap + rng.uniform(0, span - gap - first)]
    return [rng.uniform(0, span)]


def _messages(
    rng: random.Random, run: str, first: int, retry_share: float, double_share: float
) -> tuple[Message, ...]:
    """One burst: 1 to 5 messages, numbered from `first` across the storm; a
    `retry_share` of them delivered again (see make_plan)."""
    messages: list[Message] = []
    offset = 0.0
    for n in range(first, first + rng.randint(1, 5)):
        retry: str | None = None
        retry_after = 0.0
        if rng.random() < retry_share:
            retry = "double" if rng.random() < double_share else "late"
            if retry == "late":
                retry_after = offset + rng.uniform(0.3, 1.2)
        body = f"{rng.choice(PHRASES)} ({n})"
        messages.append(Message(f"wamid.{run}.{n:05d}", body, offset, retry, retry_after))
        offset += rng.uniform(0.0, 0.03)
    return tuple(messages)
