"""From a model's answer to WhatsApp parts: the half of the campaign pipeline
(`pipeline`) that does no I/O.

The model is asked for a JSON list of strings. `split_parts` reads the parts from the
answer when it is JSON as a whole; else from its one fenced block that is a JSON list or
object (```json, ```jsonc, ``` json, four backticks...), or from a JSON list or object set
in prose, either only with the model's chatter around it ("Here you go: [...]"). An object
holding one list of strings, or one string, and no other text gives them too (`{"parts":
[...]}`, `{"message": "..."}`). An answer that is not JSON at all is the safe fallback: it
goes as one part, a fenced answer without its fences. What would put JSON syntax before a
customer, or drop some of the text, is refused as InvalidText instead: JSON with no list
of texts in it (`{"a": 1}`, `["Hi", 42]`), JSON that does not parse (cut off, a trailing
comma, single quotes), JSON inside JSON, two JSON blocks, or prose around JSON that is
more than chatter. A part over PART_LIMIT characters is cut further at word boundaries;
parts with nothing visible are dropped, and characters that cannot be sent (a lone
surrogate) removed. `validate` refuses an answer with too little to say.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from ..jsonb import strings

PART_LIMIT = 1000  # characters one gateway message may hold
MIN_TEXT = 10  # characters a campaign message must hold, whitespace around parts not counted

# a fenced block: three backticks or more, a language tag on the fence's own line (or no
# tag), its text, then the same fence; a fence the model never closed runs to the end
_FENCE = re.compile(r"(`{3,})(?:[ \t]*[\w+.-]+[ \t]*\n|[ \t]*\n?)(.*?)(?:\1|\Z)", re.DOTALL)
# how a JSON list of strings or an object begins (single quotes too, as models write
# them): a text that holds one and is no JSON holds broken JSON
_JSONISH = re.compile(r"\[\s*[\"'\[{]|\{\s*[\"'}]")
_NOTHING = object()  # no JSON (a JSON null is None)
# characters of chatter the model may write before its JSON ("Sure!"; a line that ends
# with a colon, "Here are the parts for Ana:", may be twice as long) and after it
# ("Enjoy!", "Hope this helps!")
CHATTER = 40
CHATTER_AFTER = 24
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
    """The parts to send, in order: each trimmed, none without a visible character, none
    over PART_LIMIT. InvalidText when the answer holds JSON it cannot take texts from
    without sending JSON syntax or dropping text."""
    text = answer.strip()
    whole = _parsed(text)
    if whole is not _NOTHING:  # JSON as a whole: what it holds, and nothing else
        return _parts_of(whole, text)
    fences = list(_FENCE.finditer(text))
    blocks = [(f, _parsed(f.group(2).strip())) for f in fences]
    blocks = [(f, inside) for f, inside in blocks if isinstance(inside, list | dict)]
    if len(blocks) > 1:
        raise InvalidText(f"the model's answer holds more than one JSON block: {text:.80}")
    if blocks:
        [(fence, inside)] = blocks
        return _in_prose(inside, text, fence.start(), fence.end())
    found = _json_in_prose(text)
    if found is not None:
        parsed, start, end = found
        return _in_prose(parsed, text, start, end)
    if len(fences) == 1 and fences[0].start() == 0 and fences[0].end() == len(text):
        text = fences[0].group(2).strip()  # the whole answer fenced: its text
    if _JSONISH.search(text):
        raise InvalidText(f"the model's answer holds JSON that does not parse: {text:.80}")
    return _cut(text)


def _json_in_prose(text: str) -> tuple[Any, int, int] | None:
    """The JSON list or object set in prose, with where it begins and ends: from the
    first bracket or brace to the last of its kind; None when there is none."""
    starts = [at for at in (text.find("["), text.find("{")) if at >= 0]
    if not starts:
        return None
    start = min(starts)
    end = text.rfind("]" if text[start] == "[" else "}") + 1
    parsed = _parsed(text[start:end]) if end > start else _NOTHING
    if isinstance(parsed, list | dict) and any(True for _ in strings(parsed, keys=False)):
        return parsed, start, end
    return None  # no JSON, or none with text in it ("[1]", "[]"): prose


def _in_prose(parsed: Any, text: str, start: int, end: int) -> list[str]:
    """The parts of JSON found in `text` between `start` and `end`, when what is around
    it is the model's chatter: a few words before it ("Sure!") or a line that ends with
    a colon ("Here are the parts:"), and a few words after it ("Enjoy!"); else the prose
    is the message's own, and InvalidText."""
    before, after = text[:start].strip(), text[end:].strip()
    chatter = len(before) <= CHATTER or (before.endswith(":") and len(before) <= 2 * CHATTER)
    if chatter and len(after) <= CHATTER_AFTER:
        return _parts_of(parsed, text)
    raise InvalidText(f"the model's answer mixes prose with JSON: {text:.80}")


def _parsed(text: str) -> Any:
    """`text` as JSON; _NOTHING when it is not JSON."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _NOTHING


def _parts_of(parsed: Any, answer: str) -> list[str]:
    texts = _texts(parsed)
    if texts is None:
        raise InvalidText(f"the model's answer is JSON with no list of texts in it: {answer:.80}")
    if any(isinstance(_parsed(t.strip()), list | dict) for t in texts):
        raise InvalidText(f"the model's answer is JSON inside JSON: {answer:.80}")
    return [cut for text in texts for cut in _cut(text)]


def _cut(text: str) -> list[str]:
    return [cut for cut in fit(_sendable(text)) if _visible(cut)]


def _texts(parsed: Any) -> list[str] | None:
    """The texts a parsed JSON answer holds: a list of strings, a string, or an object
    holding one of them and no other text, nested or not (`{"parts": [...]}`,
    `{"message": "..."}`); None for anything else."""
    if isinstance(parsed, str):
        return [parsed]
    if isinstance(parsed, list):
        return parsed if all(isinstance(p, str) for p in parsed) else None
    if isinstance(parsed, dict):
        holding = [v for v in parsed.values() if any(True for _ in strings(v, keys=False))]
        if len(holding) == 1 and isinstance(holding[0], list | str):
            return _texts(holding[0])
    return None


def _sendable(piece: str) -> str:
    """`piece` trimmed, without what UTF-8 cannot carry (a lone surrogate of a broken
    escape, which the HTTP client would refuse on every try)."""
    return piece.encode("utf-8", "ignore").decode("utf-8").strip()


def _visible(text: str) -> bool:
    return any(_shows(char) for char in text)


def _shows(char: str) -> bool:
    """Whether `char` shows: not whitespace, nor a format character (a zero-width space
    or joiner)."""
    return not char.isspace() and unicodedata.category(char) != "Cf"


def validate(parts: list[str]) -> list[str]:
    """`parts`, when they hold at least MIN_TEXT characters, trimmed and not counting
    format characters (a zero-width space or joiner shows nothing); else InvalidText."""
    size = sum(unicodedata.category(char) != "Cf" for part in parts for char in part.strip())
    if size < MIN_TEXT:
        raise InvalidText(
            f"the model's answer is too short to send: {size} characters after "
            f"trimming, at least {MIN_TEXT} needed"
        )
    return parts


def fit(text: str, limit: int = PART_LIMIT) -> list[str]:
    """`text` in pieces of at most `limit` characters, cut at the last whitespace that
    fits; a word longer than `limit` is cut where no mark or joiner clings to the
    character before, nor a flag's second letter to its first (in the last half of the
    piece; past that, at `limit`)."""
    pieces: list[str] = []
    while len(text) > limit:
        cut = next((i for i in range(limit, 0, -1) if text[i].isspace()), None)
        if cut is None:
            cut = limit
            while cut > limit // 2 and (_clings(text[cut - 1], text[cut]) or _in_flag(text, cut)):
                cut -= 1
            if cut == limit // 2:
                cut = limit  # no visible character ends in the last half: cut through
        pieces.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    pieces.append(text)
    return pieces


def _in_flag(text: str, cut: int) -> bool:
    """Whether `cut` falls between the two regional indicators of one flag: the letters
    pair up from the first of their run."""
    run = 0
    while cut - run > 0 and _regional(text[cut - run - 1]):
        run += 1
    return run % 2 == 1 and _regional(text[cut])


def _regional(char: str) -> bool:
    return "\U0001f1e6" <= char <= "\U0001f1ff"


def _clings(before: str, char: str) -> bool:
    """Whether `char` belongs to the same visible character as `before`: a combining
    mark, a joiner or variation selector, a skin tone, or anything after a joiner."""
    return (
        unicodedata.category(char).startswith("M")
        or char in _JOINERS
        or before == "\u200d"
        or "\U0001f3fb" <= char <= "\U0001f3ff"
    )
