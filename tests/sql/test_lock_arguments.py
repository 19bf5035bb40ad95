"""Bad arguments to every section-1 function: SQLSTATE 22004 for NULL, 22023 otherwise, a
message naming the argument, and nothing changed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlkit import Conn, acquire, assert_all_refused, call, snapshot, until_expired

NULL, INVALID = "22004", "22023"

# Each function's valid arguments besides p_key; the bad one replaces its namesake.
VALID: dict[str, dict[str, Any]] = {
    "lock_acquire": {"p_owner": "holder", "p_ttl": timedelta(seconds=30), "p_wait": timedelta(0)},
    "lock_release": {"p_owner": "holder"},
    "lock_extend": {"p_owner": "holder", "p_ttl": timedelta(seconds=30)},
    "lock_is_current": {"p_token": None},  # the held key's token, filled in per test
}

TEXT_CASES = [
    (None, NULL, "null"),
    ("", INVALID, "empty"),
]
KEY_CASES = [
    *TEXT_CASES,
    ("k" * 1025, INVALID, "1025-bytes"),
    ("é" * 513, INVALID, "1026-bytes-in-513-characters"),
]
TTL_CASES = [
    (None, NULL, "null"),
    (timedelta(0), INVALID, "zero"),
    (timedelta(seconds=-1), INVALID, "negative"),
]
WAIT_CASES = [
    (None, NULL, "null"),
    (timedelta(milliseconds=-1), INVALID, "negative"),
]
TOKEN_CASES = [(None, NULL, "null")]

CASES_BY_ARGUMENT = {
    "p_key": KEY_CASES,
    "p_owner": TEXT_CASES,
    "p_ttl": TTL_CASES,
    "p_wait": WAIT_CASES,
    "p_token": TOKEN_CASES,
}


@pytest.mark.parametrize("function", list(VALID))
def test_bad_arguments_raise_naming_them_and_change_nothing(conn: Conn, function: str) -> None:
    held = acquire(conn, "held", "holder")
    acquire(conn, "expired", "holder", ttl=timedelta(milliseconds=1))
    acquire(conn, "other-expired", "someone", ttl=timedelta(milliseconds=1))
    until_expired(conn, "expired")
    until_expired(conn, "other-expired")

    def cases() -> Iterator[tuple[str, dict[str, Any], str, str]]:
        for argument in ["p_key", *VALID[function]]:
            for value, sqlstate, label in CASES_BY_ARGUMENT[argument]:
                # against each kind of key, so a call acting before its checks would show
                keys = (
                    [value] if argument == "p_key" else ["held", "expired", "other-expired", "free"]
                )
                for key in keys:
                    arguments = {"p_key": key, **VALID[function], argument: value}
                    if function == "lock_is_current" and argument != "p_token":
                        arguments["p_token"] = held.token
                    yield (
                        f"{argument} {label} on key {str(key)[:20]!r}",
                        arguments,
                        argument,
                        sqlstate,
                    )

    assert_all_refused(conn, function, cases(), snapshot, at_least=5)


def test_the_check_comes_before_any_waiting(conn: Conn) -> None:
    acquire(conn, "held", "holder")
    for arguments in (
        {"p_key": "held", "p_owner": None, "p_ttl": timedelta(seconds=30)},
        {"p_key": "held", "p_owner": "other", "p_ttl": timedelta(0)},
    ):
        started = time.monotonic()
        with pytest.raises(psycopg.Error):
            call(conn, "lock_acquire", {**arguments, "p_wait": timedelta(seconds=5)})
        assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("key", ["k" * 1024, "é" * 512, "x"], ids=["1024-ascii", "1024-bytes", "1"])
def test_keys_of_1_to_1024_bytes_are_accepted(conn: Conn, key: str) -> None:
    lock = acquire(conn, key, "holder")
    assert lock.acquired
    call(conn, "lock_extend", {"p_key": key, "p_owner": "holder"})
    call(conn, "lock_is_current", {"p_key": key, "p_token": lock.token})
    call(conn, "lock_release", {"p_key": key, "p_owner": "holder"})
