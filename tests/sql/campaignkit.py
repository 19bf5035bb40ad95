"""Helpers for the SQL tests of the campaign send queue (API.md section 3): its contract,
the calls in named notation, rows for the results and views, the tables' state for
"nothing changed" checks, and waiting on the server clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from sqlkit import Conn, poll, scalar

from pgcoord.types import CampaignStats

T = TypeVar("T")

# The section-3 contract, as the server prints it back (pg_get_function_arguments and
# pg_get_function_result).
CAMPAIGN_CONTRACT: dict[str, tuple[str, str]] = {
    "campaign_create": (
        "p_name text, p_max_retries integer DEFAULT 3,"
        " p_retry_backoff interval[] DEFAULT '{00:05:00,00:15:00,00:30:00}'::interval[],"
        " p_stale_after interval DEFAULT '01:00:00'::interval",
        "bigint",
    ),
    "campaign_set_status": ("p_run_id bigint, p_status text", "text"),
    "campaign_enqueue": ("p_run_id bigint, p_items jsonb", "integer"),
    "campaign_claim": (
        "p_worker text, p_limit integer DEFAULT 15,"
        " p_lease interval DEFAULT '00:05:00'::interval, p_run_id bigint DEFAULT NULL::bigint",
        "TABLE(message_id bigint, run_id bigint, recipient text, payload jsonb,"
        " attempt integer, claim_token bigint, scheduled_at timestamp with time zone)",
    ),
    "campaign_complete": (
        "p_message_id bigint, p_claim_token bigint, p_metrics jsonb DEFAULT '{}'::jsonb",
        "boolean",
    ),
    "campaign_complete_many": (
        "p_message_ids bigint[], p_claim_tokens bigint[], p_metrics jsonb[] DEFAULT NULL::jsonb[]",
        "integer",
    ),
    "campaign_fail": (
        "p_message_id bigint, p_claim_token bigint, p_error text,"
        " p_retry_after interval DEFAULT NULL::interval",
        "TABLE(status text, next_attempt_at timestamp with time zone)",
    ),
    "campaign_snooze": (
        "p_message_id bigint, p_claim_token bigint, p_delay interval",
        "boolean",
    ),
    "campaign_skip_stale": ("p_older_than interval DEFAULT NULL::interval", "integer"),
}
SECTION_3 = tuple(CAMPAIGN_CONTRACT)
# Not in API.md, granted like the API, for the worker: a heartbeat, giving a claim back
# without spending a try (a worker that stops), how long an idle worker may sleep (and
# the marks of an idle worker, which enqueues notify, and of a busy one), a batched completion
# answering which messages it marked sent, that completion followed by the next claim
# in one call, and the metrics of many messages unpacked from one JSON array; for
# operators, a run's throughput, retries, snoozes and handler times, and the retention
# of ended runs; for producers, an enqueue under a key, safe to call again; for
# handlers, a failed try that no retry can mend.
CAMPAIGN_HELPERS: dict[str, tuple[str, str]] = {
    "campaign_extend": (
        "p_message_id bigint, p_claim_token bigint, p_lease interval DEFAULT '00:05:00'::interval",
        "timestamp with time zone",
    ),
    "campaign_release": ("p_message_id bigint, p_claim_token bigint", "boolean"),
    "campaign_fail_for_good": (
        "p_message_id bigint, p_claim_token bigint, p_error text",
        "boolean",
    ),
    "campaign_due_in": ("p_run_id bigint DEFAULT NULL::bigint", "interval"),
    "campaign_idle": (
        "p_run_id bigint DEFAULT NULL::bigint, OUT due_in interval, OUT settled boolean",
        "record",
    ),
    "campaign_busy": ("p_run_id bigint DEFAULT NULL::bigint", "boolean"),
    "campaign_completed": (
        "p_message_ids bigint[], p_claim_tokens bigint[], p_metrics jsonb[] DEFAULT NULL::jsonb[]",
        "bigint[]",
    ),
    "campaign_metrics": ("p_metrics jsonb", "jsonb[]"),
    "campaign_completed_then_claim": (
        "p_message_ids bigint[], p_claim_tokens bigint[], p_metrics jsonb, p_worker text,"
        " p_limit integer, p_lease interval, p_run_id bigint",
        "TABLE(completed bigint[], message_id bigint, run_id bigint, recipient text,"
        " payload jsonb, attempt integer, claim_token bigint,"
        " scheduled_at timestamp with time zone)",
    ),
    "campaign_stats": (
        "p_run_id bigint DEFAULT NULL::bigint",
        "TABLE(run_id bigint, sent_last_minute bigint, retries bigint, snoozes bigint,"
        " handler_p50_ms double precision, handler_p95_ms double precision)",
    ),
    "campaign_prune": ("p_older_than interval, p_limit integer DEFAULT 10000", "integer"),
    "campaign_enqueue_once": (
        "p_run_id bigint, p_key text, p_items jsonb",
        "TABLE(enqueued integer, duplicate boolean)",
    ),
}
HELPERS = tuple(CAMPAIGN_HELPERS)
VIEWS = ("campaign_progress", "campaign_message_status")
CHANNEL = "pgcoord_campaigns"
GROUP_SIZE = 15  # messages scheduled at the same instant share a queue row up to this

LONG = timedelta(seconds=30)
NOW = timedelta(0)
SHORT = timedelta(milliseconds=100)
DEFAULT_BACKOFF = (timedelta(minutes=5), timedelta(minutes=15), timedelta(minutes=30))


@dataclass(frozen=True, slots=True)
class Claimed:
    """A row of campaign_claim, column for column."""

    message_id: int
    run_id: int
    recipient: str
    payload: dict[str, Any]
    attempt: int
    claim_token: int
    scheduled_at: datetime


@dataclass(frozen=True, slots=True)
class Failed:
    """The row of campaign_fail."""

    status: str
    next_attempt_at: datetime | None


@dataclass(frozen=True, slots=True)
class Progress:
    """A row of campaign_progress, column for column."""

    run_id: int
    name: str
    status: str
    pending: int
    processing: int
    sent: int
    failed: int
    skipped: int
    total: int


@dataclass(frozen=True, slots=True)
class MessageStatus:
    """A row of campaign_message_status, column for column."""

    message_id: int
    run_id: int
    recipient: str
    status: str
    attempt: int
    snoozes: int
    scheduled_at: datetime
    next_attempt_at: datetime | None
    claimed_by: str | None
    claimed_until: datetime | None
    last_error: str | None
    finished_at: datetime | None
    metrics: dict[str, Any] | None
    sent_at: datetime | None


def scalar_of(kind: type[T], conn: Conn, query: Any, *params: Any) -> T:
    """The single value a statement yields, which must be a `kind`."""
    value = scalar(conn, query, *params)
    assert isinstance(value, kind), f"{value!r} is no {kind.__name__}"
    return value


def create(
    conn: Conn,
    name: str = "campaign",
    max_retries: int = 3,
    retry_backoff: Sequence[timedelta] = DEFAULT_BACKOFF,
    stale_after: timedelta = timedelta(hours=1),
) -> int:
    return scalar_of(
        int,
        conn,
        "SELECT pgcoord.campaign_create(p_name => %s, p_max_retries => %s,"
        " p_retry_backoff => %s::interval[], p_stale_after => %s)",
        name,
        max_retries,
        list(retry_backoff),
        stale_after,
    )


def set_status(conn: Conn, run_id: int, status: str) -> str:
    return scalar_of(
        str,
        conn,
        "SELECT pgcoord.campaign_set_status(p_run_id => %s, p_status => %s)",
        run_id,
        status,
    )


def item(
    recipient: str,
    payload: Mapping[str, Any] | None = None,
    scheduled_at: datetime | None = None,
) -> dict[str, Any]:
    """One enqueue item; the optional fields only when given."""
    found: dict[str, Any] = {"recipient": recipient}
    if payload is not None:
        found["payload"] = dict(payload)
    if scheduled_at is not None:
        found["scheduled_at"] = scheduled_at.isoformat()
    return found


def enqueue(conn: Conn, run_id: int, items: Any) -> int:
    """campaign_enqueue of `items`, any JSON value (a list of item dicts, usually)."""
    return scalar_of(
        int,
        conn,
        "SELECT pgcoord.campaign_enqueue(p_run_id => %s, p_items => %s)",
        run_id,
        Jsonb(items),
    )


def enqueue_once(conn: Conn, run_id: int, key: Any, items: Any) -> tuple[int, bool]:
    """campaign_enqueue_once: (enqueued, duplicate)."""
    row = conn.execute(
        "SELECT * FROM pgcoord.campaign_enqueue_once(p_run_id => %s, p_key => %s, p_items => %s)",
        (run_id, key, Jsonb(items)),
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def enqueue_many(
    conn: Conn, run_id: int, n: int, prefix: str = "r", scheduled_at: datetime | None = None
) -> list[int]:
    """n messages (recipients prefix0, prefix1...), returning their ids in enqueue order."""
    before = scalar(conn, "SELECT coalesce(max(id), 0) FROM pgcoord.campaign_messages")
    assert enqueue(conn, run_id, [item(f"{prefix}{i}", {"n": i}, scheduled_at) for i in range(n)])
    rows = conn.execute(
        "SELECT id FROM pgcoord.campaign_messages WHERE run_id = %s AND id > %s ORDER BY id",
        (run_id, before),
    ).fetchall()
    assert len(rows) == n
    return [row[0] for row in rows]


def claim(
    conn: Conn,
    worker: str = "w",
    limit: int = 15,
    lease: timedelta = LONG,
    run_id: int | None = None,
) -> list[Claimed]:
    with conn.cursor(row_factory=class_row(Claimed)) as cur:
        cur.execute(
            "SELECT * FROM pgcoord.campaign_claim(p_worker => %s, p_limit => %s,"
            " p_lease => %s, p_run_id => %s)",
            (worker, limit, lease, run_id),
        )
        return cur.fetchall()


def claim_one(
    conn: Conn, worker: str = "w", lease: timedelta = LONG, run_id: int | None = None
) -> Claimed:
    claimed = claim(conn, worker, 1, lease, run_id)
    assert len(claimed) == 1, f"expected one due message, claimed {claimed}"
    return claimed[0]


def complete(
    conn: Conn, message_id: int, token: int, metrics: Mapping[str, Any] | None = None
) -> bool:
    return scalar_of(
        bool,
        conn,
        "SELECT pgcoord.campaign_complete(p_message_id => %s, p_claim_token => %s,"
        " p_metrics => %s)",
        message_id,
        token,
        Jsonb(dict(metrics or {})),
    )


def complete_many(
    conn: Conn,
    message_ids: Sequence[int],
    tokens: Sequence[int],
    metrics: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    return scalar_of(
        int,
        conn,
        "SELECT pgcoord.campaign_complete_many(p_message_ids => %s, p_claim_tokens => %s,"
        " p_metrics => %s::jsonb[])",
        list(message_ids),
        list(tokens),
        None if metrics is None else [Jsonb(dict(m)) for m in metrics],
    )


def complete_all(conn: Conn, claimed: Sequence[Claimed]) -> int:
    return complete_many(conn, [c.message_id for c in claimed], [c.claim_token for c in claimed])


def fail(
    conn: Conn,
    message_id: int,
    token: int,
    error: str = "boom",
    retry_after: timedelta | None = None,
) -> Failed | None:
    with conn.cursor(row_factory=class_row(Failed)) as cur:
        cur.execute(
            "SELECT * FROM pgcoord.campaign_fail(p_message_id => %s, p_claim_token => %s,"
            " p_error => %s, p_retry_after => %s)",
            (message_id, token, error, retry_after),
        )
        rows = cur.fetchall()
    assert len(rows) <= 1
    return rows[0] if rows else None


def fail_for_good(conn: Conn, message_id: int, token: int, error: str = "no such number") -> bool:
    return scalar_of(
        bool,
        conn,
        "SELECT pgcoord.campaign_fail_for_good(p_message_id => %s, p_claim_token => %s,"
        " p_error => %s)",
        message_id,
        token,
        error,
    )


def snooze(conn: Conn, message_id: int, token: int, delay: timedelta = NOW) -> bool:
    return scalar_of(
        bool,
        conn,
        "SELECT pgcoord.campaign_snooze(p_message_id => %s, p_claim_token => %s, p_delay => %s)",
        message_id,
        token,
        delay,
    )


def extend(conn: Conn, message_id: int, token: int, lease: timedelta = LONG) -> datetime | None:
    value = scalar(
        conn,
        "SELECT pgcoord.campaign_extend(p_message_id => %s, p_claim_token => %s, p_lease => %s)",
        message_id,
        token,
        lease,
    )
    assert value is None or isinstance(value, datetime)
    return value


def release(conn: Conn, message_id: int, token: int) -> bool:
    return scalar_of(
        bool,
        conn,
        "SELECT pgcoord.campaign_release(p_message_id => %s, p_claim_token => %s)",
        message_id,
        token,
    )


def skip_stale(conn: Conn, older_than: timedelta | None = None) -> int:
    return scalar_of(
        int, conn, "SELECT pgcoord.campaign_skip_stale(p_older_than => %s::interval)", older_than
    )


def prune(conn: Conn, older_than: timedelta | None, limit: int | None = 10_000) -> int:
    return scalar_of(
        int,
        conn,
        "SELECT pgcoord.campaign_prune(p_older_than => %s::interval, p_limit => %s::integer)",
        older_than,
        limit,
    )


def due_in(conn: Conn, run_id: int | None = None) -> timedelta | None:
    value = scalar(conn, "SELECT pgcoord.campaign_due_in(p_run_id => %s::bigint)", run_id)
    assert value is None or isinstance(value, timedelta)
    return value


def idle(conn: Conn, run_id: int | None = None) -> tuple[timedelta | None, bool]:
    """campaign_idle: mark `conn`'s session an idle worker; how long it may sleep, and
    whether that look is settled."""
    row = conn.execute(
        "SELECT due_in, settled FROM pgcoord.campaign_idle(p_run_id => %s::bigint)", (run_id,)
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def busy(conn: Conn, run_id: int | None = None) -> bool:
    """campaign_busy: `conn`'s session says a worker is busy; whether it holds that mark."""
    return bool(scalar(conn, "SELECT pgcoord.campaign_busy(p_run_id => %s::bigint)", run_id))


def notified(listener: Conn, wait: float = 0.2) -> list[str]:
    """The pgcoord_campaigns payloads delivered to `listener` so far, waiting up to `wait`
    seconds for more."""
    listener.execute("SELECT 1")  # a round trip delivers what has arrived
    return [
        n.payload for n in listener.notifies(timeout=wait, stop_after=100) if n.channel == CHANNEL
    ]


def progress(conn: Conn, run_id: int) -> Progress:
    with conn.cursor(row_factory=class_row(Progress)) as cur:
        cur.execute("SELECT * FROM pgcoord.campaign_progress WHERE run_id = %s", (run_id,))
        rows = cur.fetchall()
    assert len(rows) == 1, f"{len(rows)} campaign_progress rows for run {run_id}"
    return rows[0]


def stats(conn: Conn, run_id: int | None = None) -> list[CampaignStats]:
    """campaign_stats of one run, or of every run."""
    with conn.cursor(row_factory=class_row(CampaignStats)) as cur:
        cur.execute("SELECT * FROM pgcoord.campaign_stats(p_run_id => %s::bigint)", (run_id,))
        return cur.fetchall()


def stats_of(conn: Conn, run_id: int) -> CampaignStats:
    [row] = stats(conn, run_id)
    assert row.run_id == run_id
    return row


def counts(conn: Conn, run_id: int) -> tuple[int, int, int, int, int, int]:
    """pending, processing, sent, failed, skipped, total of a run."""
    p = progress(conn, run_id)
    assert p.pending + p.processing + p.sent + p.failed + p.skipped == p.total
    return p.pending, p.processing, p.sent, p.failed, p.skipped, p.total


def statuses(conn: Conn, message_ids: Sequence[int]) -> list[MessageStatus]:
    with conn.cursor(row_factory=class_row(MessageStatus)) as cur:
        cur.execute(
            "SELECT * FROM pgcoord.campaign_message_status WHERE message_id = any(%s)"
            " ORDER BY message_id",
            (list(message_ids),),
        )
        rows = cur.fetchall()
    assert len(rows) == len(set(message_ids))
    return rows


def status_of(conn: Conn, message_id: int) -> MessageStatus:
    [row] = statuses(conn, [message_id])
    return row


# every table of section 3
TABLES = (
    "campaign_runs",
    "campaign_enqueues",
    "campaign_enqueue_keys",
    "campaign_messages",
    "campaign_queue",
    "campaign_outcomes",
)


def snapshot(conn: Conn) -> dict[str, Any]:
    """Everything section 3 stores, and the sequences behind its ids and tokens."""
    state: dict[str, Any] = {
        table: conn.execute(f"SELECT * FROM pgcoord.{table} ORDER BY 1").fetchall()
        for table in TABLES
    }
    state["campaign_token"] = conn.execute(
        "SELECT last_value, is_called FROM pgcoord.campaign_token"
    ).fetchone()
    for table in ("campaign_runs", "campaign_messages"):
        state[f"{table}_id"] = scalar(
            conn,
            "SELECT pg_sequence_last_value(pg_get_serial_sequence(%s, 'id'))",
            f"pgcoord.{table}",
        )
    return state


def until_lease_ran_out(conn: Conn, message_id: int) -> None:
    """Return once the server clock has passed the lease of the claim holding the message."""
    poll(
        lambda: bool(
            scalar(
                conn,
                "SELECT coalesce(bool_and(claimed_until < clock_timestamp()), false)"
                " FROM pgcoord.campaign_message_status WHERE message_id = %s",
                message_id,
            )
        ),
        f"the lease on message {message_id} to run out",
    )
