"""campaign_completed_then_claim: a worker's completions and its next claim in one
statement, one round trip and one transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from pgcoord import InvalidArgument, campaigns, sql
from pgcoord.arrays import bigints

RUN_SIZE = 20


@pytest.fixture
def run_id(conn: psycopg.Connection[Any]) -> int:
    run_id = campaigns.campaign_create(conn, "then-claim")
    campaigns.campaign_enqueue(conn, run_id, [{"recipient": f"r{i}"} for i in range(RUN_SIZE)])
    return run_id


def sent(conn: psycopg.Connection[Any], run_id: int) -> int:
    [progress] = campaigns.campaign_progress(conn, run_id)
    return progress.sent


def test_completes_the_batch_and_claims_the_next_in_one_transaction(
    conn: psycopg.Connection[Any], run_id: int
) -> None:
    first = campaigns.campaign_claim(conn, "w", 15, run_id=run_id)
    before = conn.execute("SELECT pg_catalog.txid_current()").fetchone()
    completed, claimed = campaigns.campaign_completed_then_claim(
        conn,
        [m.message_id for m in first],
        [m.claim_token for m in first],
        [{"n": m.message_id} for m in first],
        "w",
        15,
        run_id=run_id,
    )
    after = conn.execute("SELECT pg_catalog.txid_current()").fetchone()
    assert completed == {m.message_id for m in first}
    assert len(claimed) == RUN_SIZE - 15
    assert {m.message_id for m in claimed}.isdisjoint(completed)
    assert {m.attempt for m in claimed} == {1}
    assert sent(conn, run_id) == 15
    # one transaction between the two probes: the call's own
    assert before is not None and after is not None and after[0] - before[0] == 2
    metrics = conn.execute(
        "SELECT message_id, metrics FROM pgcoord.campaign_message_status"
        " WHERE run_id = %s AND status = 'sent'",
        [run_id],
    ).fetchall()
    assert {mid: m["n"] for mid, m in metrics} == {mid: mid for mid in completed}


def test_a_stale_token_is_not_completed_and_the_claim_goes_on(
    conn: psycopg.Connection[Any], run_id: int
) -> None:
    first = campaigns.campaign_claim(conn, "w", 15, run_id=run_id)
    stale = first[0]
    completed, claimed = campaigns.campaign_completed_then_claim(
        conn, [stale.message_id], [stale.claim_token + 10_000], None, "w", 15, run_id=run_id
    )
    assert completed == set()
    assert len(claimed) == RUN_SIZE - 15
    assert sent(conn, run_id) == 0
    # the real claim is untouched: it still completes
    assert campaigns.campaign_complete(conn, stale.message_id, stale.claim_token)


def test_nothing_to_claim_still_completes(conn: psycopg.Connection[Any], run_id: int) -> None:
    held = campaigns.campaign_claim(conn, "w", RUN_SIZE, run_id=run_id)
    completed, claimed = campaigns.campaign_completed_then_claim(
        conn, [m.message_id for m in held], [m.claim_token for m in held], None, "w", 15
    )
    assert (len(completed), claimed) == (RUN_SIZE, [])
    assert sent(conn, run_id) == RUN_SIZE


def test_an_error_of_the_claim_undoes_the_completion(
    conn: psycopg.Connection[Any], run_id: int
) -> None:
    first = campaigns.campaign_claim(conn, "w", 15, run_id=run_id)
    with pytest.raises(InvalidArgument, match="p_limit"):
        campaigns.campaign_completed_then_claim(
            conn, [m.message_id for m in first], [m.claim_token for m in first], None, "w", 0
        )
    assert sent(conn, run_id) == 0
    # still held by their claim, which completes
    ids, tokens = [m.message_id for m in first], [m.claim_token for m in first]
    assert campaigns.campaign_complete_many(conn, ids, tokens) == 15


def test_claims_in_due_order_and_sends_the_completed_ids_once(
    conn: psycopg.Connection[Any],
) -> None:
    """The claimed rows come in claim order (the earliest due first, here the reverse of
    the enqueue's), and the completed ids ride on the first row only: the array is sent
    and read once per call, not once per claimed message."""
    run_id = campaigns.campaign_create(conn, "then-claim-order")
    now = datetime.now(UTC)
    items = [
        {"recipient": f"r{i}", "scheduled_at": (now - timedelta(minutes=i)).isoformat()}
        for i in range(RUN_SIZE)
    ]
    campaigns.campaign_enqueue(conn, run_id, items)
    first = campaigns.campaign_claim(conn, "w", 5, run_id=run_id)
    assert [m.recipient for m in first] == [f"r{i}" for i in range(RUN_SIZE - 1, 14, -1)]
    params = {
        "message_ids": bigints([m.message_id for m in first]),
        "claim_tokens": bigints([m.claim_token for m in first]),
        "metrics": None,
        "worker": "w",
        "limit": 10,
        "lease": timedelta(minutes=5),
        "run_id": run_id,
    }
    rows = conn.execute(sql.CAMPAIGN_COMPLETED_THEN_CLAIM, params).fetchall()
    assert sorted(rows[0][0]) == sorted(m.message_id for m in first)
    assert [row[0] for row in rows[1:]] == [None] * 9
    assert [row[3] for row in rows] == [f"r{i}" for i in range(14, 4, -1)]
