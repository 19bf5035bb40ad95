"""The claim's hot path stays on its index however large the campaign: with a run of
1,000,000 messages of which 99% are sent, the claim reads the run's due groups through
campaign_queue_due and a few buffers per message it claims, never a table scan of the
messages or outcomes; campaign_progress counts that run from its backlog alone, and
campaign_stats from its backlog, its eventful outcomes and its recent sends (the sent
index read backwards), whatever the run's length."""

from __future__ import annotations

import pytest
from campaignkit import TABLES, claim, complete_all, counts, create, enqueue, item, stats_of
from sqlkit import Conn, connections, scalar
from test_inbox_plan import nodes, scans_of

MESSAGES, SENT = 1_000_000, 990_000
BUFFERS_PER_MESSAGE = 10

# campaign_claim's cursor over one run's due groups (db/src/functions/campaign_claim.sql),
# with its variables as parameters: the run's id, v_now and p_limit
CANDIDATES = (
    "SELECT q.* FROM pgcoord.campaign_queue AS q WHERE q.run_id = $1 AND q.due_at <= $2"
    " ORDER BY q.due_at LIMIT $3 FOR UPDATE SKIP LOCKED"
)


@pytest.fixture
def big_run(conn: Conn) -> int:
    """A run of a million messages, 99% sent: built in a few statements, as the queue
    leaves it (the sent ones have an outcome and no queue row), sent one every 10 ms until
    now (the last minute's are the last 6,000), each with the handler's time."""
    run_id = create(conn, "big")
    conn.execute(
        "INSERT INTO pgcoord.campaign_messages (run_id, recipient, payload, scheduled_at)"
        " SELECT %s, '+1555' || i, '{\"text\": \"hello\"}', clock_timestamp() - interval '1 hour'"
        " FROM generate_series(1, %s) AS i",
        (run_id, MESSAGES),
    )
    conn.execute(
        "INSERT INTO pgcoord.campaign_outcomes"
        " (message_id, run_id, status, finished_at, attempts, metrics)"
        " SELECT s.id, s.run_id, 'sent', clock_timestamp() - (%(sent)s - s.n) * interval '10 ms',"
        " 1, jsonb_build_object('handler_ms', s.n %% 100)"
        " FROM (SELECT m.id, m.run_id, row_number() OVER (ORDER BY m.id) AS n"
        "       FROM pgcoord.campaign_messages AS m ORDER BY m.id LIMIT %(sent)s) AS s",
        {"sent": SENT},
    )
    conn.execute(
        "INSERT INTO pgcoord.campaign_queue (token, run_id, due_at, scheduled_at, message_ids)"
        " SELECT nextval('pgcoord.campaign_token'), %(run)s, min(p.scheduled_at),"
        " min(p.scheduled_at), array_agg(p.id ORDER BY p.id)"
        " FROM (SELECT m.id, m.scheduled_at, (row_number() OVER (ORDER BY m.id) - 1) / 15 AS g"
        "       FROM pgcoord.campaign_messages AS m ORDER BY m.id OFFSET %(sent)s) AS p"
        " GROUP BY p.g",
        {"run": run_id, "sent": SENT},
    )
    conn.execute(
        "INSERT INTO pgcoord.campaign_enqueues"
        " SELECT run_id, min(id), max(id), count(*) FROM pgcoord.campaign_messages"
        " WHERE run_id = %s GROUP BY run_id",
        (run_id,),
    )
    for table in TABLES:
        conn.execute(f"ANALYZE pgcoord.{table}")
    assert counts(conn, run_id) == (MESSAGES - SENT, 0, SENT, 0, 0, MESSAGES)
    return run_id


def queue_scans(conn: Conn, plan_cache_mode: str, run_id: int) -> list[tuple[str, str | None]]:
    """How the candidate query, planned custom or generic, reads pgcoord.campaign_queue."""
    values = f"{int(run_id)}, clock_timestamp(), 15"
    return scans_of(
        conn, plan_cache_mode, CANDIDATES, "bigint, timestamptz, integer", values, "campaign_queue"
    )


def seq_scans(conn: Conn) -> dict[str, int]:
    return dict(
        conn.execute(
            "SELECT relname::text, seq_scan FROM pg_stat_xact_user_tables"
            " WHERE schemaname = 'pgcoord'"
        ).fetchall()
    )


def test_the_claim_the_progress_and_the_stats_of_a_million_messages_read_little(
    conn: Conn, big_run: int
) -> None:
    for mode in ("force_custom_plan", "force_generic_plan"):
        assert queue_scans(conn, mode, big_run) == [("Index Scan", "campaign_queue_due")], mode

    assert len(claim(conn, limit=15)) == 15  # plans made and cached for this session
    for run_id in (None, big_run):
        with conn.transaction():
            # the session's counts not yet sent to the server's statistics, before and after
            before = seq_scans(conn)
            [[explained]] = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM pgcoord.campaign_claim("
                "p_worker => 'w', p_limit => 15, p_run_id => %s)",
                (run_id,),
            ).fetchall()
            scans = {table: n - before[table] for table, n in seq_scans(conn).items()}
        plan = explained[0]["Plan"]
        assert plan["Actual Rows"] == 15
        read = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
        assert read <= 15 * BUFFERS_PER_MESSAGE, f"{read} buffers for 15 messages"
        for table in ("campaign_messages", "campaign_queue", "campaign_outcomes"):
            assert scans[table] == 0, (table, scans)

    # and campaign_progress counts the run from its backlog, not from the sent messages
    [[explained]] = conn.execute(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)"
        " SELECT * FROM pgcoord.campaign_progress WHERE run_id = %s",
        (big_run,),
    ).fetchall()
    plan = explained[0]["Plan"]
    relations = {node.get("Relation Name") for node in nodes(plan)}
    assert "campaign_messages" not in relations
    outcome_scans = [
        n["Node Type"] for n in nodes(plan) if n.get("Relation Name") == "campaign_outcomes"
    ]
    assert outcome_scans and "Seq Scan" not in outcome_scans, outcome_scans
    pages = scalar(
        conn,
        "SELECT pg_relation_size('pgcoord.campaign_outcomes')"
        " / current_setting('block_size')::integer",
    )
    read = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
    assert read < 200 < pages // 10, f"{read} buffers, the outcomes have {pages} pages"
    assert_the_stats_read_the_recent_sends_only(conn, big_run, pages)


def index_scans(conn: Conn, *indexes: str) -> list[int]:
    """How often this transaction has scanned each index so far."""
    return [
        int(scalar(conn, "SELECT pg_stat_get_xact_numscans(%s::regclass)", f"pgcoord.{index}"))
        for index in indexes
    ]


def assert_the_stats_read_the_recent_sends_only(conn: Conn, run_id: int, pages: int) -> None:
    indexes = ("campaign_outcomes_sent", "campaign_outcomes_eventful")
    with conn.transaction():
        before, scanned = seq_scans(conn), index_scans(conn, *indexes)
        [[explained]] = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM pgcoord.campaign_stats(%s)",
            (run_id,),
        ).fetchall()
        scans = {table: n - before[table] for table, n in seq_scans(conn).items()}
        used = [n - m for n, m in zip(index_scans(conn, *indexes), scanned, strict=True)]
    plan = explained[0]["Plan"]
    assert scans["campaign_outcomes"] == scans["campaign_messages"] == 0, scans
    # the last minute's count and the last 1000 sent; the eventful outcomes' sums
    assert used == [2, 1]
    read = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
    assert read < pages // 10, f"{read} buffers, the outcomes have {pages} pages"

    row = stats_of(conn, run_id)
    # one sent every 10 ms until the fixture's end, a moment ago
    assert 0 < row.sent_last_minute <= 6000
    assert (row.retries, row.snoozes) == (0, 0)
    # the last 1000 sent took 0 to 99 ms, ten of each
    assert (row.handler_p50_ms, row.handler_p95_ms) == (49.5, pytest.approx(94.05))


def test_a_claim_of_messages_enqueued_one_at_a_time_descends_the_index_once(conn: Conn) -> None:
    """Messages enqueued one per call are groups of one: a claim of 15 from the one
    running run takes 15 groups through two scans of campaign_queue_due (the first group,
    then a cursor over the rest), not one per group (each scan steps over the entries of
    every group claimed since the last vacuum)."""
    run_id = create(conn, "one at a time")
    for n in range(20):
        enqueue(conn, run_id, [item(f"+1555{n}")])
    for given in (None, run_id):
        with conn.transaction():
            [before] = index_scans(conn, "campaign_queue_due")
            claimed = claim(conn, limit=15 if given is None else 5, run_id=given)
            [after] = index_scans(conn, "campaign_queue_due")
        assert len({c.claim_token for c in claimed}) == 1, "held as one group"
        assert after - before == 2, f"{after - before} scans of the index for one claim"
    assert [c.recipient for c in claimed] == [f"+1555{n}" for n in range(15, 20)], "oldest first"


def test_a_claim_steps_once_over_what_was_claimed_while_vacuum_is_held_back(
    db_url: str, conn: Conn
) -> None:
    """While a snapshot holds back vacuum, the entries of every group claimed since lie in
    the due index before the due ones, and no claim can drop them. A claim of groups of
    one steps over them once: its cursor starts at its first group's due time."""
    run_id = create(conn, "held back")
    for n in range(330):
        enqueue(conn, run_id, [item(f"+1555{n}")])
    with connections(db_url, 1) as [holder]:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT 1")  # the snapshot, held until the rollback
        for _ in range(20):
            assert complete_all(conn, claim(conn, limit=15)) == 15
        with conn.transaction():
            before = entries_read(conn)
            claimed = claim(conn, limit=15)
            read = entries_read(conn) - before
        holder.rollback()
    assert [c.recipient for c in claimed] == [f"+1555{n}" for n in range(300, 315)]
    # 300 dead entries and the 15 taken (twice as many when the cursor started over)
    assert 300 <= read < 400, f"{read} entries of campaign_queue_due read by one claim"


def entries_read(conn: Conn) -> int:
    """Entries of campaign_queue_due that this transaction's scans have returned so far."""
    return int(
        scalar(
            conn, "SELECT pg_stat_get_xact_tuples_returned('pgcoord.campaign_queue_due'::regclass)"
        )
    )
