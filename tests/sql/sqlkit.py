"""Helpers for the SQL tests: the lease-lock calls in named notation, N connections fired
together by a barrier, and polling the server instead of sleeping."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from pgcoord.types import Lock, LockStatus

Conn = psycopg.Connection[Any]
T = TypeVar("T")

# The section-1 contract, as the server prints it back (pg_get_function_arguments and
# pg_get_function_result): names, order, types and defaults are exact.
CONTRACT: dict[str, tuple[str, str]] = {
    "lock_acquire": (
        "p_key text, p_owner text, p_ttl interval DEFAULT '00:02:00'::interval,"
        " p_wait interval DEFAULT '00:00:00'::interval",
        "TABLE(acquired boolean, owner text, token bigint,"
        " expires_at timestamp with time zone, took_over boolean)",
    ),
    "lock_release": ("p_key text, p_owner text", "boolean"),
    "lock_extend": (
        "p_key text, p_owner text, p_ttl interval DEFAULT '00:02:00'::interval",
        "timestamp with time zone",
    ),
    "lock_is_current": ("p_key text, p_token bigint", "boolean"),
}
SECTION_1 = tuple(CONTRACT)
# Not in API.md, granted like the API: a lease's heartbeat and release by its grant's
# token (what the driver's Lease sends)
LOCK_HELPERS: dict[str, tuple[str, str]] = {
    "lock_extend_token": (
        "p_key text, p_token bigint, p_ttl interval DEFAULT '00:02:00'::interval",
        "timestamp with time zone",
    ),
    "lock_release_token": ("p_key text, p_token bigint", "boolean"),
}

# The SQL type of every argument name of the API, for calls in named notation with
# values of any Python type (a text such as 'infinity' is cast to the argument's type).
ARGUMENT_TYPES = {
    "p_key": "text",
    "p_owner": "text",
    "p_ttl": "interval",
    "p_wait": "interval",
    "p_token": "bigint",
    "p_provider": "text",
    "p_provider_message_id": "text",
    "p_conversation_key": "text",
    "p_body": "text",
    "p_payload": "jsonb",
    "p_debounce": "interval",
    "p_max_wait": "interval",
    "p_worker": "text",
    "p_limit": "integer",
    "p_lease": "interval",
    "p_claim_token": "bigint",
    "p_error": "text",
    "p_retry_in": "interval",
    "p_older_than": "interval",
    "p_message_ids": "bigint[]",
    "p_per_second": "double precision",
    "p_burst": "integer",
    "p_cost": "integer",
    "p_for": "interval",
}

LONG = timedelta(seconds=30)
STATEMENT_TIMEOUT = "30s"  # a hanging call fails its test instead of stalling the run


def connect(url: str, **kwargs: Any) -> Conn:
    """An autocommit connection, like most pooled application connections."""
    options = f"-c statement_timeout={STATEMENT_TIMEOUT}"
    return psycopg.connect(url, autocommit=True, options=options, **kwargs)


@contextmanager
def connections(url: str, n: int) -> Iterator[list[Conn]]:
    with ExitStack() as stack:
        yield [stack.enter_context(connect(url)) for _ in range(n)]


def fan_out(conns: list[Conn], call: Callable[[int, Conn], T], timeout: float = 30.0) -> list[T]:
    """Run `call(i, conns[i])` in one thread per connection, all released at once by a
    barrier; return the results in connection order, or raise the first error."""
    barrier = threading.Barrier(len(conns))
    results: list[Any] = [None] * len(conns)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout)
            results[i] = call(i, conns[i])
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(conns))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError(f"fan_out: a call did not return within {timeout} s")
    if errors:
        raise errors[0]
    return results


class Background:
    """One call running in a thread, with its result, error and return time."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished_at: float | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self.result = call()
        except BaseException as exc:
            self.error = exc
        self.finished_at = time.monotonic()

    def join(self, timeout: float = 15.0) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"background call still running after {timeout} s"
        if self.error is not None:
            raise self.error
        return self.result

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()


def acquire(
    conn: Conn,
    key: str,
    owner: str,
    ttl: timedelta = LONG,
    wait: timedelta = timedelta(0),
) -> Lock:
    with conn.cursor(row_factory=class_row(Lock)) as cur:
        cur.execute(
            "SELECT * FROM pgcoord.lock_acquire("
            "p_key => %s, p_owner => %s, p_ttl => %s, p_wait => %s)",
            (key, owner, ttl, wait),
        )
        rows = cur.fetchall()
    assert len(rows) == 1, f"lock_acquire returned {len(rows)} rows"
    return rows[0]


def release(conn: Conn, key: str, owner: str) -> bool:
    return bool(scalar(conn, "SELECT pgcoord.lock_release(p_key => %s, p_owner => %s)", key, owner))


def extend(conn: Conn, key: str, owner: str, ttl: timedelta = LONG) -> datetime | None:
    value = scalar(
        conn, "SELECT pgcoord.lock_extend(p_key => %s, p_owner => %s, p_ttl => %s)", key, owner, ttl
    )
    assert value is None or isinstance(value, datetime)
    return value


def is_current(conn: Conn, key: str, token: int) -> bool:
    value = scalar(conn, "SELECT pgcoord.lock_is_current(p_key => %s, p_token => %s)", key, token)
    assert isinstance(value, bool)
    return value


def status(conn: Conn, key: str) -> LockStatus | None:
    with conn.cursor(row_factory=class_row(LockStatus)) as cur:
        cur.execute(
            "SELECT key, owner, token, acquired_at, expires_at, expired"
            " FROM pgcoord.lock_status WHERE key = %s",
            (key,),
        )
        return cur.fetchone()


def scalar(conn: Conn, query: Any, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def server_clock(conn: Conn) -> datetime:
    value = scalar(conn, "SELECT clock_timestamp()")
    assert isinstance(value, datetime)
    return value


# Intervals whose parts pull apart, as the calendar measures them from any date: '-1 year
# 361 days' compares as 1 day (a month counts as 30 days in a comparison), yet reaches 4
# or 5 days back; each maximum's '1 year <maximum> -360 days' compares as the maximum,
# yet reaches 5 or 6 days past it.
BELOW_ZERO_BY_THE_CALENDAR = "-1 year 361 days"
OVER_BY_THE_CALENDAR = {
    "1 hour": "1 year -360 days 1 hour",
    "1 day": "1 year -359 days",
    "7 days": "1 year -353 days",
    "30 days": "1 year -330 days",
    "100 years": "101 years -360 days",
}
# Intervals whose parts cancel out: each compares as 1 hour, within every range, yet one
# part alone (its days, or its months) added to the clock reaches past the dates the
# server can represent: no part of an interval may reach more than 100 years either way.
PARTS_PAST_THE_DATES = [
    "-100000000 days 2400000001:00:00",
    "-1000000 years 360000000 days 01:00:00",
    "1000000 years -360000000 days 01:00:00",
]


@contextmanager
def daylight_saving_within_a_day(conn: Conn) -> Iterator[None]:
    """The session's time zone (a POSIX rule) springs forward 12 hours from now, so the
    day from now has 23 hours: '1 day -23 hours -30 minutes' compares as 30 minutes, yet
    ends 30 minutes before the clock. UTC otherwise. (Not at a midnight: a day added
    within the hour after it would land in the hour the clock skips, and keep 24.)"""
    switch = scalar(conn, "SELECT clock_timestamp() AT TIME ZONE 'UTC' + interval '12 hours'")
    assert isinstance(switch, datetime)
    day = switch.timetuple().tm_yday - 1  # zero-based, February 29 counted, as POSIX has it
    zone = f"SPRING0SUMMER,{day}/{switch:%H:%M:%S},{(day + 30) % 365}/0"
    conn.execute(sql.SQL("SET TIME ZONE {}").format(sql.Literal(zone)))
    try:
        one_day = scalar(conn, "SELECT clock_timestamp() + interval '1 day' - clock_timestamp()")
        assert one_day < timedelta(hours=23, minutes=1), f"no 23-hour day in {zone}: {one_day}"
        yield
    finally:
        conn.execute("RESET TIME ZONE")


def poll(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Ask `check` again every few milliseconds until it says yes."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def until_expired(conn: Conn, key: str) -> None:
    """Return once the server clock has passed the lease of `key`."""
    poll(
        lambda: bool(
            scalar(
                conn,
                "SELECT coalesce(bool_and(expired), false) FROM pgcoord.lock_status WHERE key = %s",
                key,
            )
        ),
        f"the lease of {key!r} to expire",
    )


def until_waiting(observer: Conn, pid: int, for_at_least: timedelta = timedelta(0)) -> None:
    """Return once backend `pid` is inside a waiting lock_acquire (sleeping between tries),
    and has been in it for at least `for_at_least`."""

    def waiting() -> bool:
        row = observer.execute(
            "SELECT state = 'active' AND wait_event = 'PgSleep' AND query LIKE %s"
            " AND clock_timestamp() - query_start >= %s"
            " FROM pg_stat_activity WHERE pid = %s",
            ("%lock_acquire%", for_at_least, pid),
        ).fetchone()
        return bool(row and row[0])

    poll(waiting, f"backend {pid} to wait inside lock_acquire")


def snapshot(conn: Conn) -> tuple[list[tuple[Any, ...]], tuple[Any, ...] | None]:
    """The lock table's rows and the token sequence's state."""
    rows = conn.execute(
        "SELECT key, owner, token, acquired_at, expires_at FROM pgcoord.locks ORDER BY key"
    ).fetchall()
    sequence = conn.execute("SELECT last_value, is_called FROM pgcoord.lock_token").fetchone()
    return rows, sequence


def call(
    conn: Conn, function: str, arguments: dict[str, Any], types: dict[str, str] | None = None
) -> list[tuple[Any, ...]]:
    """SELECT * FROM pgcoord.<function>(name => value::type, ...), each argument cast to its
    type in `types` (by default ARGUMENT_TYPES)."""
    types = ARGUMENT_TYPES if types is None else types
    query = sql.SQL("SELECT * FROM pgcoord.{}({})").format(
        sql.Identifier(function),
        sql.SQL(", ").join(
            sql.SQL("{} => {}::{}").format(
                sql.Identifier(name), sql.Placeholder(name), sql.SQL(types[name])
            )
            for name in arguments
        ),
    )
    return conn.execute(query, arguments).fetchall()


def call_named(conn: Conn, function: str, arguments: dict[str, Any], types: dict[str, str]) -> None:
    """`call` with the given argument types, for its effect."""
    call(conn, function, arguments, types)


def bad_call_problem(
    call: Callable[[], Any], bad: str, sqlstate: str, state: Callable[[], Any]
) -> str | None:
    """What is wrong with how `call` answers a bad argument `bad`: it must raise `sqlstate`
    with a message naming `bad`, and leave `state()` as it was. None when all is right."""
    before = state()
    try:
        call()
    except psycopg.Error as exc:
        message = exc.diag.message_primary or ""
        if exc.sqlstate != sqlstate:
            return f"raised {exc.sqlstate} ({message}), not {sqlstate}"
        if bad not in message:
            return f"the message {message!r} does not name {bad}"
    else:
        return "no error"
    if state() != before:
        return "changed what the function stores"
    return None


def refusal_problem(
    conn: Conn,
    function: str,
    arguments: dict[str, Any],
    bad: str,
    sqlstate: str,
    state: Callable[[Conn], object],
) -> str | None:
    """`bad_call_problem` of `function` called with `arguments` (see `call`)."""
    return bad_call_problem(
        lambda: call(conn, function, arguments), bad, sqlstate, lambda: state(conn)
    )


def assert_all_refused(
    conn: Conn,
    function: str,
    cases: Iterable[tuple[str, dict[str, Any], str, str]],
    state: Callable[[Conn], object],
    at_least: int = 1,
) -> None:
    """Call `function` with the arguments of each case (what it is, the arguments, the bad
    argument, the SQLSTATE it must raise) and report every case refused wrongly at once."""
    problems, checked = [], 0
    for what, arguments, bad, sqlstate in cases:
        problem = refusal_problem(conn, function, arguments, bad, sqlstate, state)
        checked += 1
        if problem:
            problems.append(f"{what}: {problem}")
    assert checked >= at_least, f"{function}: only {checked} cases"
    assert problems == [], f"{function}: " + "; ".join(problems)


def execute_privileges(conn: Conn) -> dict[str, tuple[bool, bool]]:
    """Function name -> (PUBLIC may execute it, pgcoord_client may execute it)."""
    rows = conn.execute(
        "SELECT p.proname::text, has_function_privilege('public', p.oid, 'EXECUTE'),"
        " has_function_privilege('pgcoord_client', p.oid, 'EXECUTE')"
        " FROM pg_proc AS p WHERE p.pronamespace = 'pgcoord'::regnamespace"
    ).fetchall()
    return {name: (public, client) for name, public, client in rows}


def one_row(conn: Conn, statement: Any, *params: Any) -> tuple[Any, ...]:
    """The single row a statement yields."""
    row = conn.execute(statement, params).fetchone()
    assert row is not None
    return tuple(row)
