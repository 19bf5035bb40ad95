"""The JSON arguments of the calls (a message's payload, a campaign message's metrics,
the items of an enqueue), encoded once, when the call is made: a value JSON or
PostgreSQL cannot hold is reported then, naming its argument, instead of surfacing as a
driver or server error while the statement runs.

Dates and times go as ISO text and timedeltas as seconds, in every JSON argument alike. A
datetime without a tzinfo is read as Python reads it, in this process's local time (what
`datetime.now()` gives), and goes with its offset: the server would otherwise read it in
its session's time zone, hours away from what was meant when the two differ.
NaN and the infinities have no JSON form (ValueError), nor have a NUL character and a
lone surrogate in a PostgreSQL jsonb (ValueError); an object of a type with no JSON form
raises TypeError. Both are `Unencodable`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb


class Unencodable(Exception):
    """A JSON argument that JSON or PostgreSQL cannot hold; raised as UnencodableValue
    (a ValueError) or UnencodableType (a TypeError), before anything is sent."""


class UnencodableValue(Unencodable, ValueError):
    """NaN, an infinity, a NUL character, a lone surrogate."""


class UnencodableType(Unencodable, TypeError):
    """An object of a type with no JSON form."""


def jsonb(value: Any, argument: str) -> Jsonb:
    """`value` as a jsonb parameter, encoded now; `argument` ("message_ingest: payload")
    is what an error names."""
    try:
        text = _encode(value)
    except Exception as exc:  # no JSON form, too deep, or the object's own code raised
        said = plain(str(exc), 200)  # an object's own repr or error may hold anything
        if "Out of range float" in said:  # allow_nan=False
            raise UnencodableValue(
                f"{argument}: {said} (NaN and infinities have no JSON form)"
            ) from None
        if not isinstance(exc, TypeError):
            said = f"{type(exc).__name__}: {said}"
        raise UnencodableType(f"{argument}: {said}") from None
    if "\\u0000" in text or "\\ud" in text:  # escapes of a NUL, or of UTF-16 halves
        said = _unholdable(text)
        if said:
            raise UnencodableValue(f"{argument}: a text in it holds {said}, which jsonb cannot")
    return Jsonb(value, dumps=lambda _: text)


def _unholdable(text: str) -> str:
    """What PostgreSQL's jsonb cannot hold in JSON `text` that has escapes which may be
    a NUL or UTF-16 surrogates: its texts read back (a pair of halves is one character,
    a literal backslash is no escape) and encoded as UTF-8. "" when none."""
    for found in strings(json.loads(text)):
        if "\x00" in found:
            return "a NUL character"
        try:
            found.encode("utf-8")
        except UnicodeEncodeError:
            return "a lone surrogate (half of a broken UTF-16 pair)"
    return ""


def strings(value: Any, *, keys: bool = True) -> Iterator[str]:
    """Every string of a decoded JSON value, however deep; its objects' keys too, unless
    `keys` is false."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from strings(item, keys=keys)
    elif isinstance(value, dict):
        for key, item in value.items():
            if keys:
                yield key
            yield from strings(item, keys=keys)


def plain(text: str, limit: int) -> str:
    """`text` for an error message: control characters and non-ASCII escaped."""
    return text.encode("unicode_escape").decode("ascii")[:limit]


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.utcoffset() is not None else value.astimezone()).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError(f"{type(value).__name__} {repr(value)[:60]} has no JSON form")


# one encoder for every call: json.dumps builds one per call when given options
_encode = json.JSONEncoder(default=_default, separators=(",", ":"), allow_nan=False).encode
