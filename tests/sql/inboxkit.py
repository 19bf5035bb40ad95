"""Helpers for the SQL tests of the inbox (API.md section 2): its contract, the calls in
named notation, the tables' state for "nothing changed" checks, and claims timed against
the server clock."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from sqlkit import Conn, poll, scalar, server_clock

from pgcoord.types import Batch, BufferStatus, Ingested

# The section-2 contract, as the server prints it back (pg_get_function_arguments and
# pg_get_function_result).
INBOX_CONTRACT: dict[str, tuple[str, str]] = {
    "message_ingest": (
        "p_provider text, p_provider_message_id text, p_conversation_key text, p_body text,"
        " p_payload jsonb DEFAULT '{}'::jsonb, p_debounce interval DEFAULT '00:00:10'::interval,"
        " p_max_wait interval DEFAULT '00:01:00'::interval",
        "TABLE(message_id bigint, duplicate boolean, received_at timestamp with time zone)",
    ),
    "buffer_claim": (
        "p_worker text, p_limit integer DEFAULT 10, p_lease interval DEFAULT '00:01:00'::interval",
        "TABLE(conversation_key text, claim_token bigint, message_ids bigint[], bodies text[],"
        " first_message_at timestamp with time zone, last_message_at timestamp with time zone,"
        " attempt integer)",
    ),
    "buffer_complete": ("p_conversation_key text, p_claim_token bigint", "boolean"),
    "buffer_fail": (
        "p_conversation_key text, p_claim_token bigint, p_error text,"
        " p_retry_in interval DEFAULT '00:01:00'::interval",
        "boolean",
    ),
    "buffer_extend": (
        "p_conversation_key text, p_claim_token bigint,"
        " p_lease interval DEFAULT '00:01:00'::interval",
        "timestamp with time zone",
    ),
}
SECTION_2 = tuple(INBOX_CONTRACT)
# Not in API.md, granted like the API: how long until a buffer is due (the worker's
# sleep), giving a claim back without counting a try (a worker that stops), parking a
# batch that no retry can mend, a worker's fail that says whether it parked the batch,
# replaying dead batches, the retention of answered messages, and the messages' payloads.
HELPERS = (
    "buffer_due_in",
    "buffer_release",
    "buffer_fail_for_good",
    "buffer_failed",
    "buffer_revive",
    "message_prune",
    "message_payloads",
)
STATUS_COLUMNS = (
    "conversation_key, message_count, first_message_at, last_message_at, flush_at,"
    " claimed_by, claimed_until, attempt, dead, last_error"
)

LONG = timedelta(seconds=30)
NOW = timedelta(0)  # a debounce of zero: due at once
MAX_FAILED_TRIES = 5  # the 5th failed try parks the batch


def ingest(
    conn: Conn,
    provider_message_id: str,
    conversation_key: str,
    body: str | None = None,
    *,
    provider: str = "wa",
    payload: Mapping[str, Any] | None = None,
    debounce: timedelta = NOW,
    max_wait: timedelta = LONG,
) -> Ingested:
    """message_ingest with every argument given; the body defaults to the message id."""
    with conn.cursor(row_factory=class_row(Ingested)) as cur:
        cur.execute(
            "SELECT * FROM pgcoord.message_ingest(p_provider => %s, p_provider_message_id => %s,"
            " p_conversation_key => %s, p_body => %s, p_payload => %s, p_debounce => %s,"
            " p_max_wait => %s)",
            (
                provider,
                provider_message_id,
                conversation_key,
                provider_message_id if body is None else body,
                Jsonb(dict(payload or {})),
                debounce,
                max_wait,
            ),
        )
        rows = cur.fetchall()
    assert len(rows) == 1, f"message_ingest returned {len(rows)} rows"
    return rows[0]


def ingest_many(
    conn: Conn,
    messages: list[tuple[str, str, str]],
    *,
    debounce: timedelta = NOW,
    max_wait: timedelta = LONG,
) -> list[Ingested]:
    """message_ingest for each (provider message id, conversation key, body) in turn, in
    one statement: a quick way to fill the buffers."""
    with conn.cursor(row_factory=class_row(Ingested)) as cur:
        cur.execute(
            "SELECT i.* FROM unnest(%s::text[], %s::text[], %s::text[]) WITH ORDINALITY"
            " AS m (provider_message_id, conversation_key, body, n)"
            " CROSS JOIN LATERAL pgcoord.message_ingest(p_provider => 'wa',"
            " p_provider_message_id => m.provider_message_id,"
            " p_conversation_key => m.conversation_key, p_body => m.body,"
            " p_debounce => %s, p_max_wait => %s) AS i ORDER BY m.n",
            (*([m[i] for m in messages] for i in range(3)), debounce, max_wait),
        )
        rows = cur.fetchall()
    assert len(rows) == len(messages)
    return rows


def claim(conn: Conn, worker: str = "w", limit: int = 10, lease: timedelta = LONG) -> list[Batch]:
    with conn.cursor(row_factory=class_row(Batch)) as cur:
        cur.execute(
            "SELECT * FROM pgcoord.buffer_claim(p_worker => %s, p_limit => %s, p_lease => %s)",
            (worker, limit, lease),
        )
        return cur.fetchall()


def claim_one(conn: Conn, worker: str = "w", lease: timedelta = LONG) -> Batch:
    bursts = claim(conn, worker, 10, lease)
    assert len(bursts) == 1, f"expected one due conversation, claimed {bursts}"
    return bursts[0]


def complete(conn: Conn, conversation_key: str, token: int) -> bool:
    value = scalar(
        conn,
        "SELECT pgcoord.buffer_complete(p_conversation_key => %s, p_claim_token => %s)",
        conversation_key,
        token,
    )
    assert isinstance(value, bool)
    return value


def fail_for_good(conn: Conn, conversation_key: str, token: int, error: str = "blocked") -> bool:
    value = scalar(
        conn,
        "SELECT pgcoord.buffer_fail_for_good(p_conversation_key => %s, p_claim_token => %s,"
        " p_error => %s)",
        conversation_key,
        token,
        error,
    )
    assert isinstance(value, bool)
    return value


def fail(
    conn: Conn, conversation_key: str, token: int, error: str = "boom", retry_in: timedelta = NOW
) -> bool:
    value = scalar(
        conn,
        "SELECT pgcoord.buffer_fail(p_conversation_key => %s, p_claim_token => %s,"
        " p_error => %s, p_retry_in => %s)",
        conversation_key,
        token,
        error,
        retry_in,
    )
    assert isinstance(value, bool)
    return value


def extend(
    conn: Conn, conversation_key: str, token: int, lease: timedelta = LONG
) -> datetime | None:
    value = scalar(
        conn,
        "SELECT pgcoord.buffer_extend(p_conversation_key => %s, p_claim_token => %s,"
        " p_lease => %s)",
        conversation_key,
        token,
        lease,
    )
    assert value is None or isinstance(value, datetime)
    return value


def due_in(conn: Conn) -> timedelta | None:
    value = scalar(conn, "SELECT pgcoord.buffer_due_in()")
    assert value is None or isinstance(value, timedelta)
    return value


def statuses(conn: Conn, conversation_key: str | None = None) -> list[BufferStatus]:
    """buffer_status rows (of one conversation), dead ones first."""
    with conn.cursor(row_factory=class_row(BufferStatus)) as cur:
        cur.execute(
            f"SELECT {STATUS_COLUMNS} FROM pgcoord.buffer_status"
            " WHERE %(key)s::text IS NULL OR conversation_key = %(key)s"
            " ORDER BY dead DESC, conversation_key",
            {"key": conversation_key},
        )
        return cur.fetchall()


def status_of(conn: Conn, conversation_key: str) -> BufferStatus:
    rows = statuses(conn, conversation_key)
    assert len(rows) == 1, f"{conversation_key}: {len(rows)} buffer_status rows"
    return rows[0]


def message_states(conn: Conn, ids: list[int]) -> list[str]:
    return [
        state
        for (state,) in conn.execute(
            "SELECT state FROM pgcoord.messages WHERE id = any(%s) ORDER BY id", (ids,)
        ).fetchall()
    ]


def snapshot(conn: Conn, sequences: bool = True) -> dict[str, Any]:
    """Everything section 2 stores: both tables, the claim tokens, and (optionally) the
    identity sequences behind the ids."""
    state: dict[str, Any] = {
        "messages": conn.execute("SELECT * FROM pgcoord.messages ORDER BY id").fetchall(),
        "buffers": conn.execute("SELECT * FROM pgcoord.buffers ORDER BY id").fetchall(),
        "claim_token": conn.execute(
            "SELECT last_value, is_called FROM pgcoord.claim_token"
        ).fetchone(),
    }
    if sequences:
        for table in ("messages", "buffers"):
            state[f"{table}_id"] = scalar(
                conn,
                "SELECT pg_sequence_last_value(pg_get_serial_sequence(%s, 'id'))",
                f"pgcoord.{table}",
            )
    return state


def until_server_time(conn: Conn, moment: datetime, what: str = "") -> None:
    """Return once the server clock has reached `moment`."""
    poll(
        lambda: bool(scalar(conn, "SELECT clock_timestamp() >= %s", moment)),
        what or f"the server clock to reach {moment}",
    )


def until_lease_ran_out(conn: Conn, conversation_key: str) -> None:
    poll(
        lambda: bool(
            scalar(
                conn,
                "SELECT coalesce(bool_and(claimed_until < clock_timestamp()), false)"
                " FROM pgcoord.buffer_status WHERE conversation_key = %s AND NOT dead",
                conversation_key,
            )
        ),
        f"the lease on {conversation_key!r} to run out",
    )


@dataclass(frozen=True)
class TimedClaim:
    """A buffer_claim and the server clock read just before and just after it: the
    claim's own clock reading lies between them."""

    before: datetime
    bursts: list[Batch]
    after: datetime


def timed_claim(conn: Conn, worker: str = "w", lease: timedelta = LONG) -> TimedClaim:
    before = server_clock(conn)
    bursts = claim(conn, worker, 10, lease)
    return TimedClaim(before, bursts, server_clock(conn))


def claim_when_due(
    conn: Conn, due_at: datetime, worker: str = "w", lease: timedelta = LONG, timeout: float = 10.0
) -> list[TimedClaim]:
    """Claim again and again until something is claimed; every claim that began at or after
    `due_at` must find work, and none that ended before it may. Returns all the tries, the
    successful one last."""
    tries = []
    deadline = time.monotonic() + timeout
    while True:
        timed = timed_claim(conn, worker, lease)
        tries.append(timed)
        if timed.bursts:
            assert timed.after >= due_at, (
                f"claimed at or before {timed.after}, but not due until {due_at}"
            )
            return tries
        assert timed.before < due_at, f"nothing claimed at {timed.before}, due since {due_at}"
        assert time.monotonic() < deadline, f"nothing due after {timeout} s"
        time.sleep(0.005)
