"""Idempotent ingest: a provider message id names one message, however often and however
concurrently it is delivered, and a repeat that disagrees with the stored one is refused."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from inboxkit import (
    claim_one,
    complete,
    fail,
    ingest,
    message_states,
    snapshot,
    status_of,
    statuses,
)
from sqlkit import Conn, connections, fan_out

from pgcoord.types import Ingested

CONNECTIONS = 20
ROUNDS = 40


def test_exactly_one_of_20_identical_ingests_stores_the_message(db_url: str, conn: Conn) -> None:
    conversations = ("c0", "c1", "c2")
    expected: dict[str, list[int]] = {key: [] for key in conversations}
    with connections(db_url, CONNECTIONS) as conns:
        for round_no in range(ROUNDS):
            key = conversations[round_no % len(conversations)]
            message = f"wamid-{round_no}"
            results = fan_out(
                conns,
                lambda i, c, message=message, key=key: ingest(
                    c, message, key, f"body {message}", debounce=timedelta(minutes=5)
                ),
            )

            firsts = [r for r in results if not r.duplicate]
            assert len(firsts) == 1, f"round {round_no}: {len(firsts)} saw duplicate = false"
            first = firsts[0]
            for result in results:
                assert (result.message_id, result.received_at) == (
                    first.message_id,
                    first.received_at,
                ), f"round {round_no}: {result} differs from {first}"
            expected[key].append(first.message_id)

    rows = conn.execute(
        "SELECT provider_message_id, conversation_key, body, state FROM pgcoord.messages"
    ).fetchall()
    assert len(rows) == ROUNDS, "one row per provider message id"
    assert all(state == "waiting" for *_, state in rows)
    for key in conversations:
        assert status_of(conn, key).message_count == len(expected[key])


def test_concurrent_repeats_that_disagree_are_refused_and_the_first_stays(
    db_url: str, conn: Conn
) -> None:
    """Half of the callers send one body, half another: one is stored, the callers with
    the stored body see duplicates, the others a conflict naming the message id."""
    with connections(db_url, 12) as conns:
        for round_no in range(10):
            message = f"split-{round_no}"

            def call(i: int, c: Conn, message: str = message) -> Ingested | psycopg.Error:
                try:
                    return ingest(c, message, "c", f"body {i % 2}", debounce=timedelta(minutes=5))
                except psycopg.Error as exc:
                    return exc

            results = fan_out(conns, call)
            firsts = [
                i for i, r in enumerate(results) if isinstance(r, Ingested) and not r.duplicate
            ]
            assert len(firsts) == 1, f"round {round_no}: {results}"
            winner_body = f"body {firsts[0] % 2}"
            stored = conn.execute(
                "SELECT id, body FROM pgcoord.messages WHERE provider_message_id = %s", (message,)
            ).fetchall()
            assert len(stored) == 1 and stored[0][1] == winner_body
            for i, result in enumerate(results):
                if f"body {i % 2}" == winner_body:
                    assert isinstance(result, Ingested), f"round {round_no}, caller {i}: {result}"
                    assert result.message_id == stored[0][0]
                else:
                    assert isinstance(result, psycopg.Error), f"round {round_no}, caller {i}"
                    assert result.sqlstate == "23505"
                    assert message in (result.diag.message_primary or "")
    assert status_of(conn, "c").message_count == 10


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("conversation_key", "another conversation"),
        ("body", "an edited body"),
        ("body", "Cafe\u0301"),  # the stored body is "Café" precomposed: other bytes
        ("body", "Café "),
    ],
    ids=["conversation", "body", "body-normalised-otherwise", "body-trailing-space"],
)
def test_a_repeat_that_differs_raises_23505_naming_the_message_and_changes_nothing(
    conn: Conn, change: str, value: str
) -> None:
    original = ingest(conn, "wamid-1", "c", "Café", debounce=timedelta(minutes=5))
    ingest(conn, "wamid-2", "other", "x")
    before = snapshot(conn, sequences=False)
    arguments = {"conversation_key": "c", "body": "Café", change: value}
    with pytest.raises(psycopg.errors.UniqueViolation) as raised:
        ingest(conn, "wamid-1", arguments["conversation_key"], arguments["body"])
    assert "wamid-1" in (raised.value.diag.message_primary or "")
    assert snapshot(conn, sequences=False) == before

    again = ingest(conn, "wamid-1", "c", "Café")
    assert again == Ingested(original.message_id, True, original.received_at)


def test_the_same_id_from_another_provider_is_another_message(conn: Conn) -> None:
    first = ingest(conn, "1", "c", "hi", provider="whatsapp")
    other = ingest(conn, "1", "elsewhere", "different", provider="telegram")
    assert not first.duplicate and not other.duplicate
    assert other.message_id != first.message_id


def test_a_repeat_changes_nothing_not_even_the_payload_or_the_flush(conn: Conn) -> None:
    original = ingest(conn, "wamid-1", "c", "hi", payload={"v": 1}, debounce=timedelta(seconds=30))
    before = snapshot(conn, sequences=False)
    again = ingest(conn, "wamid-1", "c", "hi", payload={"v": 2}, debounce=timedelta(0))
    assert again == Ingested(original.message_id, True, original.received_at)
    assert snapshot(conn, sequences=False) == before
    assert status_of(conn, "c").flush_at == original.received_at + timedelta(seconds=30)


def test_a_repeat_after_the_message_was_answered_or_parked_is_still_a_duplicate(
    conn: Conn,
) -> None:
    answered = ingest(conn, "wamid-1", "c", "hi")
    burst = claim_one(conn)
    assert complete(conn, "c", burst.claim_token)
    assert message_states(conn, [answered.message_id]) == ["done"]
    assert statuses(conn) == []

    before = snapshot(conn, sequences=False)
    again = ingest(conn, "wamid-1", "c", "hi")
    assert again == Ingested(answered.message_id, True, answered.received_at)
    assert snapshot(conn, sequences=False) == before
    assert statuses(conn) == [], "a repeat opens no buffer"
    with pytest.raises(psycopg.errors.UniqueViolation):
        ingest(conn, "wamid-1", "c", "edited later")

    parked = ingest(conn, "wamid-2", "d", "doomed")
    for _ in range(5):
        assert fail(conn, "d", claim_one(conn).claim_token)
    assert message_states(conn, [parked.message_id]) == ["dead"]
    before = snapshot(conn, sequences=False)
    again = ingest(conn, "wamid-2", "d", "doomed")
    assert again == Ingested(parked.message_id, True, parked.received_at)
    assert snapshot(conn, sequences=False) == before
