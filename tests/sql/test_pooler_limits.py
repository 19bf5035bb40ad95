"""What a transaction-mode pooler changes for the callers (docs/poolers.md): a waiting
lock_acquire holds one of the pool's server connections for its whole p_wait, so the
pool must be sized for the waiters plus everything else; and LISTEN through the pooler
receives nothing, without an error."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from inboxkit import ingest
from poolerkit import POOL_SIZE, Pooler, pgbouncer
from sqlkit import Background, Conn, acquire, connect, fan_out, poll, release, scalar

WAITERS = 16
TIMED_ACQUIRE = (
    "SELECT statement_timestamp(), l.acquired, clock_timestamp()"
    " FROM pgcoord.lock_acquire(p_key => %s, p_owner => %s, p_ttl => %s, p_wait => %s) AS l"
)


@dataclass(frozen=True)
class Wait:
    """One waiting lock_acquire, on the server's clock: `started` when its statement
    reached a server connection, `answered` when the function returned."""

    started: datetime
    acquired: bool
    answered: datetime


def timed_acquire(conn: Conn, key: str, owner: str, wait: timedelta) -> Wait:
    row = conn.execute(TIMED_ACQUIRE, (key, owner, timedelta(minutes=1), wait)).fetchone()
    assert row is not None
    return Wait(*row)


@contextmanager
def clients(url: str, n: int) -> Iterator[list[Conn]]:
    """`n` client connections through a pooler, none preparing statements."""
    with ExitStack() as stack:
        yield [stack.enter_context(connect(url, prepare_threshold=None)) for _ in range(n)]


def waiting_in_acquire(conn: Conn) -> int:
    """How many other backends of the database are inside lock_acquire now."""
    return int(
        scalar(
            conn,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state = 'active'"
            " AND query LIKE %s",
            "SELECT statement_timestamp()%lock_acquire%",
        )
    )


def most_at_once(waits: list[Wait]) -> int:
    """The largest number of the waits that ran on the server at the same time."""
    events = sorted([(w.started, 1) for w in waits] + [(w.answered, -1) for w in waits])
    running = most = 0
    for _, step in events:  # an end sorts before a start at the same instant
        running += step
        most = max(most, running)
    return most


def test_each_waiting_acquire_holds_a_server_connection_for_its_whole_wait(
    pooler: Pooler, pooled_db_url: str, conn: Conn
) -> None:
    """16 callers wait up to 1 s for a held key through a pool of 4: they run 4 at a
    time, the last one answers only after 4 s, and any other statement queues behind
    them until a waiter gives its server connection back."""
    wait = timedelta(seconds=1)
    assert acquire(conn, "busy", "holder", ttl=timedelta(minutes=5)).acquired  # never freed
    with ExitStack() as stack:
        waiters = stack.enter_context(clients(pooled_db_url, WAITERS))
        bystander = stack.enter_context(connect(pooled_db_url, prepare_threshold=None))
        storm = Background(
            lambda: fan_out(waiters, lambda i, c: timed_acquire(c, "busy", f"w{i}", wait))
        )

        def starved() -> bool:
            pool = pooler.pool(pooled_db_url)
            return waiting_in_acquire(conn) == POOL_SIZE and pool["cl_waiting"] > 0

        poll(starved, "every server connection of the pool taken by a waiter")
        queued = Background(lambda: scalar(bystander, "SELECT statement_timestamp()"))
        waits: list[Wait] = storm.join(30)
        bystander_started = queued.join(30)

    assert not any(w.acquired for w in waits)
    for w in waits:
        assert w.answered - w.started >= wait, "each waited its whole p_wait on the server"
    assert most_at_once(waits) == POOL_SIZE
    first = min(w.started for w in waits)
    last_answer = max(w.answered for w in waits)
    assert last_answer - first >= wait * (WAITERS // POOL_SIZE), (
        "the last caller answers after ceil(waiters / pool size) * p_wait"
    )
    assert bystander_started >= min(w.answered for w in waits), (
        "a statement sent while every server connection waits runs only once a waiter is done"
    )


def test_a_pool_larger_than_the_waiters_lets_the_holder_release_and_every_waiter_in(
    server_url: str, db_url: str, conn: Conn
) -> None:
    """The sizing rule of docs/poolers.md: with a pool of waiters + 1 connections, the
    holder's release gets through while 16 callers wait, and each of them gets the key
    in turn (releasing it at once) long before its p_wait runs out."""
    wait = timedelta(seconds=20)
    with pgbouncer(server_url, pool_size=WAITERS + 1) as wide:
        url = wide.database_url(db_url)
        with ExitStack() as stack:
            waiters = stack.enter_context(clients(url, WAITERS))
            holder = stack.enter_context(connect(url, prepare_threshold=None))
            assert acquire(holder, "busy", "holder").acquired

            def take_and_give_back(i: int, c: Conn) -> Wait:
                got = timed_acquire(c, "busy", f"w{i}", wait)
                if got.acquired:
                    assert release(c, "busy", f"w{i}")
                return got

            storm = Background(lambda: fan_out(waiters, take_and_give_back, timeout=60))
            poll(lambda: waiting_in_acquire(conn) == WAITERS, "all 16 callers waiting")
            assert release(holder, "busy", "holder")
            waits: list[Wait] = storm.join(60)

    assert all(w.acquired for w in waits), "every waiter got the key"
    assert max(w.answered - w.started for w in waits) < wait
    assert most_at_once(waits) == WAITERS, "all 16 waited on the server at once"


def test_listen_through_the_pooler_receives_nothing_and_raises_nothing(
    pooled_db_url: str, db_url: str, conn: Conn
) -> None:
    """LISTEN through a transaction pooler succeeds, and then a listener waiting for
    notifications hears nothing: the server session that ran LISTEN went back to the
    pool, and the pooler passes a server's messages only to the client it serves. A
    direct listener is told of the same ingest."""
    notices: list[str] = []
    with (
        connect(pooled_db_url, prepare_threshold=None) as pooled,
        connect(db_url) as direct,
    ):
        pooled.add_notice_handler(lambda diag: notices.append(str(diag.message_primary)))
        for listener in (pooled, direct):
            listener.execute("LISTEN pgcoord_buffers")
        ingest(conn, "m1", "due-now")  # a window due at once notifies the listeners
        conn.execute("SELECT pg_notify('pgcoord_buffers', 'sentinel')")

        seen = []
        for notify in direct.notifies(timeout=10):
            seen.append(notify.payload)
            if notify.payload == "sentinel":
                break
        assert seen == ["", "sentinel"], "the direct listener hears the ingest"

        assert list(pooled.notifies(timeout=0.5)) == []
        assert notices == []


def test_the_pool_has_exactly_its_size_of_server_connections(
    pooler: Pooler, pooled_db_url: str
) -> None:
    """The pooler the tests use: POOL_SIZE transactions held open at once run on as many
    server sessions, and one more client waits until one of them ends."""
    n = POOL_SIZE
    with ExitStack() as stack:
        held = stack.enter_context(clients(pooled_db_url, n + 1))
        pids = set()
        for c in held[:n]:
            c.execute("BEGIN")
            pids.add(scalar(c, "SELECT pg_backend_pid()"))
        assert len(pids) == n
        extra = Background(lambda: scalar(held[n], "SELECT pg_backend_pid()"))
        poll(lambda: pooler.pool(pooled_db_url)["cl_waiting"] == 1, "the extra client to queue")
        assert not extra.done
        held[0].execute("COMMIT")
        assert extra.join() in pids
