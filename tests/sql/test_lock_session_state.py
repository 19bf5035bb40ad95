"""No function leaves session state behind (advisory locks, temp tables, settings,
cursors), and a lease lives in the table, not in a connection: every call works on a
fresh connection, as through a transaction-mode pooler."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from sqlkit import (
    Conn,
    acquire,
    connect,
    extend,
    is_current,
    release,
    scalar,
    status,
    until_expired,
)

WAIT = timedelta(milliseconds=200)


def bad(call: Callable[[Conn], Any]) -> Callable[[Conn], None]:
    """The call must fail with a bad-argument error."""

    def run(conn: Conn) -> None:
        with pytest.raises(psycopg.Error) as raised:
            call(conn)
        assert raised.value.sqlstate in {"22004", "22023"}

    return run


SCENARIOS: dict[str, dict[str, Callable[[Conn], Any]]] = {
    "lock_acquire": {
        "granted": lambda c: acquire(c, "free", "me"),
        "renewal": lambda c: acquire(c, "held", "holder"),
        "refused": lambda c: acquire(c, "held", "me"),
        "waiting, refused": lambda c: acquire(c, "held", "me", wait=WAIT),
        "waiting, granted": lambda c: acquire(c, "short", "me", wait=timedelta(seconds=5)),
        "take-over": lambda c: acquire(c, "expired", "me"),
        "bad argument": bad(lambda c: acquire(c, "held", "me", ttl=timedelta(0))),
        "waiting, bad argument": bad(lambda c: acquire(c, "", "me", wait=WAIT)),
    },
    "lock_release": {
        "true": lambda c: release(c, "held", "holder"),
        "false": lambda c: release(c, "held", "me"),
        "bad argument": bad(lambda c: release(c, "", "holder")),
    },
    "lock_extend": {
        "live": lambda c: extend(c, "held", "holder"),
        "lost": lambda c: extend(c, "expired", "gone"),
        "bad argument": bad(lambda c: extend(c, "held", "holder", ttl=timedelta(seconds=-1))),
    },
    "lock_is_current": {
        "select": lambda c: is_current(c, "held", 1),
        "fencing a write": lambda c: c.execute(
            "UPDATE public.fenced SET writer = 'me'"
            " WHERE pgcoord.lock_is_current(p_key => 'held', p_token => 1)"
        ),
        "bad argument": bad(lambda c: c.execute("SELECT pgcoord.lock_is_current('held', NULL)")),
    },
    "lock_status": {
        "select": lambda c: c.execute("SELECT * FROM pgcoord.lock_status").fetchall(),
    },
}

SESSION_SETUP = (
    "SET search_path = public",
    "SET lock_timeout = '3s'",
    "SET statement_timeout = '10s'",
    "SET application_name = 'session-state-test'",
    "SET TimeZone = 'Pacific/Auckland'",
    "DO $$BEGIN END$$",  # loads PL/pgSQL, whose own settings appear at its first use
)


def session_state(conn: Conn) -> dict[str, Any]:
    """What a call could leave behind in this session."""
    pid = conn.info.backend_pid
    return {
        "settings": dict(conn.execute("SELECT name, setting FROM pg_settings").fetchall()),
        "search_path": scalar(conn, "SELECT current_setting('search_path')"),
        "role": conn.execute("SELECT current_user, session_user").fetchone(),
        "advisory_locks": conn.execute(
            "SELECT objid FROM pg_locks WHERE pid = %s AND locktype = 'advisory'", (pid,)
        ).fetchall(),
        "pgcoord_locks": conn.execute(
            "SELECT l.locktype, l.relation::regclass::text FROM pg_locks AS l"
            " JOIN pg_class AS c ON c.oid = l.relation"
            " WHERE l.pid = %s AND c.relnamespace = 'pgcoord'::regnamespace",
            (pid,),
        ).fetchall(),
        "temp_schema": scalar(conn, "SELECT pg_my_temp_schema()::oid"),
        "temp_relations": scalar(conn, "SELECT count(*) FROM pg_class WHERE relpersistence = 't'"),
        "cursors": scalar(conn, "SELECT count(*) FROM pg_cursors"),
        "prepared": scalar(conn, "SELECT count(*) FROM pg_prepared_statements"),
        "listening": scalar(conn, "SELECT count(*) FROM pg_listening_channels()"),
    }


def leftovers(conn: Conn, db_url: str, call: Callable[[Conn], Any]) -> list[str]:
    """Run `call` on a fresh connection; say what it left behind in that session."""
    with connect(db_url, prepare_threshold=None) as fresh:
        for statement in SESSION_SETUP:
            fresh.execute(statement)
        before = session_state(fresh)
        assert before["temp_schema"] == 0 and not before["advisory_locks"]

        call(fresh)

        found = []
        if fresh.info.transaction_status != TransactionStatus.IDLE:
            found.append(f"transaction status {fresh.info.transaction_status.name}")
        after = session_state(fresh)
    for name, value in after.items():
        if name == "settings":
            found += [
                f"setting {setting} {before[name].get(setting)!r} -> {value.get(setting)!r}"
                for setting in before[name].keys() | value.keys()
                if before[name].get(setting) != value.get(setting)
            ]
        elif value != before[name]:
            found.append(f"{name} {before[name]!r} -> {value!r}")
    return found


def scenario_leftovers(
    conn: Conn, db_url: str, scenarios: dict[str, Callable[[Conn], Any]], setup: Callable[[], Any]
) -> list[str]:
    """What each scenario's call left behind, each after `setup` on `conn`."""
    problems = []
    for scenario, call in scenarios.items():
        setup()
        problems += [f"{scenario}: {found}" for found in leftovers(conn, db_url, call)]
    return problems


@pytest.mark.parametrize("function", list(SCENARIOS))
def test_calls_leave_no_session_state(db_url: str, conn: Conn, function: str) -> None:
    conn.execute("CREATE TABLE public.fenced (writer text)")
    conn.execute("INSERT INTO public.fenced VALUES ('nobody')")

    def setup() -> None:
        conn.execute("DELETE FROM pgcoord.locks")
        acquire(conn, "held", "holder")
        acquire(conn, "short", "gone", ttl=timedelta(milliseconds=150))
        acquire(conn, "expired", "gone", ttl=timedelta(milliseconds=1))
        until_expired(conn, "expired")

    problems = scenario_leftovers(conn, db_url, SCENARIOS[function], setup)
    assert problems == [], f"{function} left session state behind"


def test_a_lease_outlives_its_connection_and_each_call_may_use_another(db_url: str) -> None:
    def fresh() -> Conn:
        return connect(db_url)

    with fresh() as c:
        lock = acquire(c, "k", "alice")
    assert lock.acquired
    with fresh() as c:  # the connection that took it is gone: the lease is not
        refused = acquire(c, "k", "bob")
        assert not refused.acquired and refused.token == lock.token
    with fresh() as c:
        assert acquire(c, "k", "alice").token == lock.token  # renewal from elsewhere
    with fresh() as c:
        assert extend(c, "k", "alice") is not None
    with fresh() as c:
        assert is_current(c, "k", lock.token)
    with fresh() as c:
        assert not acquire(c, "k", "bob", wait=timedelta(milliseconds=100)).acquired
    with fresh() as c, pytest.raises(psycopg.Error):
        release(c, "k", "")
    with fresh() as c:
        assert release(c, "k", "alice")
    with fresh() as c:
        assert status(c, "k") is None
        assert acquire(c, "k", "bob").acquired


def test_one_connection_serving_two_owners_keeps_them_apart(conn: Conn) -> None:
    """A pooled connection passes from one client to the next: the owner is the
    argument, never the session."""
    alice = acquire(conn, "k", "alice")
    bob = acquire(conn, "k", "bob")
    assert alice.acquired and not bob.acquired
    assert release(conn, "k", "bob") is False
    assert extend(conn, "k", "bob") is None
    assert release(conn, "k", "alice") is True


def test_a_call_inside_the_callers_transaction_is_undone_with_it(conn: Conn) -> None:
    with pytest.raises(RuntimeError), conn.transaction():
        assert acquire(conn, "k", "alice").acquired
        raise RuntimeError("the caller's work failed")
    assert status(conn, "k") is None
    assert acquire(conn, "k", "bob").acquired
