"""The API as a Supabase `rpc` calls it. PostgREST (behind `supabase.rpc(...)`) turns a
POST of a JSON object to /rpc/NAME into one statement: the object's keys are read with
`json_to_record` as the function's arguments of those names, typed as the catalog
declares them, and passed in named notation; arguments left out take their defaults;
the answer is the rows as JSON. It runs in a transaction of its own, as a role set for
the request, with `search_path` set to the exposed schemas. `rpc` below builds that
statement as PostgREST's query builder does, from the catalog, so every function of the
API is called the way a Supabase client calls it, as a role created as Supabase creates
its service_role (NOINHERIT) and given pgcoord_client as the README says, and nothing
else."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlkit import Conn, connect

# a value of each argument type, for calls that only check that a call resolves
SAMPLES = {
    "text": "x",
    "integer": 1,
    "bigint": 1,
    "double precision": 1.5,
    "interval": "1 second",
    "interval[]": ["1 second"],
    "jsonb": {},
    "bigint[]": [1],
    "jsonb[]": [{}],
}


class RpcError(Exception):
    def __init__(self, error: psycopg.Error) -> None:
        super().__init__(str(error))
        self.code = error.sqlstate  # what PostgREST answers as "code"
        self.message = error.diag.message_primary


def signature(app: Conn, name: str) -> tuple[list[tuple[str, str]], int, bool, bool]:
    """The function's input arguments (name, type), how many have defaults, whether it
    returns a set, and whether a row (a composite) or a scalar."""
    found = app.execute(
        "SELECT array(SELECT ARRAY[a.name, format_type(a.type, NULL)]"
        "        FROM unnest(p.proargnames[1:p.pronargs], p.proargtypes::oid[])"
        "             AS a (name, type)),"
        " p.pronargdefaults, p.proretset, t.typtype = 'c' OR p.prorettype = 'record'::regtype"
        " FROM pg_proc AS p JOIN pg_type AS t ON t.oid = p.prorettype"
        " WHERE p.pronamespace = 'pgcoord'::regnamespace AND p.proname = %s",
        (name,),
    ).fetchall()
    assert len(found) == 1, f"{name}: {len(found)} functions of that name (PGRST203)"
    arguments, defaults, returns_set, returns_row = found[0]
    return [(a, t) for a, t in arguments], defaults, returns_set, returns_row


def rpc(app: Conn, role: str, name: str, body: dict[str, Any]) -> Any:
    """POST /rpc/NAME with `body`, as PostgREST runs it; the JSON it answers, decoded."""
    arguments, defaults, returns_set, returns_row = signature(app, name)
    names = [a for a, _ in arguments]
    required = names[: len(names) - defaults]
    # PostgREST takes the function whose arguments the keys name, all its required ones
    assert set(body) <= set(names) and set(required) <= set(body), f"PGRST202: {name}"
    passed = [(a, t) for a, t in arguments if a in body]
    call = sql.SQL("{}.{}({})").format(
        sql.Identifier("pgcoord"),
        sql.Identifier(name),
        sql.SQL(", ").join(
            sql.SQL("{} := pgrst_body.{}").format(sql.Identifier(a), sql.Identifier(a))
            for a, _ in passed
        ),
    )
    if passed:
        source = sql.SQL(
            "FROM (SELECT %(body)s::json AS json_data) pgrst_payload,"
            " LATERAL (SELECT {columns} FROM json_to_record(pgrst_payload.json_data)"
            " AS _({typed}) LIMIT 1) pgrst_body, LATERAL "
        ).format(
            columns=sql.SQL(", ").join(sql.Identifier(a) for a, _ in passed),
            typed=sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(a), sql.SQL(t))  # type from the catalog
                for a, t in passed
            ),
        )
    else:
        source = sql.SQL("FROM ")
    if returns_row:
        selected, call = sql.SQL("pgrst_call.*"), sql.SQL("{} pgrst_call").format(call)
        body_of = sql.SQL("coalesce(json_agg(_postgrest_t), '[]')")
    else:
        selected = sql.SQL("pgrst_call.pgrst_scalar")
        call = sql.SQL("(SELECT {} pgrst_scalar) pgrst_call").format(call)
        body_of = sql.SQL("coalesce(json_agg(_postgrest_t.pgrst_scalar), '[]')")
    if not returns_set:
        body_of = sql.SQL("coalesce(({})->0, 'null')").format(body_of)
    statement = sql.SQL(
        "WITH pgrst_source AS (SELECT {selected} {source}{call})"
        " SELECT {body_of} AS body FROM (SELECT * FROM pgrst_source) _postgrest_t"
    ).format(selected=selected, source=source, call=call, body_of=body_of)
    with app.transaction():
        app.execute(
            "SELECT set_config('role', %s, true), set_config('search_path', %s, true),"
            " set_config('request.jwt.claims', %s, true),"
            " set_config('request.method', 'POST', true)",
            (role, '"pgcoord", "public"', json.dumps({"role": role})),
        )
        try:
            answer = app.execute(statement, {"body": json.dumps(body)}).fetchone()
        except psycopg.Error as exc:
            raise RpcError(exc) from None
    assert answer is not None
    return answer[0]


def service_role(conn: Conn, role: str) -> None:
    """`role` given pgcoord_client as the README says for Supabase's service_role, which
    Supabase creates NOINHERIT."""
    name = sql.Identifier(role)
    if conn.info.server_version >= 160000:
        conn.execute(sql.SQL("GRANT pgcoord_client TO {} WITH INHERIT TRUE").format(name))
    else:
        conn.execute(sql.SQL("GRANT pgcoord_client TO {}").format(name))
        conn.execute(sql.SQL("ALTER ROLE {} INHERIT").format(name))


@pytest.fixture
def noinherit(conn: Conn, db_url: str, login_role: str) -> Iterator[tuple[Conn, str]]:
    """A connection as PostgREST's authenticator, and a role created as Supabase creates
    its service_role (NOLOGIN NOINHERIT BYPASSRLS) that requests run as."""
    role = f"pgcoord_test_service_{uuid.uuid4().hex[:12]}"
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN NOINHERIT BYPASSRLS").format(sql.Identifier(role)))
    try:
        conn.execute(
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(login_role))
        )
        with connect(make_conninfo(db_url, user=login_role)) as app:
            yield app, role
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def api(conn: Conn, noinherit: tuple[Conn, str]) -> tuple[Conn, str]:
    """`noinherit`, given pgcoord_client as the README says."""
    service_role(conn, noinherit[1])
    return noinherit


def test_a_plain_grant_to_a_noinherit_role_is_not_enough(
    conn: Conn, noinherit: tuple[Conn, str]
) -> None:
    """Why the README spells the inheritance out: Supabase's service_role granted
    pgcoord_client plainly is refused every call (PostgREST answers 403)."""
    app, role = noinherit
    conn.execute(sql.SQL("GRANT pgcoord_client TO {}").format(sql.Identifier(role)))
    with pytest.raises(RpcError) as refused:
        rpc(app, role, "lock_acquire", {"p_key": "k", "p_owner": "edge"})
    assert refused.value.code == "42501"
    service_role(conn, role)
    assert rpc(app, role, "lock_acquire", {"p_key": "k", "p_owner": "edge"})[0]["acquired"]


def api_functions(conn: Conn) -> list[str]:
    return [
        name
        for (name,) in conn.execute(
            "SELECT p.proname::text FROM pg_proc AS p"
            " WHERE p.pronamespace = 'pgcoord'::regnamespace"
            " AND has_function_privilege('pgcoord_client', p.oid, 'EXECUTE') ORDER BY 1"
        )
    ]


def test_every_api_function_resolves_as_an_rpc_with_its_required_arguments(
    conn: Conn, api: tuple[Conn, str]
) -> None:
    """Each function called with only its required arguments, each given a value of its
    type from JSON: the call resolves and runs (a value out of the function's range is
    refused as bad data, class 22, naming the argument); no name is overloaded."""
    app, role = api
    names = api_functions(conn)
    assert len(names) >= 35
    for name in names:
        arguments, defaults, _, _ = signature(app, name)
        required = arguments[: len(arguments) - defaults]
        body = {a: SAMPLES[t] for a, t in required}
        try:
            rpc(app, role, name, body)
        except RpcError as exc:
            assert exc.code is not None and exc.code.startswith("22"), (name, exc.code, exc)
            assert any(a in exc.message for a, _ in required), (name, exc.message)


def test_locks_through_rpc(api: tuple[Conn, str]) -> None:
    app, role = api
    key = {"p_key": "chat:+15551234"}
    first = rpc(app, role, "lock_acquire", {**key, "p_owner": "edge-1", "p_ttl": "30 seconds"})
    assert [row["acquired"] for row in first] == [True]
    token = first[0]["token"]
    second = rpc(app, role, "lock_acquire", {**key, "p_owner": "edge-2"})
    assert second[0]["acquired"] is False and second[0]["owner"] == "edge-1"
    assert rpc(app, role, "lock_extend", {**key, "p_owner": "edge-1", "p_ttl": "1 minute"})
    assert rpc(app, role, "lock_release", {**key, "p_owner": "edge-2"}) is False
    assert rpc(app, role, "lock_is_current", {**key, "p_token": token}) is True
    assert rpc(app, role, "lock_release", {**key, "p_owner": "edge-1"}) is True
    assert rpc(app, role, "lock_is_current", {**key, "p_token": token}) is False


def test_inbox_through_rpc(api: tuple[Conn, str]) -> None:
    app, role = api
    message = {
        "p_provider": "twilio",
        "p_provider_message_id": "SM1",
        "p_conversation_key": "whatsapp:+15551234",
        "p_body": "hi!",
        "p_payload": {"profile": "Ana"},
        "p_debounce": "0 seconds",
    }
    stored = rpc(app, role, "message_ingest", message)
    again = rpc(app, role, "message_ingest", message)
    assert [r["duplicate"] for r in stored + again] == [False, True]
    assert again[0]["message_id"] == stored[0]["message_id"]
    claimed = rpc(app, role, "buffer_claim", {"p_worker": "edge", "p_lease": "1 minute"})
    assert [(c["conversation_key"], c["bodies"]) for c in claimed] == [
        ("whatsapp:+15551234", ["hi!"])
    ]
    done = {"p_conversation_key": "whatsapp:+15551234", "p_claim_token": claimed[0]["claim_token"]}
    assert rpc(app, role, "buffer_complete", done) is True
    assert rpc(app, role, "buffer_complete", done) is False  # a stale token: false


def test_campaigns_through_rpc(api: tuple[Conn, str]) -> None:
    app, role = api
    run = rpc(
        app,
        role,
        "campaign_create",
        {"p_name": "black friday", "p_retry_backoff": ["1 minute", "5 minutes"]},
    )
    recipients = [{"recipient": f"+1555000{i}", "payload": {"name": f"n{i}"}} for i in range(3)]
    assert rpc(app, role, "campaign_enqueue", {"p_run_id": run, "p_items": recipients}) == 3
    claimed = rpc(app, role, "campaign_claim", {"p_worker": "edge", "p_limit": 3})
    assert sorted(c["recipient"] for c in claimed) == [r["recipient"] for r in recipients]
    assert all(c["payload"] == {"name": "n" + c["recipient"][-1]} for c in claimed)
    first, second, third = claimed
    many = {
        "p_message_ids": [first["message_id"], second["message_id"]],
        "p_claim_tokens": [first["claim_token"], second["claim_token"]],
        "p_metrics": [{"tokens": 812}, {"tokens": 9}],
    }
    assert rpc(app, role, "campaign_complete_many", many) == 2
    assert rpc(app, role, "campaign_complete_many", many) == 0  # stale tokens: nothing
    failed = rpc(
        app,
        role,
        "campaign_fail",
        {
            "p_message_id": third["message_id"],
            "p_claim_token": third["claim_token"],
            "p_error": "503",
        },
    )
    assert [f["status"] for f in failed] == ["pending"]
    progress = app.execute(
        "SELECT sent, pending FROM pgcoord.campaign_progress WHERE run_id = %s", (run,)
    ).fetchone()
    assert progress == (2, 1)
    paused = {"p_run_id": run, "p_status": "paused"}
    assert rpc(app, role, "campaign_set_status", paused) == "running"  # the status before


def test_rate_limits_through_rpc(api: tuple[Conn, str]) -> None:
    app, role = api
    bucket = {"p_key": "whatsapp", "p_per_second": 1, "p_burst": 2}
    waits = [rpc(app, role, "rate_acquire", bucket) for _ in range(3)]
    assert waits[:2] == ["00:00:00", "00:00:00"]
    assert waits[2] != "00:00:00"  # the third waits for a token, as an interval
    assert rpc(app, role, "rate_pause", {"p_key": "whatsapp", "p_for": "30 seconds"})


def test_bad_input_through_rpc_names_the_argument_and_changes_nothing(
    api: tuple[Conn, str],
) -> None:
    """What PostgREST answers as HTTP 400 with the SQLSTATE as its `code`."""
    app, role = api
    with pytest.raises(RpcError) as bad:
        rpc(app, role, "lock_acquire", {"p_key": "k", "p_owner": "o", "p_ttl": "-1 seconds"})
    assert bad.value.code == "22023" and "p_ttl" in bad.value.message
    with pytest.raises(RpcError) as null:
        rpc(app, role, "lock_acquire", {"p_key": None, "p_owner": "o"})
    assert null.value.code == "22004" and "p_key" in null.value.message
    assert app.execute("SELECT count(*) FROM pgcoord.lock_status").fetchone() == (0,)
