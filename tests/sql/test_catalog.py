"""The installed schema, read from the catalog: the general rules every function keeps,
and the driver's dataclasses matching the result columns field for field."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from datetime import datetime, timedelta
from typing import Any

import campaignkit
import pytest
from inboxkit import HELPERS, MAX_FAILED_TRIES, SECTION_2, claim_one, fail, ingest
from psycopg.rows import class_row
from ratekit import RATE_HELPERS, SECTION_4
from sqlkit import LOCK_HELPERS, SECTION_1, Conn, acquire

from pgcoord.types import (
    Batch,
    BufferStatus,
    CampaignEnqueued,
    CampaignFailure,
    CampaignIdle,
    CampaignMessage,
    CampaignProgress,
    CampaignStats,
    Ingested,
    Lock,
    LockStatus,
    MessagePayload,
    RateStatus,
)

# PostgreSQL result types and the Python types psycopg gives them.
PYTHON_TYPES = {
    "boolean": bool,
    "text": str,
    "bigint": int,
    "integer": int,
    "double precision": float,
    "timestamp with time zone": datetime,
    "interval": timedelta,
    "bigint[]": list[int],
    "text[]": list[str],
    "jsonb": dict[str, Any],
}

# The API of API.md, sections 1 to 4.
API = (*SECTION_1, *SECTION_2, *campaignkit.SECTION_3, *SECTION_4)

# Stale clocks: the start of the transaction or of the statement.
STALE_CLOCK = re.compile(
    r"\bnow\s*\(|\bcurrent_(timestamp|time|date)\b|\blocaltime(stamp)?\b"
    r"|\b(transaction|statement)_timestamp\s*\(|'now'",
    re.IGNORECASE,
)


# the functions granted to pgcoord_client: the API and the helpers beyond it
EVERY = {*API, *HELPERS, *campaignkit.HELPERS, *RATE_HELPERS, *LOCK_HELPERS}


def functions(conn: Conn) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT p.oid::regprocedure::text AS signature, p.proname::text AS name,"
        " p.proconfig AS config, obj_description(p.oid, 'pg_proc') AS comment,"
        " p.proargnames AS arg_names, p.proargmodes AS arg_modes, p.pronargs AS nargs,"
        " p.prosecdef AS security_definer, p.provolatile AS volatility,"
        " pg_get_functiondef(p.oid) AS definition"
        " FROM pg_proc AS p WHERE p.pronamespace = 'pgcoord'::regnamespace ORDER BY 1"
    ).fetchall()
    names = ["signature", "name", "config", "comment", "arg_names", "arg_modes", "nargs"]
    names += ["security_definer", "volatility", "definition"]
    found = [dict(zip(names, row, strict=True)) for row in rows]
    assert {f["name"] for f in found} >= EVERY
    return found


def without_comments(source: str) -> str:
    source = re.sub(r"--[^\n]*", "", source)
    return re.sub(r"/\*.*?\*/", "", source, flags=re.DOTALL)


def test_every_function_pins_its_search_path(conn: Conn) -> None:
    for function in functions(conn):
        paths = [s for s in function["config"] or [] if s.startswith("search_path=")]
        assert paths, f"{function['signature']} does not pin search_path"
        schemas = [s.strip() for s in paths[0].removeprefix("search_path=").split(",")]
        assert schemas[0] in {"pg_catalog", "pgcoord"}, function["signature"]
        assert "public" not in schemas and '"$user"' not in schemas, function["signature"]
        if "pg_temp" in schemas:
            assert schemas[-1] == "pg_temp", "pg_temp must come last, or it comes first"


def test_every_function_has_a_comment(conn: Conn) -> None:
    for function in functions(conn):
        assert (function["comment"] or "").strip(), f"{function['signature']} has no COMMENT"


def test_every_argument_is_named_with_the_p_prefix(conn: Conn) -> None:
    for function in functions(conn):
        modes = function["arg_modes"] or ["i"] * function["nargs"]
        names = function["arg_names"] or []
        inputs = [n for n, m in zip(names, modes, strict=False) if m in {"i", "b", "v"}]
        assert len(inputs) == function["nargs"], f"{function['signature']}: unnamed argument"
        for name in inputs:
            assert re.fullmatch(r"p_[a-z0-9_]+", name), f"{function['signature']}: {name}"


def test_no_function_or_view_reads_a_stale_clock(conn: Conn) -> None:
    for function in functions(conn):
        body = without_comments(function["definition"])
        assert not STALE_CLOCK.search(body), f"{function['signature']}: {STALE_CLOCK.search(body)}"
    views = conn.execute(
        "SELECT c.oid::regclass::text, pg_get_viewdef(c.oid) FROM pg_class AS c"
        " WHERE c.relnamespace = 'pgcoord'::regnamespace AND c.relkind IN ('v', 'm')"
    ).fetchall()
    assert views, "pgcoord.lock_status at least"
    for name, definition in views:
        assert not STALE_CLOCK.search(definition), f"{name}: {STALE_CLOCK.search(definition)}"


PURE = {"campaign_metrics"}  # helpers that read nothing but their arguments


def test_the_api_functions_run_as_definer_and_are_volatile(conn: Conn) -> None:
    checked = set()
    for function in functions(conn):
        if function["name"] in {*API, *RATE_HELPERS, *LOCK_HELPERS}:
            assert function["security_definer"], function["signature"]
            # the clock moves: a STABLE lock_is_current could be folded once per statement
            assert function["volatility"] == "v", function["signature"]
            checked.add(function["name"])
        elif function["name"] in PURE:
            # a conversion of its argument alone: IMMUTABLE (plpgsql_check asks for it);
            # run as definer for raise_bad_argument, which the client may not call
            assert function["security_definer"], function["signature"]
            assert function["volatility"] == "i", function["signature"]
            checked.add(function["name"])
        elif function["name"] in {*HELPERS, *campaignkit.HELPERS}:
            # buffer_due_in only reads: STABLE will do, never IMMUTABLE (the clock moves)
            assert function["security_definer"], function["signature"]
            assert function["volatility"] in {"s", "v"}, function["signature"]
            checked.add(function["name"])
    assert checked == EVERY


def result_columns(conn: Conn, function: str) -> list[tuple[str, str]]:
    row = conn.execute(
        "SELECT p.proargnames, p.proargmodes,"
        " array(SELECT format_type(t, NULL) FROM unnest(p.proallargtypes) AS t)"
        " FROM pg_proc AS p"
        " WHERE p.pronamespace = 'pgcoord'::regnamespace AND p.proname = %s",
        (function,),
    ).fetchone()
    assert row is not None
    names, modes, types = row
    return [(n, t) for n, m, t in zip(names, modes, types, strict=True) if m in {"o", "b", "t"}]


def view_columns(conn: Conn, view: str) -> list[tuple[str, str]]:
    return [
        (name, type_)
        for name, type_ in conn.execute(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute AS a"
            " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped"
            " ORDER BY a.attnum",
            (view,),
        ).fetchall()
    ]


def dataclass_columns(cls: type) -> list[tuple[str, Any]]:
    hints = typing.get_type_hints(cls)
    return [(field.name, hints[field.name]) for field in dataclasses.fields(cls)]


def without_none(hint: Any) -> Any:
    """`datetime | None` -> datetime: a nullable column has the same type."""
    if isinstance(hint, types.UnionType):
        kept = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        assert len(kept) == 1, hint
        return kept[0]
    return hint


def holds(value: Any, hint: Any) -> bool:
    """isinstance for the hints of the dataclasses (X | None, list[X] included)."""
    if isinstance(hint, types.UnionType):
        return any(holds(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is list:
        [item] = typing.get_args(hint)
        return isinstance(value, list) and all(holds(v, item) for v in value)
    if typing.get_origin(hint) is dict:
        return isinstance(value, dict)
    return isinstance(value, hint)


@pytest.mark.parametrize(
    ("cls", "columns", "query"),
    [
        (
            Lock,
            lambda conn: result_columns(conn, "lock_acquire"),
            "SELECT * FROM pgcoord.lock_acquire(p_key => 'k', p_owner => 'o') LIMIT 0",
        ),
        (
            LockStatus,
            lambda conn: view_columns(conn, "pgcoord.lock_status"),
            "SELECT * FROM pgcoord.lock_status LIMIT 0",
        ),
        (
            Ingested,
            lambda conn: result_columns(conn, "message_ingest"),
            "SELECT * FROM pgcoord.message_ingest(p_provider => 'p', p_provider_message_id => 'm',"
            " p_conversation_key => 'c', p_body => 'b') LIMIT 0",
        ),
        (
            Batch,
            lambda conn: result_columns(conn, "buffer_claim"),
            "SELECT * FROM pgcoord.buffer_claim(p_worker => 'w') LIMIT 0",
        ),
        (
            BufferStatus,
            lambda conn: view_columns(conn, "pgcoord.buffer_status"),
            "SELECT * FROM pgcoord.buffer_status LIMIT 0",
        ),
        (
            CampaignMessage,
            lambda conn: result_columns(conn, "campaign_claim"),
            "SELECT * FROM pgcoord.campaign_claim(p_worker => 'w') LIMIT 0",
        ),
        (
            CampaignFailure,
            lambda conn: result_columns(conn, "campaign_fail"),
            "SELECT * FROM pgcoord.campaign_fail(p_message_id => 1, p_claim_token => 1,"
            " p_error => 'e') LIMIT 0",
        ),
        (
            CampaignEnqueued,
            lambda conn: result_columns(conn, "campaign_enqueue_once"),
            "SELECT * FROM pgcoord.campaign_enqueue_once(p_run_id => 1, p_key => 'k',"
            " p_items => '[]') LIMIT 0",
        ),
        (
            CampaignIdle,
            lambda conn: result_columns(conn, "campaign_idle"),
            "SELECT * FROM pgcoord.campaign_idle() LIMIT 0",
        ),
        (
            CampaignProgress,
            lambda conn: view_columns(conn, "pgcoord.campaign_progress"),
            "SELECT * FROM pgcoord.campaign_progress LIMIT 0",
        ),
        (
            campaignkit.MessageStatus,
            lambda conn: view_columns(conn, "pgcoord.campaign_message_status"),
            "SELECT * FROM pgcoord.campaign_message_status LIMIT 0",
        ),
        (
            CampaignStats,
            lambda conn: result_columns(conn, "campaign_stats"),
            "SELECT * FROM pgcoord.campaign_stats() LIMIT 0",
        ),
        (
            RateStatus,
            lambda conn: view_columns(conn, "pgcoord.rate_status"),
            "SELECT * FROM pgcoord.rate_status LIMIT 0",
        ),
        (
            MessagePayload,
            lambda conn: result_columns(conn, "message_payloads"),
            "SELECT * FROM pgcoord.message_payloads(p_message_ids => '{}') LIMIT 0",
        ),
    ],
    ids=[
        "Lock=lock_acquire",
        "LockStatus=lock_status",
        "Ingested=message_ingest",
        "Batch=buffer_claim",
        "BufferStatus=buffer_status",
        "CampaignMessage=campaign_claim",
        "CampaignFailure=campaign_fail",
        "CampaignEnqueued=campaign_enqueue_once",
        "CampaignIdle=campaign_idle",
        "CampaignProgress=campaign_progress",
        "MessageStatus=campaign_message_status",
        "CampaignStats=campaign_stats",
        "RateStatus=rate_status",
        "MessagePayload=message_payloads",
    ],
)
def test_dataclasses_match_the_result_columns(
    conn: Conn, cls: type, columns: Any, query: str
) -> None:
    catalog = columns(conn)
    expected = [(name, PYTHON_TYPES[type_]) for name, type_ in catalog]
    assert [(name, without_none(hint)) for name, hint in dataclass_columns(cls)] == expected

    cursor = conn.execute(query)  # what a caller's SELECT * really yields
    assert cursor.description is not None
    described = [(column.name, column.type_code) for column in cursor.description]
    type_oids = dict(conn.execute("SELECT format_type(oid, NULL), oid FROM pg_type").fetchall())
    assert described == [(name, type_oids[type_]) for name, type_ in catalog]


def test_real_rows_fill_the_dataclasses_with_their_types(conn: Conn) -> None:
    values: list[Any] = [acquire(conn, "k", "o")]
    with conn.cursor(row_factory=class_row(LockStatus)) as cur:
        cur.execute("SELECT * FROM pgcoord.lock_status")
        values += cur.fetchall()

    # buffers in every state: parked, claimed with a message behind it, waiting
    ingest(conn, "m1", "dead")
    for _ in range(MAX_FAILED_TRIES):
        assert fail(conn, "dead", claim_one(conn).claim_token)
    values.append(ingest(conn, "m2", "held"))
    values.append(claim_one(conn))
    ingest(conn, "m3", "held")
    ingest(conn, "m4", "waiting")
    with conn.cursor(row_factory=class_row(BufferStatus)) as cur:
        cur.execute("SELECT * FROM pgcoord.buffer_status ORDER BY dead DESC, conversation_key")
        statuses = cur.fetchall()
    assert [(s.conversation_key, s.dead) for s in statuses] == [
        ("dead", True),
        ("held", False),
        ("waiting", False),
    ]
    values += statuses

    assert {type(value) for value in values} == {Lock, LockStatus, Ingested, Batch, BufferStatus}
    for value in values:
        for name, hint in dataclass_columns(type(value)):
            assert holds(getattr(value, name), hint), (type(value).__name__, name, hint)
