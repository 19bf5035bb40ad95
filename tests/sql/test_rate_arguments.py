"""Bad arguments to the rate functions: SQLSTATE 22004 for NULL, 22023 for a value out of
its range, a message naming the argument, and nothing changed, whatever state the key is
in. The edges of each range are accepted. (The interval limits of p_for are checked with
every other interval in test_argument_ranges.)"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from ratekit import GRANTED, acquire, pause, snapshot
from sqlkit import Conn, assert_all_refused, call

NULL, INVALID = "22004", "22023"
VALID: dict[str, dict[str, Any]] = {
    "rate_acquire": {"p_per_second": 1.0, "p_burst": 5, "p_cost": 1},
    "rate_pause": {"p_for": timedelta(seconds=1)},
    "rate_reset": {},
}
KEY_CASES = [
    (None, NULL, "null"),
    ("", INVALID, "empty"),
    ("k" * 1025, INVALID, "1025-bytes"),
    ("é" * 513, INVALID, "1026-bytes-in-513-characters"),
]
CASES: dict[str, list[tuple[Any, str, str]]] = {
    "p_key": KEY_CASES,
    "p_per_second": [
        (None, NULL, "null"),
        (0.0, INVALID, "zero"),
        (-0.0, INVALID, "minus-zero"),
        (-1.0, INVALID, "negative"),
        (float("nan"), INVALID, "nan"),
        (float("inf"), INVALID, "infinity"),
        (float("-inf"), INVALID, "minus-infinity"),
        (1_000_000.000001, INVALID, "over-1000000"),
        (1e308, INVALID, "huge"),
    ],
    "p_burst": [
        (None, NULL, "null"),
        (0, INVALID, "zero"),
        (-1, INVALID, "negative"),
        (1_000_001, INVALID, "over-1000000"),
    ],
    "p_cost": [
        (None, NULL, "null"),
        (0, INVALID, "zero"),
        (-1, INVALID, "negative"),
        (6, INVALID, "over-the-burst"),
        (2_147_483_647, INVALID, "largest-integer"),
    ],
    "p_for": [
        (None, NULL, "null"),
        (timedelta(microseconds=-1), INVALID, "negative"),
    ],
}


def setup(conn: Conn) -> list[str]:
    """Keys in every state: full, empty, paused, unknown."""
    assert acquire(conn, "full", 1.0, 5, 1) == GRANTED
    assert acquire(conn, "empty", 0.001, 5, 5) == GRANTED
    pause(conn, "paused", timedelta(minutes=5))
    return ["full", "empty", "paused", "unknown"]


@pytest.mark.parametrize("function", list(VALID))
def test_bad_arguments_raise_naming_them_and_change_nothing(conn: Conn, function: str) -> None:
    keys = setup(conn)

    def cases() -> Iterator[tuple[str, dict[str, Any], str, str]]:
        for argument in ["p_key", *VALID[function]]:
            for value, sqlstate, label in CASES[argument]:
                for key in [value] if argument == "p_key" else keys:
                    arguments = {"p_key": key, **VALID[function], argument: value}
                    yield (
                        f"{argument} {label} on key {str(key)[:20]!r}",
                        arguments,
                        argument,
                        sqlstate,
                    )

    assert_all_refused(conn, function, cases(), snapshot, at_least=4)


def test_a_null_burst_is_named_before_the_cost_it_bounds(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.NullValueNotAllowed, match="p_burst"):
        call(conn, "rate_acquire", {"p_key": "k", "p_per_second": 1.0, "p_burst": None})
    assert snapshot(conn) == []


@pytest.mark.parametrize(
    ("per_second", "burst", "cost"),
    [
        (1_000_000.0, 1_000_000, 1_000_000),
        (1e-300, 1, 1),
        (5e-324, 1, 1),  # the smallest float8 above zero
        (0.5, 1, 1),
    ],
    ids=["largest", "tiny-rate", "smallest-rate", "burst-1"],
)
def test_the_edges_of_the_ranges_are_accepted(
    conn: Conn, per_second: float, burst: int, cost: int
) -> None:
    assert acquire(conn, "k", per_second, burst, cost) == GRANTED
    wait = acquire(conn, "k", per_second, burst, cost)
    # refused until the bucket refills; never longer than the longest answer, 100 years
    assert timedelta(0) < wait <= timedelta(days=36525)
    rows = conn.execute("SELECT * FROM pgcoord.rate_status").fetchall()
    assert len(rows) == 1


@pytest.mark.parametrize("key", ["k" * 1024, "é" * 512, "x"], ids=["1024-ascii", "1024-bytes", "1"])
def test_keys_of_1_to_1024_bytes_are_accepted(conn: Conn, key: str) -> None:
    assert acquire(conn, key, 1.0, 1) == GRANTED
    assert pause(conn, key, timedelta(seconds=1))
    call(conn, "rate_reset", {"p_key": key})
    assert snapshot(conn) == []
