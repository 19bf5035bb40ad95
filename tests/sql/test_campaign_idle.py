"""campaign_idle and campaign_busy: an enqueue skips its NOTIFY only while a worker of its
run says it is busy and none is idle, and no wake-up is lost between a worker's last look
and its sleep (the gate that every enqueue into a running run holds to its commit)."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from campaignkit import CHANNEL, busy, create, enqueue, idle, item, notified, set_status
from sqlkit import Conn, connect, fan_out, poll, scalar, server_clock

ROUNDS = 300


def listening(db_url: str) -> Conn:
    listener = connect(db_url)
    listener.execute(f"LISTEN {CHANNEL}")
    return listener


def hears(listener: Conn, payload: str, wait: float = 2.0) -> bool:
    """Whether `listener` is notified with `payload` within `wait` seconds (at once when
    it has been)."""
    listener.execute("SELECT 1")  # a round trip delivers what has arrived
    return any(n.payload == payload for n in listener.notifies(timeout=wait))


def advisory_locks(conn: Conn, pid: int) -> int:
    return int(
        conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s", (pid,)
        ).fetchone()[0]  # type: ignore[index]
    )


def test_an_enqueue_skips_the_notify_only_while_workers_are_busy_and_none_idle(
    db_url: str, conn: Conn
) -> None:
    run_id = create(conn)
    with listening(db_url) as listener, connect(db_url) as fleet:
        enqueue(conn, run_id, [item("+1")])
        assert notified(listener) == [str(run_id)], "no marks: a listener is told as ever"
        assert busy(fleet)
        enqueue(conn, run_id, [item("+2")])
        assert notified(listener) == [], "the workers are busy, none idle"
        idle(listener)
        enqueue(conn, run_id, [item("+3")])
        assert notified(listener) == [str(run_id)], "one idle worker is enough"
        assert not busy(listener), "the fleet's session holds the busy mark"
        enqueue(conn, run_id, [item("+4")])
        assert notified(listener) == [], "busy again"


def test_marks_of_one_run_count_for_that_run_only(db_url: str, conn: Conn) -> None:
    mine, other = create(conn), create(conn)
    with listening(db_url) as listener, connect(db_url) as fleet:
        assert busy(fleet)  # a busy worker of every run: no NOTIFY unless one is idle
        idle(listener, mine)
        enqueue(conn, other, [item("+1")])
        assert notified(listener) == []
        enqueue(conn, mine, [item("+2")])
        assert notified(listener) == [str(mine)]
        idle(listener)  # now of every run: the run's mark is let go
        enqueue(conn, other, [item("+3")])
        assert notified(listener) == [str(other)]
    with listening(db_url) as listener, connect(db_url) as worker:
        assert busy(worker, mine)  # busy for one run: the other's enqueues notify
        enqueue(conn, mine, [item("+4")])
        enqueue(conn, other, [item("+5")])
        assert notified(listener) == [str(other)]


def test_a_session_holds_one_mark_and_one_session_the_busy_mark(db_url: str, conn: Conn) -> None:
    run_id = create(conn)
    with connect(db_url) as first, connect(db_url) as second:
        pid = first.info.backend_pid
        for _ in range(3):
            idle(first, run_id)
        assert advisory_locks(conn, pid) == 1
        assert busy(first, run_id) and busy(first, run_id)
        assert advisory_locks(conn, pid) == 1, "the idle mark let go, the busy one taken"
        assert not busy(second, run_id), "one session at a time"
        assert advisory_locks(conn, second.info.backend_pid) == 0
        idle(first, run_id)
        assert advisory_locks(conn, pid) == 1
        assert busy(second, run_id), "free again once the first went idle"
        idle(first)
        assert busy(first), "a busy mark of every run is another mark"


def test_marking_says_nothing(db_url: str) -> None:
    notices: list[str] = []
    with connect(db_url) as worker:
        worker.add_notice_handler(
            lambda diagnostic: notices.append(str(diagnostic.message_primary))
        )
        worker.execute("SET client_min_messages = debug1")
        for _ in range(2):
            assert busy(worker)
            idle(worker)
            idle(worker)
            assert busy(worker)
    assert notices == []


def test_marks_end_with_their_session(db_url: str, conn: Conn) -> None:
    run_id = create(conn)
    with listening(db_url) as listener:
        with connect(db_url) as fleet:
            assert busy(fleet)
            fleet_pid = fleet.info.backend_pid
            with connect(db_url) as gone:
                idle(gone, run_id)
                enqueue(conn, run_id, [item("+1")])
                assert notified(listener) == [str(run_id)], "another session's mark"
                pid = gone.info.backend_pid
            # the server ends the session after the client has closed it
            poll(lambda: advisory_locks(conn, pid) == 0, "the closed session's locks to go")
            enqueue(conn, run_id, [item("+2")])
            assert notified(listener) == [], "that idle worker's session has ended"
        poll(lambda: advisory_locks(conn, fleet_pid) == 0, "the busy session's locks to go")
        enqueue(conn, run_id, [item("+3")])
        assert notified(listener) == [str(run_id)], "and the busy one's: no marks"


def test_idle_answers_as_campaign_due_in(db_url: str, conn: Conn) -> None:
    empty, due, later = create(conn), create(conn), create(conn)
    enqueue(conn, due, [item("+1")])
    enqueue(conn, later, [item("+2", scheduled_at=server_clock(conn) + timedelta(minutes=5))])
    with connect(db_url) as worker:
        assert idle(worker, empty) == (None, True)
        assert idle(worker, due) == (timedelta(0), True)
        due_in, settled = idle(worker, later)
        assert settled and timedelta(minutes=4) < due_in <= timedelta(minutes=5)  # type: ignore[operator]
        assert idle(worker) == (timedelta(0), True), "every run: one is due now"


def test_an_unknown_run_is_refused_and_marks_nothing(db_url: str, conn: Conn) -> None:
    run_id = create(conn)
    unknown = run_id + 1000
    with listening(db_url) as listener, connect(db_url) as fleet:
        assert busy(fleet)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="p_run_id"):
            idle(listener, unknown)
        assert advisory_locks(conn, listener.info.backend_pid) == 0
        enqueue(conn, run_id, [item("+1")])
        assert notified(listener) == [], "no idle mark was left"


def test_an_enqueue_still_committing_unsettles_the_look(db_url: str, conn: Conn) -> None:
    """The lost wake-up the gate prevents: an enqueue looked for idle workers before the
    worker's mark (none: it will not notify), and commits after the worker's look."""
    run_id = create(conn)
    with listening(db_url) as worker, connect(db_url) as producer:
        assert busy(worker, run_id)
        with producer.transaction():
            enqueue(producer, run_id, [item("+1")])  # the worker busy, none idle
            assert idle(worker, run_id) == (None, False), "the look misses it: not settled"
        assert notified(worker) == [], "that enqueue notifies no one"
        assert idle(worker, run_id) == (timedelta(0), True), "the next look finds it"

        with producer.transaction():
            enqueue(producer, run_id, [item("+2")])  # after the mark: it will notify
            assert idle(worker, run_id) == (timedelta(0), False)
        assert notified(worker) == [str(run_id)]


def test_enqueues_into_a_paused_run_leave_the_look_settled(db_url: str, conn: Conn) -> None:
    paused = create(conn)
    set_status(conn, paused, "paused")
    with connect(db_url) as worker, connect(db_url) as producer, producer.transaction():
        enqueue(producer, paused, [item("+1")])
        assert idle(worker) == (None, True)


def test_enqueues_share_the_gate(db_url: str, conn: Conn) -> None:
    """Enqueues into one running run, each in a transaction still open, never wait for
    each other (the statement timeout would end one that did)."""
    run_id = create(conn)
    with (
        connect(db_url) as first,
        connect(db_url) as second,
        first.transaction(),
        second.transaction(),
    ):
        second.execute("SET LOCAL lock_timeout = '1s'")
        enqueue(first, run_id, [item("+1")])
        enqueue(second, run_id, [item("+2")])


def test_no_wake_up_is_lost_between_a_look_and_a_sleep(db_url: str, conn: Conn) -> None:
    """An enqueue and a worker going idle, released together, many rounds: the worker's
    look finds the message, or the enqueue notifies it, or the look says it is not
    settled (look again soon). Never none of the three."""
    with listening(db_url) as worker, connect(db_url) as producer:
        for round_ in range(ROUNDS):
            run_id = create(conn)
            busy(worker)

            def go(
                i: int, c: Conn, run_id: int = run_id, recipient: str = f"+{round_}"
            ) -> tuple[timedelta | None, bool]:
                if i == 0:
                    enqueue(c, run_id, [item(recipient)])
                    return None, True
                return idle(c, run_id)

            _, (due_in, settled) = fan_out([producer, worker], go)
            found = due_in == timedelta(0)
            # looked for only when the look missed the message and said it was settled
            told = found or not settled or hears(worker, str(run_id))
            assert found or told or not settled, f"round {round_}: a lost wake-up"


def test_no_session_holding_a_key_holds_up_an_enqueue_or_a_look(db_url: str, conn: Conn) -> None:
    """The gate and the marks are advisory locks, which any role may take: one held by
    another session makes an enqueue notify and a look unsettled, never wait."""
    run_id = create(conn)
    with (
        listening(db_url) as worker,
        connect(db_url) as squatter,
        connect(db_url) as producer,
    ):
        assert busy(worker, run_id)  # without the squatter, the enqueue would not notify
        gate = scalar(squatter, "SELECT pgcoord.campaign_mark_key('gate', NULL)")
        squatter.execute("SELECT pg_advisory_lock(%s, %s)", gate)
        producer.execute("SET lock_timeout = '2s'")
        enqueue(producer, run_id, [item("+1")])
        assert notified(worker) == [str(run_id)]

        key = scalar(squatter, "SELECT pgcoord.campaign_mark_key('idle', %s::bigint)", run_id)
        squatter.execute("SELECT pg_advisory_lock(%s, %s)", key)
        worker.execute("SET lock_timeout = '2s'")
        assert idle(worker, run_id) == (timedelta(0), False), "no mark, and it says so"
        assert advisory_locks(conn, worker.info.backend_pid) == 0
