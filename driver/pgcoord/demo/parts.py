"""From a model's answer to WhatsApp parts: the half of the campaign pipeline
(`pipeline`) that does no I/O.

The model is asked for a JSON list of strings. Its answer may come fenced in
```json ... ```, or not as JSON at all: `split_parts` never fails on it; a list of
strings gives the parts, anything else is sent as one part. A part over PART_LIMIT
characters is cut further at word boundaries. `validate` refuses an answer with too
little to say.
"""

from __future__ import annotations

import json
import re
import unicodedata

PART_LIMIT = 1000  # characters one gateway message may hold
MIN_TEXT = 10  # characters a campaign message must hold, whitespace around parts not counted

# the first fenced block, ```json or bare; a fence the model never closed runs to the end
_FENCE = re.compile(r"```(?:json)?(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_PART_KEY = re.compile(r"(\d+):\d+", re.ASCII)
_JOINERS = frozenset("\u200d\ufe0e\ufe0f")  # zero-width joiner, variation selectors


class InvalidText(ValueError):
    """The model's answer holds too little to send."""


def part_key(message_id: int, index: int) -> str:
    """The gateway's idempotency key of part `index` of a message: the same on every try
    of the message, so a part sent before is answered with its original acceptance
    instead of being sent again."""
    return f"{message_id}:{index}"


def message_of(key: str) -> int | None:
    """The message whose part `key` names (see part_key); None for another key."""
    named = _PART_KEY.fullmatch(key)
    return int(named.group(1)) if named else None


def split_parts(answer: str) -> list[str]:
    """The parts to send, in order: each trimmed, none blank, none over PART_LIMIT."""
    fenced = _FENCE.search(answer)
    text = (fenced.group(1) if fenced else answer).strip()
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, list) and all(isinstance(p, str) for p in parsed):
        pieces: list[str] = parsed
    else:
        pieces = [parsed if isinstance(parsed, str) else text]
    return [cut for piece in pieces for cut in fit(piece.strip()) if cut]


def validate(parts: list[str]) -> list[str]:
    """`parts`, when they hold at least MIN_TEXT characters; else InvalidText."""
    size = sum(map(len, parts))
    if size < MIN_TEXT:
        raise InvalidText(
            f"the model's answer is too short to send: {size} characters after "
            f"trimming, at least {MIN_TEXT} needed"
        )
    return parts


def fit(text: str, limit: int = PART_LIMIT) -> list[str]:
    """`text` in pieces of at most `limit` characters, cut at the last whitespace that
    fits; a word longer than `limit` is cut where no mark or joiner clings to the
    character before."""
    pieces: list[str] = []
    while len(text) > limit:
        cut = next((i for i in range(limit, 0, -1) if text[i].isspace()), None)
        if cut is None:
            cut = limit
            while cut > 1 and _clings(text[cut - 1], text[cut]):
                cut -= 1
        pieces.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    pieces.append(text)
    return pieces


def _clings(before: str, char: str) -> bool:
    """Whether `char` belongs to the same visible character as `before`: a combining
    mark, a joiner or variation selector, a skin tone, or anything after a joiner."""
    return (
        unicodedata.category(char).startswith("M")
        or char in _JOINERS
        or before == "\u200d"
        or "\U0001f3fb" <= char <= "\U0001f3ff"
    )
