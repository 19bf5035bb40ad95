"""The claim's hot path stays on its index: with thousands of buffered conversations, few
of them due, the candidate query reads the partial index buffers_due, never the table."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from inboxkit import claim, ingest_many
from sqlkit import Conn, scalar

BUFFERED, DUE = 5000, 30

# buffer_claim's candidate query, with its variables as parameters (db/src/functions/
# buffer_claim.sql: v_now and p_limit)
CANDIDATES = (
    "SELECT b.id FROM pgcoord.buffers AS b"
    " WHERE NOT b.dead AND b.due_at <= $1 ORDER BY b.due_at LIMIT $2 FOR UPDATE SKIP LOCKED"
)


def fill(conn: Conn) -> None:
    """Many conversations waiting out a long debounce, a few due now, and statistics."""
    ingest_many(
        conn,
        [(f"later-{i}", f"later-{i}", "x") for i in range(BUFFERED)],
        debounce=timedelta(hours=1),
        max_wait=timedelta(hours=1),
    )
    ingest_many(conn, [(f"due-{i}", f"due-{i}", "x") for i in range(DUE)])
    conn.execute("ANALYZE pgcoord.buffers")
    conn.execute("ANALYZE pgcoord.messages")


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def scans_of(
    conn: Conn, plan_cache_mode: str, statement: str, types: str, values: str, relation: str
) -> list[tuple[str, str | None]]:
    """How `statement` (parameters of `types`, executed with the SQL `values`), planned
    custom or generic, reads the table `relation`: (node type, index) per scan."""
    with conn.transaction():
        conn.execute(f"SET LOCAL plan_cache_mode = {plan_cache_mode}")
        conn.execute(f"PREPARE candidates ({types}) AS {statement}")
        try:
            [[explained]] = conn.execute(
                f"EXPLAIN (FORMAT JSON) EXECUTE candidates ({values})"
            ).fetchall()
        finally:
            conn.execute("DEALLOCATE candidates")
    return [
        (node["Node Type"], node.get("Index Name"))
        for node in nodes(explained[0]["Plan"])
        if node.get("Relation Name") == relation
    ]


def buffers_scans(conn: Conn, plan_cache_mode: str) -> list[tuple[str, str | None]]:
    """How the candidate query, planned custom or generic, reads pgcoord.buffers."""
    return scans_of(
        conn,
        plan_cache_mode,
        CANDIDATES,
        "timestamptz, integer",
        "clock_timestamp(), 10",
        "buffers",
    )


def test_the_claim_reads_the_buffers_due_index_and_scans_no_table(conn: Conn) -> None:
    fill(conn)
    for mode in ("force_custom_plan", "force_generic_plan"):
        assert buffers_scans(conn, mode) == [("Index Scan", "buffers_due")], mode

    # what buffer_claim itself did, counted by the server for this transaction
    with conn.transaction():
        bursts = claim(conn, limit=10)
        index_scans = scalar(
            conn, "SELECT pg_stat_get_xact_numscans('pgcoord.buffers_due'::regclass)"
        )
        table_scans = dict(
            conn.execute(
                "SELECT relname::text, seq_scan FROM pg_stat_xact_user_tables"
                " WHERE schemaname = 'pgcoord'"
            ).fetchall()
        )
    assert len(bursts) == 10
    assert {burst.conversation_key[:4] for burst in bursts} == {"due-"}
    assert index_scans >= 1
    assert table_scans.get("buffers", 0) == 0, table_scans
    assert table_scans.get("messages", 0) == 0, table_scans
