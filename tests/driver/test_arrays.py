"""Lists of ids travel as the text of a bigint[] (pgcoord.arrays): the same ids reach the
server as through psycopg's list dumper, on any connection (one that sends Python
strings typed as text included), and a list of anything but ints is still refused as
the wrong type, with nothing changed."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.types.string import StrDumper

from pgcoord import campaigns, inbox
from pgcoord.arrays import bigints

BIGINT_MAX = 2**63 - 1


def test_ints_become_the_text_of_an_array() -> None:
    assert bigints([3, 1, 2]) == "{3,1,2}"
    assert bigints((7,)) == "{7}"
    assert bigints(range(3)) == "{0,1,2}"
    assert bigints([]) == "{}"
    assert bigints([-5, BIGINT_MAX, -BIGINT_MAX - 1]) == f"{{-5,{BIGINT_MAX},{-BIGINT_MAX - 1}}}"


@pytest.mark.parametrize("values", [[1, True], [2.5], ["1,2"], [1, None], [Decimal(1)]])
def test_anything_else_stays_a_list_for_psycopg(values: list[Any]) -> None:
    found = bigints(values)
    assert found == values and isinstance(found, list)


def held(conn: psycopg.Connection[Any], size: int) -> tuple[int, list[campaigns.CampaignMessage]]:
    run_id = campaigns.campaign_create(conn, "arrays")
    campaigns.campaign_enqueue(conn, run_id, [{"recipient": f"r{i}"} for i in range(size)])
    return run_id, campaigns.campaign_claim(conn, "w", size, run_id=run_id)


def sent(conn: psycopg.Connection[Any], run_id: int) -> int:
    [progress] = campaigns.campaign_progress(conn, run_id)
    return progress.sent


@pytest.mark.parametrize("text_typed", [False, True], ids=["default", "str-as-text"])
def test_the_ids_reach_the_server_on_any_connection(
    conn: psycopg.Connection[Any], text_typed: bool
) -> None:
    if text_typed:  # a connection that sends every Python str typed as text
        conn.adapters.register_dumper(str, StrDumper)
    run_id, messages = held(conn, 6)
    first, rest = messages[:3], messages[3:]
    ids = tuple(m.message_id for m in first)  # any sequence
    assert campaigns.campaign_complete_many(conn, ids, [m.claim_token for m in first]) == 3
    # a stale token in the middle: only its message is left out, by position
    tokens = [m.claim_token for m in rest]
    tokens[1] += 1000
    completed = campaigns.campaign_completed(conn, [m.message_id for m in rest], tokens)
    assert completed == {rest[0].message_id, rest[2].message_id}
    assert sent(conn, run_id) == 5
    stored = inbox.message_ingest(conn, "p", "m1", "c", "hello", {"k": 1})
    found = inbox.message_payloads(conn, [stored.message_id, stored.message_id + 1000])
    assert found == {stored.message_id: {"k": 1}}


@pytest.mark.parametrize("wrong", [[True], [2.5], ["x"], [b"1"]])
def test_a_list_of_anything_else_is_the_wrong_type_and_changes_nothing(
    conn: psycopg.Connection[Any], wrong: list[Any]
) -> None:
    run_id, [message] = held(conn, 1)
    with pytest.raises(TypeError, match=r"campaign_complete_many: message_ids must be"):
        campaigns.campaign_complete_many(conn, wrong, [message.claim_token])
    with pytest.raises(TypeError, match=r"campaign_completed: claim_tokens must be"):
        campaigns.campaign_completed(conn, [message.message_id], wrong)
    with pytest.raises(TypeError, match=r"message_payloads: message_ids must be"):
        inbox.message_payloads(conn, wrong)
    assert sent(conn, run_id) == 0
    assert campaigns.campaign_complete(conn, message.message_id, message.claim_token)
