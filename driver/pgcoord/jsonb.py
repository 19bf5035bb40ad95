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
    except ValueError as exc:  # allow_nan=False
        raise UnencodableValue(
            f"{argument}: {exc} (NaN and infinities have no JSON form)"
        ) from None
    except (TypeError, RecursionError) as exc:
        raise UnencodableType(f"{argument}: {exc}") from None
    if "\\u0000" in text:
        raise UnencodableValue(
            f"{argument}: a text in it holds a NUL character, which jsonb cannot"
        )
    if "\\ud" in text and _lone_surrogate(value):  # escapes of UTF-16 pairs, or lone halves
        raise UnencodableValue(
            f"{argument}: a text in it holds a lone surrogate (half of a broken UTF-16 "
            "pair), which jsonb cannot"
        )
    return Jsonb(value, dumps=lambda _: text)


def _lone_surrogate(value: Any) -> bool:
    try:
        _encode_unicode(value).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.utcoffset() is not None else value.astimezone()).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError(f"{type(value).__name__} {value!r:.60} has no JSON form")


# one encoder for every call: json.dumps builds one per call when given options
_encode = json.JSONEncoder(default=_default, separators=(",", ":"), allow_nan=False).encode
_encode_unicode = json.JSONEncoder(
    default=_default, separators=(",", ":"), allow_nan=False, ensure_ascii=False
).encode
