"""pgcoord.message_payloads (not in the contract): the stored payloads of the messages
asked for, in the order asked, whatever state the messages are in; unknown ids answer
nothing; NULL and more than 10000 ids are refused, naming the argument."""

from __future__ import annotations

from typing import Any

from inboxkit import claim_one, complete, ingest
from inboxkit import snapshot as inbox_snapshot
from sqlkit import Conn, assert_all_refused, call


def payloads(conn: Conn, ids: list[int] | None) -> list[tuple[int, dict[str, Any]]]:
    return [
        (message_id, payload)
        for message_id, payload in call(conn, "message_payloads", {"p_message_ids": ids})
    ]


def test_payloads_come_in_the_order_asked_in_every_state(conn: Conn) -> None:
    first = ingest(conn, "m1", "c", payload={"profile": "Ana", "media": None})
    second = ingest(conn, "m2", "c", payload={"media_url": "https://example.com/a.jpg"})
    plain = ingest(conn, "m3", "c")  # no payload given: {}
    batch = claim_one(conn)
    ids = [second.message_id, plain.message_id, first.message_id]
    expected = [
        (second.message_id, {"media_url": "https://example.com/a.jpg"}),
        (plain.message_id, {}),
        (first.message_id, {"profile": "Ana", "media": None}),
    ]
    assert payloads(conn, ids) == expected
    assert complete(conn, batch.conversation_key, batch.claim_token)  # done messages too
    assert payloads(conn, ids) == expected


def test_unknown_null_and_repeated_ids(conn: Conn) -> None:
    known = ingest(conn, "m1", "c", payload={"n": 1}).message_id
    assert payloads(conn, []) == []
    assert payloads(conn, [known + 1000, -1]) == []
    assert payloads(conn, [None, known]) == [(known, {"n": 1})]  # type: ignore[list-item]
    assert payloads(conn, [known, known]) == [(known, {"n": 1}), (known, {"n": 1})]


def test_ten_thousand_ids_are_accepted(conn: Conn) -> None:
    known = ingest(conn, "m1", "c", payload={"n": 1}).message_id
    assert payloads(conn, [known, *range(-9999, 0)]) == [(known, {"n": 1})]


def test_null_and_too_many_ids_are_refused_naming_the_argument(conn: Conn) -> None:
    ingest(conn, "m1", "c", payload={"n": 1})
    assert_all_refused(
        conn,
        "message_payloads",
        [
            ("NULL", {"p_message_ids": None}, "p_message_ids", "22004"),
            ("10001 ids", {"p_message_ids": list(range(10001))}, "p_message_ids", "22023"),
        ],
        inbox_snapshot,
        at_least=2,
    )
