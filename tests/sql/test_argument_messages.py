"""The message of a bad argument names it, says what it must be, and shows the value
visibly: a text in double quotes (an empty or blank one too), other values as the server
prints them, and a value longer than 80 characters cut there and marked with ..."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from sqlkit import Conn, call


def message_of(conn: Conn, function: str, arguments: dict[str, Any]) -> str:
    with pytest.raises(psycopg.Error) as raised:
        call(conn, function, arguments)
    assert raised.value.sqlstate in {"22004", "22023"}
    return raised.value.diag.message_primary or ""


LOCK = {"p_key": "k", "p_owner": "o"}
INGEST = {"p_provider": "wa", "p_provider_message_id": "m", "p_conversation_key": "c"}
INGEST |= {"p_body": "b"}


@pytest.mark.parametrize(
    ("function", "arguments", "message"),
    [
        ("lock_acquire", LOCK | {"p_key": ""}, 'p_key must be a text of 1 to 1024 bytes, got ""'),
        (
            "lock_acquire",
            LOCK | {"p_key": "k" * 1025},
            'p_key must be a text of 1 to 1024 bytes, got "' + "k" * 80 + '"...',
        ),
        (
            "lock_acquire",
            LOCK | {"p_ttl": "-1 second"},
            "p_ttl must be an interval above 0 and at most 1 day, with no months, got -00:00:01",
        ),
        ("buffer_claim", {"p_worker": "w", "p_limit": 0}, "p_limit must be from 1 to 10000, got 0"),
        (
            "rate_acquire",
            {"p_key": "k", "p_per_second": float("nan"), "p_burst": 1},
            "p_per_second must be a number above 0 and at most 1000000, got NaN",
        ),
        (
            "rate_acquire",
            {"p_key": "k", "p_per_second": 1.0, "p_burst": 2, "p_cost": 3},
            "p_cost must be from 1 to p_burst (2), got 3",
        ),
        ("lock_acquire", LOCK | {"p_owner": None}, "p_owner must not be NULL"),
        # a JSON value is shown as JSON (its own quotes), cut like any other value
        (
            "message_ingest",
            INGEST | {"p_payload": '"' + "a" * 78 + '"'},
            'p_payload must be a JSON object, got "' + "a" * 78 + '"',
        ),
        (
            "message_ingest",
            INGEST | {"p_payload": "[" + "1, " * 40 + "1]"},
            "p_payload must be a JSON object, got [" + "1, " * 26 + "1...",
        ),
    ],
    ids=[
        "empty-text",
        "cut-text",
        "interval",
        "integer",
        "nan",
        "cost-over-burst",
        "null",
        "json-of-80",
        "cut-json",
    ],
)
def test_the_message_shows_the_value(
    conn: Conn, function: str, arguments: dict[str, Any], message: str
) -> None:
    assert message_of(conn, function, arguments) == message


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("' '::text", '" "'),
        ("''::varchar", '""'),
        ("repeat('x', 80)", '"' + "x" * 80 + '"'),
        ("repeat('x', 81)", '"' + "x" * 80 + '"...'),
        ("repeat('é', 81)", '"' + "é" * 80 + '"...'),
        ("12345::bigint", "12345"),
    ],
)
def test_values_are_shown_quoted_and_cut(conn: Conn, value: str, shown: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as raised:
        conn.execute(f"SELECT pgcoord.raise_bad_argument('p_x', {value}, 'good')")
    assert raised.value.diag.message_primary == f"p_x must be good, got {shown}"
