"""Bad arguments to every section-2 function: SQLSTATE 22004 for NULL, 22023 otherwise, a
message naming the argument, and nothing changed, whatever state the conversation is in."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from inboxkit import (
    MAX_FAILED_TRIES,
    claim,
    claim_one,
    complete,
    extend,
    fail,
    ingest,
    snapshot,
    statuses,
    until_lease_ran_out,
)
from sqlkit import Conn, assert_all_refused

NULL, INVALID = "22004", "22023"

KEY_CASES = [
    (None, NULL, "null"),
    ("", INVALID, "empty"),
    ("k" * 1025, INVALID, "1025-bytes"),
    ("é" * 513, INVALID, "1026-bytes-in-513-characters"),
]
NOT_NULL = [(None, NULL, "null")]
PAYLOAD_CASES = [
    (None, NULL, "null"),
    ("[]", INVALID, "array"),
    ('[{"a": 1}]', INVALID, "array-of-object"),
    ('"text"', INVALID, "string"),
    ("1", INVALID, "number"),
    ("true", INVALID, "boolean"),
    ("null", INVALID, "json-null"),
]
NON_NEGATIVE = [
    (None, NULL, "null"),
    (timedelta(microseconds=-1), INVALID, "negative"),
    (timedelta(days=-1), INVALID, "a-day-back"),
]
POSITIVE = [
    (None, NULL, "null"),
    (timedelta(0), INVALID, "zero"),
    (timedelta(seconds=-1), INVALID, "negative"),
]
LIMIT_CASES = [(None, NULL, "null"), (0, INVALID, "zero"), (-1, INVALID, "negative")]

CASES = {
    "p_provider": KEY_CASES,
    "p_provider_message_id": KEY_CASES,
    "p_conversation_key": KEY_CASES,
    "p_body": NOT_NULL,
    "p_payload": PAYLOAD_CASES,
    "p_debounce": NON_NEGATIVE,
    "p_max_wait": NON_NEGATIVE,
    "p_worker": KEY_CASES,
    "p_limit": LIMIT_CASES,
    "p_lease": POSITIVE,
    "p_claim_token": NOT_NULL,
    "p_error": NOT_NULL,
    "p_retry_in": NON_NEGATIVE,
}

ZERO = timedelta(0)


def setup(conn: Conn) -> dict[str, int]:
    """Conversations in every state; returns the current claim token of each held one."""
    ingest(conn, "doomed-1", "doomed")
    for _ in range(MAX_FAILED_TRIES - 1):
        assert fail(conn, "doomed", claim_one(conn).claim_token)
    doomed = claim_one(conn, "unlucky")  # its fail would park it
    ingest(conn, "held-1", "held")
    held = claim_one(conn, "holder")
    ingest(conn, "held-2", "held")  # waiting behind the claim
    ingest(conn, "expired-1", "expired")
    expired = claim_one(conn, "crashed", lease=timedelta(milliseconds=1))
    ingest(conn, "due-1", "due")
    ingest(conn, "later-1", "later", debounce=timedelta(minutes=5))
    until_lease_ran_out(conn, "expired")
    return {"held": held.claim_token, "expired": expired.claim_token, "doomed": doomed.claim_token}


def bases(function: str, tokens: dict[str, int]) -> list[dict[str, Any]]:
    """Valid arguments for `function`, one set per state a call could change."""
    if function == "message_ingest":
        common = {"p_provider": "wa", "p_payload": "{}", "p_debounce": ZERO, "p_max_wait": ZERO}
        return [
            {**common, "p_provider_message_id": pmid, "p_conversation_key": key, "p_body": body}
            for pmid, key, body in [
                ("new-1", "brand new", "hi"),  # a first delivery
                ("new-2", "held", "hi"),  # into a conversation being processed
                ("held-1", "held", "held-1"),  # a repeat
                ("held-1", "other", "changed"),  # a conflicting repeat
            ]
        ]
    if function == "buffer_claim":
        return [{"p_worker": "w", "p_limit": 10, "p_lease": timedelta(seconds=30)}]
    extra = {
        "buffer_complete": {},
        "buffer_fail": {"p_error": "e", "p_retry_in": ZERO},
        "buffer_failed": {"p_error": "e", "p_retry_in": ZERO},
        "buffer_extend": {"p_lease": timedelta(seconds=30)},
    }[function]
    return [
        {"p_conversation_key": key, "p_claim_token": token, **extra}
        for key, token in tokens.items()
    ]


@pytest.mark.parametrize(
    "function",
    [
        "message_ingest",
        "buffer_claim",
        "buffer_complete",
        "buffer_fail",
        "buffer_failed",
        "buffer_extend",
    ],
)
def test_bad_arguments_raise_naming_them_and_change_nothing(conn: Conn, function: str) -> None:
    tokens = setup(conn)

    def cases() -> Iterator[tuple[str, dict[str, Any], str, str]]:
        for base in bases(function, tokens):
            for argument in base:
                for value, sqlstate, label in CASES[argument]:
                    where = ", ".join(
                        f"{k}={str(v)[:12]!r}" for k, v in base.items() if k != argument
                    )
                    yield (
                        f"{argument} {label} ({where})",
                        {**base, argument: value},
                        argument,
                        sqlstate,
                    )

    assert_all_refused(conn, function, cases(), snapshot, at_least=10)

    # and the valid calls still do their work afterwards: the state was left as it was
    [doomed] = [row for row in statuses(conn, "doomed")]
    assert (doomed.claimed_by, doomed.attempt) == ("unlucky", MAX_FAILED_TRIES)
    assert fail(conn, "doomed", tokens["doomed"])
    assert extend(conn, "expired", tokens["expired"]) is not None
    assert complete(conn, "held", tokens["held"])
    assert {burst.conversation_key for burst in claim(conn)} == {"held", "due"}


@pytest.mark.parametrize(
    "value", ["k" * 1024, "é" * 512, "x"], ids=["1024-ascii", "1024-bytes", "1-byte"]
)
def test_names_of_1_to_1024_bytes_are_accepted(conn: Conn, value: str) -> None:
    first = ingest(conn, value, value, "body", provider=value)
    assert not first.duplicate
    assert ingest(conn, value, value, "body", provider=value).duplicate
    [burst] = claim(conn, value)
    assert burst.conversation_key == value and burst.message_ids == [first.message_id]
    assert [row.claimed_by for row in statuses(conn, value)] == [value]
    assert extend(conn, value, burst.claim_token) is not None
    assert fail(conn, value, burst.claim_token, value)
    [again] = claim(conn, value)
    assert complete(conn, value, again.claim_token)


def test_the_edges_of_the_valid_range_are_accepted(conn: Conn) -> None:
    """Zero debounce, zero cap, zero retry, an empty body and error text, a limit of 1
    and a lease of a microsecond are all valid."""
    message = ingest(conn, "m1", "c", "", debounce=ZERO, max_wait=ZERO)
    ingest(conn, "m2", "d", "x", debounce=ZERO, max_wait=ZERO)
    [burst] = claim(conn, "w", limit=1, lease=timedelta(microseconds=1))
    assert burst.bodies in ([""], ["x"])
    assert fail(conn, burst.conversation_key, burst.claim_token, "", retry_in=ZERO)
    assert len(claim(conn, "w", limit=5)) == 2
    assert message.message_id > 0
