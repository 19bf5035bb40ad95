"""A session keeps the plans it made (the claims' on a generic plan for the session's life,
the other statements once they go generic after a few calls) until its tables are
analyzed again. Workers, webhooks and lock holders start on empty tables, and autovacuum
analyzes a table so once it drains. Once thousands of rows have arrived, each call of a
session that planned on the empty, analyzed tables still reads only the rows it works on:
never a scan of a whole table, nor of one of its indexes (every function that reads a
table runs with enable_seqscan off)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from campaignkit import claim as campaign_claim
from campaignkit import create, enqueue, item
from inboxkit import claim as buffer_claim
from inboxkit import ingest_many
from sqlkit import Conn, connections, scalar

ROWS = 3_000  # rows that arrive after the plans were made (groups of 15 in the queue)
BUDGET = 40  # rows a call on one key may read


def rows_read(conn: Conn, tables: tuple[str, ...]) -> int:
    """Rows of `tables` that this transaction's scans have returned so far: from the
    tables' sequential scans and from their indexes."""
    names = [f"pgcoord.{table}" for table in tables]
    return int(
        scalar(
            conn,
            "SELECT sum(pg_stat_get_xact_tuples_returned(c.oid)) FROM pg_class AS c"
            " WHERE c.oid = ANY(%s::regclass[]) OR c.oid IN ("
            "  SELECT i.indexrelid FROM pg_index AS i WHERE i.indrelid = ANY(%s::regclass[]))",
            names,
            names,
        )
    )


def reads_after_planning_on_empty(
    db_url: str,
    conn: Conn,
    tables: tuple[str, ...],
    calls: Mapping[str, str],
    fill: Callable[[], None],
    mine: Callable[[Conn, int], dict[str, Any]],
    warm: Mapping[str, Any],
) -> dict[str, int]:
    """Each call, in a session of its own that made its plans on the empty, analyzed
    `tables` (six calls with `warm`: past the custom plans a cached plan starts with),
    made once after `fill` with the session's own `mine(session, n)` arguments: the rows
    of `tables` it read."""
    for table in tables:
        conn.execute(f"ANALYZE pgcoord.{table}")
        reltuples = scalar(
            conn, "SELECT reltuples FROM pg_class WHERE oid = %s::regclass", f"pgcoord.{table}"
        )
        assert reltuples == 0, (table, reltuples)
    with connections(db_url, len(calls)) as sessions:
        by_call = dict(zip(calls.items(), sessions, strict=True))
        for n, ((_, statement), session) in enumerate(by_call.items()):
            for m in range(6):
                session.execute(statement, {**warm, "n": f"warm-{n}-{m}"})
        fill()
        read = {}
        for n, ((name, statement), session) in enumerate(by_call.items()):
            arguments = mine(session, n)
            with session.transaction():
                before = rows_read(session, tables)
                session.execute(statement, {**arguments, "n": str(n)})
                read[name] = rows_read(session, tables) - before
    return read


def over_budget(read: Mapping[str, int], budget: Mapping[str, int] | None = None) -> dict[str, int]:
    limits = budget or {}
    return {name: n for name, n in read.items() if n > limits.get(name, BUDGET)}


LOCK_CALLS: dict[str, str] = {
    "acquire a free key": "SELECT * FROM pgcoord.lock_acquire('new-' || %(n)s, 'me')",
    "acquire a held key": "SELECT * FROM pgcoord.lock_acquire(%(key)s, 'someone else')",
    "renew": "SELECT * FROM pgcoord.lock_acquire(%(key)s, %(owner)s)",
    "take over an expired lease": "SELECT * FROM pgcoord.lock_acquire(%(expired)s, 'me')",
    "extend": "SELECT pgcoord.lock_extend(%(key)s, %(owner)s)",
    "is current": "SELECT pgcoord.lock_is_current(%(key)s, %(token)s)",
    "release": "SELECT pgcoord.lock_release(%(key)s, %(owner)s)",
}


def test_lock_calls_read_one_lease(db_url: str, conn: Conn) -> None:
    def fill() -> None:
        conn.execute(
            "SELECT pgcoord.lock_acquire('held-' || i, 'owner-' || i)"
            " FROM generate_series(1, %s) AS i",
            (ROWS,),
        )
        # leases whose time ran out, as a crashed holder leaves them
        conn.execute(
            "UPDATE pgcoord.locks SET expires_at = clock_timestamp() - interval '1 min'"
            " WHERE key LIKE 'held-%' AND substr(key, 6)::integer % 10 = 0"
        )

    def mine(session: Conn, n: int) -> dict[str, Any]:
        key, owner = f"mine-{n}", f"me-{n}"
        [[token]] = session.execute(
            "SELECT token FROM pgcoord.lock_acquire(%s, %s)", (key, owner)
        ).fetchall()
        return {"key": key, "owner": owner, "token": token, "expired": f"held-{(n + 1) * 10}"}

    warm = {"key": "nobody", "owner": "nobody", "token": 0, "expired": "nobody"}
    read = reads_after_planning_on_empty(db_url, conn, ("locks",), LOCK_CALLS, fill, mine, warm)
    assert over_budget(read) == {}, read


RATE_CALLS: dict[str, str] = {
    "acquire a new key": "SELECT * FROM pgcoord.rate_acquire('new-' || %(n)s, 10, 10)",
    "acquire": "SELECT * FROM pgcoord.rate_acquire(%(key)s, 10, 10)",
    "pause": "SELECT pgcoord.rate_pause(%(key)s, interval '1 min')",
    "reset": "SELECT pgcoord.rate_reset(%(key)s)",
}


def test_rate_calls_read_one_bucket(db_url: str, conn: Conn) -> None:
    def fill() -> None:
        conn.execute(
            "SELECT pgcoord.rate_acquire('key-' || i, 10, 10) FROM generate_series(1, %s) AS i",
            (ROWS,),
        )

    def mine(session: Conn, n: int) -> dict[str, Any]:
        return {"key": f"key-{n + 1}"}

    read = reads_after_planning_on_empty(
        db_url, conn, ("rates",), RATE_CALLS, fill, mine, {"key": "nobody"}
    )
    assert over_budget(read) == {}, read


# every call a worker or a webhook makes on the inbox; each takes the conversation its
# session claimed (key, token)
INBOX_CALLS: dict[str, str] = {
    "ingest into a new conversation": "SELECT * FROM pgcoord.message_ingest("
    "'wa', 'new-' || %(n)s, 'new-' || %(n)s, 'hi', '{}', interval '1 hour')",
    "ingest into a claimed conversation": "SELECT * FROM pgcoord.message_ingest("
    "'wa', 'more-' || %(n)s, %(key)s, 'hi', '{}', interval '1 hour')",
    "claim": "SELECT * FROM pgcoord.buffer_claim('w', 10, interval '1 min')",
    "complete": "SELECT pgcoord.buffer_complete(%(key)s, %(token)s)",
    "fail": "SELECT pgcoord.buffer_fail(%(key)s, %(token)s, 'boom', interval '1 min')",
    "extend": "SELECT pgcoord.buffer_extend(%(key)s, %(token)s, interval '1 min')",
    "release": "SELECT pgcoord.buffer_release(%(key)s, %(token)s)",
    "due in": "SELECT pgcoord.buffer_due_in()",
    "revive": "SELECT pgcoord.buffer_revive(%(key)s)",
    "payloads": "SELECT * FROM pgcoord.message_payloads(%(ids)s)",
    "prune": "SELECT pgcoord.message_prune(interval '1 day', 100)",
}


def test_inbox_calls_read_the_conversations_they_work_on(db_url: str, conn: Conn) -> None:
    """After an outage, say, 3,000 conversations are due at once."""

    def fill() -> None:
        ingest_many(conn, [(f"due-{i}", f"due-{i}", "x") for i in range(ROWS)])
        conn.execute("DELETE FROM pgcoord.messages WHERE conversation_key LIKE 'warm-%'")

    def mine(session: Conn, n: int) -> dict[str, Any]:
        [batch] = buffer_claim(session, limit=1)
        return {"key": batch.conversation_key, "token": batch.claim_token, "ids": batch.message_ids}

    read = reads_after_planning_on_empty(
        db_url,
        conn,
        ("buffers", "messages"),
        INBOX_CALLS,
        fill,
        mine,
        {"key": "nobody", "token": 0, "ids": [0]},
    )
    # the claim works on ten conversations: about 9 entries each (the due entry, the
    # buffer's key in each statement, its messages)
    assert over_budget(read, {"claim": 100}) == {}, read


# every call a worker or a producer makes on the queue; each takes the session's first
# claimed message (id, token) and the run
QUEUE_CALLS: dict[str, str] = {
    "claim": "SELECT * FROM pgcoord.campaign_claim('w', 15, interval '1 min', %(run)s)",
    "claim of any run": "SELECT * FROM pgcoord.campaign_claim('w', 15, interval '1 min')",
    "completed then claim": "SELECT * FROM pgcoord.campaign_completed_then_claim("
    "ARRAY[%(id)s], ARRAY[%(token)s], NULL, 'w', 15, interval '1 min', %(run)s)",
    "complete many": "SELECT pgcoord.campaign_complete_many(ARRAY[%(id)s], ARRAY[%(token)s])",
    "complete": "SELECT pgcoord.campaign_complete(%(id)s, %(token)s)",
    "fail": "SELECT * FROM pgcoord.campaign_fail(%(id)s, %(token)s, 'boom')",
    "snooze": "SELECT pgcoord.campaign_snooze(%(id)s, %(token)s, interval '1 min')",
    "extend": "SELECT pgcoord.campaign_extend(%(id)s, %(token)s, interval '1 min')",
    "release": "SELECT pgcoord.campaign_release(%(id)s, %(token)s)",
    "due in": "SELECT pgcoord.campaign_due_in(%(run)s)",
    "idle": "SELECT * FROM pgcoord.campaign_idle(%(run)s)",
    "pause and resume": "SELECT pgcoord.campaign_set_status(%(run)s, 'paused'),"
    " pgcoord.campaign_set_status(%(run)s, 'running')",
}


def test_campaign_calls_read_the_groups_they_work_on(db_url: str, conn: Conn) -> None:
    """Workers start on an empty queue (between campaigns); then a campaign of 3,000
    groups arrives."""
    run_id = create(conn, "planned on empty")

    def fill() -> None:
        enqueue(conn, run_id, [item(f"+1555{n}") for n in range(ROWS * 15)])

    def mine(session: Conn, n: int) -> dict[str, Any]:
        [claimed] = campaign_claim(session, limit=1, run_id=run_id)
        return {"run": run_id, "id": claimed.message_id, "token": claimed.claim_token}

    read = reads_after_planning_on_empty(
        db_url,
        conn,
        ("campaign_queue",),
        QUEUE_CALLS,
        fill,
        mine,
        {"run": run_id, "id": 0, "token": 0},
    )
    assert over_budget(read) == {}, read
