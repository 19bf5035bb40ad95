"""The campaign runs and rate keys of `pgcoord status`, `pgcoord campaigns` (one table of
the runs with real counts, retries, snoozes and handler times), `pgcoord maintain`, and
`pgcoord watch` following a run that a CampaignWorker works, until it is done."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from clikit import pgcoord, started
from test_cli_worker import cells, when

from pgcoord import CampaignMessage, CampaignWorker, campaigns, cli, rates, releases
from pgcoord.cli import status, watch
from pgcoord.cli.campaigns import COLUMNS
from pgcoord.cli.errors import INTERRUPTED
from pgcoord.cli.tables import duration, percent
from pgcoord.types import CampaignProgress, CampaignStats

Conn = psycopg.Connection[Any]
NO_BACKOFF = [timedelta(0)]
MILLISECOND = timedelta(milliseconds=1)
OLD = "0.2.0"  # the release before the campaign queue


@pytest.fixture(autouse=True)
def no_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says where the database is; the environment's DATABASE_URL is not used."""
    monkeypatch.delenv("DATABASE_URL", raising=False)


def enqueue(conn: Conn, run_id: int, count: int, **item: Any) -> None:
    items = [{"recipient": f"+{i}", "payload": {"n": i}, **item} for i in range(count)]
    assert campaigns.campaign_enqueue(conn, run_id, items) == count


def table(text: str) -> list[list[str]]:
    """A table as its header's cells and its rows' cells."""
    header, rule, *lines = text.splitlines()
    return [cells(rule, header), *(cells(rule, line) for line in lines)]


def numbers(*values: int) -> list[str]:
    return [str(value) for value in values]


def old_release(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(releases.install_sql(OLD))
    return url


def passed(conn: Conn, moment: datetime) -> bool:
    """Whether the server clock has passed `moment`."""
    return conn.execute("SELECT clock_timestamp() > %s", [moment]).fetchall() == [(True,)]


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The command's one line on stderr (nothing on stdout)."""
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err
    return captured.err


# pgcoord status -------------------------------------------------------------------------


def test_status_shows_the_runs_and_the_rate_keys(
    conn: Conn, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spring = campaigns.campaign_create(conn, "spring")
    enqueue(conn, spring, 3)
    assert len(campaigns.campaign_claim(conn, "w", 1)) == 1
    empty = campaigns.campaign_create(conn, "empty")
    assert rates.rate_acquire(conn, "whatsapp", 10, 20) == timedelta(0)
    paused_until = rates.rate_pause(conn, "sms", timedelta(hours=1))

    assert cli.main(["status", "--database-url", db_url]) == 0

    locks_part, buffers_part, runs_part, rates_part, *hint = (
        capsys.readouterr().out.rstrip("\n").split("\n\n")
    )
    assert (locks_part, buffers_part) == ("no locks are held", "no buffered conversations")
    # runs are running: a last line when this server's autovacuum is not as recommended
    expected = status.vacuum_hint(*status.autovacuum_settings(conn))
    assert hint == ([expected] if expected else [])
    assert table(runs_part) == [
        list(status.RUN_COLUMNS),
        [str(spring), "spring", "running", "2", "1", "0", "0", "0", "3"],
        [str(empty), "empty", "running", "0", "0", "0", "0", "0", "0"],
    ]
    header, sms, whatsapp = table(rates_part)
    assert header == list(status.RATE_COLUMNS)
    assert sms[:5] == ["sms", "", "", "", when(paused_until)]
    assert whatsapp[0] == "whatsapp" and whatsapp[2:5] == ["10", "20", ""]
    assert 19 <= float(whatsapp[1]) <= 20  # one spent, refilling at 10 a second


def test_status_says_when_autovacuum_lets_a_busy_queue_grow() -> None:
    assert status.vacuum_hint(autovacuum=True, naptime=2) is None
    assert status.vacuum_hint(autovacuum=True, naptime=1) is None
    assert status.vacuum_hint(autovacuum=True, naptime=60) == (
        "autovacuum_naptime is 60s on this server: a busy campaign queue grows between"
        " autovacuum's visits (docs/vacuum.md recommends 2s)"
    )
    assert status.vacuum_hint(autovacuum=False, naptime=2) == (
        "autovacuum is off on this server: a busy campaign queue grows until something"
        " vacuums it (docs/vacuum.md: autovacuum on, autovacuum_naptime 2s)"
    )


def test_status_reads_the_servers_autovacuum_settings(conn: Conn) -> None:
    autovacuum, naptime = status.autovacuum_settings(conn)
    [[on, seconds]] = conn.execute(
        "SELECT setting = 'on', (SELECT setting::integer FROM pg_settings"
        "  WHERE name = 'autovacuum_naptime') FROM pg_settings WHERE name = 'autovacuum'"
    ).fetchall()
    assert (autovacuum, naptime) == (on, seconds)


def test_status_on_a_release_before_the_campaign_queue(
    empty_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", "--database-url", old_release(empty_db_url)]) == 0
    assert capsys.readouterr().out == (
        "no locks are held\n\nno buffered conversations\n\n"
        f"no campaign runs or rate keys: pgcoord {OLD} has no campaign queue"
        " (pgcoord migrate installs it)\n"
    )


# pgcoord campaigns ----------------------------------------------------------------------


def complete(conn: Conn, message: CampaignMessage, handler_ms: float) -> None:
    metrics = {"handler_ms": handler_ms}
    assert campaigns.campaign_complete(conn, message.message_id, message.claim_token, metrics)


def test_campaigns_shows_each_run_with_its_counts_retries_snoozes_and_handler_times(
    conn: Conn, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    promo = campaigns.campaign_create(conn, "promo", retry_backoff=NO_BACKOFF)
    enqueue(conn, promo, 5)
    sent_1, sent_2, snoozed, retried, held = campaigns.campaign_claim(conn, "w", 5)
    complete(conn, sent_1, 10)
    complete(conn, sent_2, 30)
    assert campaigns.campaign_snooze(conn, snoozed.message_id, snoozed.claim_token, timedelta(0))
    assert campaigns.campaign_fail(conn, retried.message_id, retried.claim_token, "boom")
    [again, retry] = campaigns.campaign_claim(conn, "w", 2)
    assert (again.message_id, retry.message_id) == (snoozed.message_id, retried.message_id)
    complete(conn, again, 20)
    assert campaigns.campaign_release(conn, retry.message_id, retry.claim_token)
    assert campaigns.campaign_set_status(conn, promo, "paused") == "running"
    # a run whose one message failed for good, and one skipped as stale
    last = campaigns.campaign_create(conn, "last", max_retries=0)
    enqueue(conn, last, 2)
    doomed = campaigns.campaign_claim(conn, "w", 1)[0]
    failure = campaigns.campaign_fail(conn, doomed.message_id, doomed.claim_token, "no")
    assert failure is not None and failure.status == "failed"
    assert campaigns.campaign_skip_stale(conn, timedelta(0)) == 1

    assert cli.main(["campaigns", "--database-url", db_url]) == 0

    rows = table(capsys.readouterr().out)
    # run, name, status, progress; sent, failed, skipped, pending, processing; msgs/min,
    # retries, snoozes; p50 ms, p95 ms (the held message's claim is current: 3 of 5 through)
    assert rows == [
        list(COLUMNS),
        [
            str(promo),
            "promo",
            "paused",
            "3/5 60.0%",
            *numbers(3, 0, 0, 1, 1, 3, 1, 1),
            "20.0",
            "29.0",
        ],
        [str(last), "last", "running", "2/2 100.0%", *numbers(0, 1, 1, 0, 0, 0, 1, 0), "", ""],
    ]
    assert held.message_id not in {sent_1.message_id, sent_2.message_id}

    assert cli.main(["campaigns", "--run", str(last), "--database-url", db_url]) == 0
    assert table(capsys.readouterr().out)[1:] == rows[2:]


def test_campaigns_without_runs_and_of_an_unknown_run(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["campaigns", "--database-url", db_url]) == 0
    assert capsys.readouterr().out == "no campaign runs\n"
    assert cli.main(["campaigns", "--run", "42", "--database-url", db_url]) == 1
    err = error_line(capsys)
    assert err.startswith("pgcoord: error: no campaign run 42 in database ")


@pytest.mark.parametrize("words", [["campaigns"], ["watch", "1"], ["maintain"]])
def test_the_campaign_commands_need_the_campaign_queue(
    words: list[str], empty_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([*words, "--database-url", empty_db_url]) == 1
    assert error_line(capsys).startswith("pgcoord: error: pgcoord is not installed in database ")
    old_release(empty_db_url)
    assert cli.main([*words, "--database-url", empty_db_url]) == 1
    err = error_line(capsys)
    assert err.startswith(f"pgcoord: error: pgcoord {OLD} in database ")
    assert err.endswith(" has no campaign queue: run pgcoord migrate\n")


# pgcoord maintain -----------------------------------------------------------------------


def test_maintain_skips_the_stale_messages_and_says_how_many(
    conn: Conn, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = campaigns.campaign_create(conn, "r", stale_after=timedelta(hours=1))
    [[two_hours_ago, ten_seconds_ago]] = conn.execute(
        "SELECT clock_timestamp() - interval '2 hours', clock_timestamp() - interval '10 s'"
    ).fetchall()
    enqueue(conn, run_id, 3, scheduled_at=two_hours_ago.isoformat())
    enqueue(conn, run_id, 1, scheduled_at=ten_seconds_ago.isoformat())

    command = ["maintain", "--database-url", db_url]
    assert cli.main(command) == 0
    assert capsys.readouterr().out == "skipped 3 stale messages\n"
    assert cli.main(command) == 0
    assert capsys.readouterr().out == "skipped 0 stale messages\n"
    assert cli.main([*command, "--older-than", "5"]) == 0
    assert capsys.readouterr().out == "skipped 1 stale message\n"
    [progress] = campaigns.campaign_progress(conn, run_id)
    assert (progress.skipped, progress.pending) == (4, 0)


def test_maintain_prunes_the_runs_ended_long_enough_ago_when_asked(
    conn: Conn, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ended, running = (campaigns.campaign_create(conn, name) for name in ("ended", "running"))
    enqueue(conn, ended, 3)
    enqueue(conn, running, 2)
    campaigns.campaign_set_status(conn, ended, "finished")
    [[ended_at]] = conn.execute(
        "SELECT status_changed_at FROM pgcoord.campaign_runs WHERE id = %s", [ended]
    ).fetchall()
    command = ["maintain", "--database-url", db_url, "--prune-ended"]
    assert cli.main([*command, "3600"]) == 0
    assert capsys.readouterr().out == "skipped 0 stale messages\npruned 0 messages of ended runs\n"
    deadline = time.monotonic() + 10
    while not passed(conn, ended_at + MILLISECOND):
        assert time.monotonic() < deadline, "the server clock to pass the run's end"
    assert cli.main([*command, "0.001"]) == 0
    assert capsys.readouterr().out == "skipped 0 stale messages\npruned 3 messages of ended runs\n"
    assert [p.run_id for p in campaigns.campaign_progress(conn)] == [running]


def test_maintain_says_how_to_schedule_it_with_pg_cron(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["maintain", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert (
        "SELECT cron.schedule('pgcoord-maintain', '* * * * *', "
        "'SELECT pgcoord.campaign_skip_stale()')" in help_text
    )


# pgcoord watch ---------------------------------------------------------------------------


def test_watch_of_an_unknown_run_is_one_line(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["watch", "7", "--database-url", db_url]) == 1
    assert error_line(capsys).startswith("pgcoord: error: no campaign run 7 in database ")


def test_watch_of_a_run_that_is_done_draws_it_once_and_sums_it_up(
    conn: Conn, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = campaigns.campaign_create(conn, "done")
    enqueue(conn, run_id, 2)
    for message in campaigns.campaign_claim(conn, "w", 2):
        complete(conn, message, 12)

    assert cli.main(["watch", str(run_id), "--database-url", db_url]) == 0

    line, summary = capsys.readouterr().out.splitlines()
    assert line.startswith(f"run {run_id} [{'#' * watch.BAR_WIDTH}] 2/2 100.0%  ")
    assert "  2 msgs/min  sent 2 failed 0 skipped 0  retries 0 snoozes 0" in line
    assert "p50 12.0 ms p95 12.0 ms" in line
    assert "ETA" not in line
    assert summary.startswith(
        f"run {run_id} 'done' is done: 2 sent, 0 failed, 0 skipped of 2 (100.0%); watched for "
    )


def test_watch_redraws_its_line_in_place_on_a_terminal(
    conn: Conn,
    db_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = campaigns.campaign_create(conn, "cancelled")
    enqueue(conn, run_id, 3)
    assert campaigns.campaign_set_status(conn, run_id, "cancelled") == "running"
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "61")  # a line of 60 characters, the cursor after it

    assert cli.main(["watch", str(run_id), "--database-url", db_url]) == 0

    drawn, summary, end = capsys.readouterr().out.split("\n")
    # back to the start of the line, the parts that fit the terminal, the rest erased
    bar = "-" * watch.BAR_WIDTH
    assert drawn == f"\rrun {run_id} cancelled [{bar}] 0/3 0.0%  0 msgs/min\x1b[K"
    assert summary.startswith(
        f"run {run_id} 'cancelled' was cancelled: 0 sent, 0 failed, 0 skipped of 3 (0.0%), "
        "3 left; watched for "
    )
    assert end == ""


@contextmanager
def worker_thread(handler: Any, db_url: str, **options: Any) -> Iterator[None]:
    """A CampaignWorker running `handler` in a thread of its own until the block ends."""
    ready = threading.Event()
    found: dict[str, Any] = {}

    async def work() -> None:
        worker = CampaignWorker(handler, db_url, name="watched", **options)
        found.update(worker=worker, loop=asyncio.get_running_loop())
        ready.set()
        await worker.run()

    thread = threading.Thread(target=asyncio.run, args=(work(),), daemon=True)
    thread.start()
    assert ready.wait(30), "the worker did not start"
    try:
        yield
    finally:
        found["loop"].call_soon_threadsafe(found["worker"].stop)
        thread.join(30)
        assert not thread.is_alive(), "the worker did not stop"


def test_watch_follows_a_run_worked_by_a_campaign_worker_until_it_is_done(
    conn: Conn, db_url: str
) -> None:
    run_id = campaigns.campaign_create(conn, "live")
    enqueue(conn, run_id, 10)
    gate = threading.Event()  # the second half of the run waits for it

    async def send(message: CampaignMessage) -> dict[str, Any]:
        if message.payload["n"] >= 5:
            await asyncio.to_thread(gate.wait, 60)
        return {"n": message.payload["n"]}

    command = pgcoord("watch", str(run_id), "--interval", "0.1", "--database-url", db_url)
    deadline = time.monotonic() + 60
    try:
        with (
            worker_thread(send, db_url, concurrency=10, timeout=timedelta(seconds=90)),
            started(command) as (proc, output),
        ):
            seen: list[str] = []
            while not seen or " 5/10 50.0% " not in seen[-1]:  # half done, and watched
                line = output.next(deadline)
                assert line is not None, seen
                seen.append(line)
            half = seen[-1]
            gate.set()
            seen += output.rest(deadline)
            assert proc.wait(timeout=60) == 0
            assert output.err() == ""
    finally:
        gate.set()
    *drawn, summary = seen
    assert summary.startswith(f"run {run_id} 'live' is done: 10 sent, 0 failed, 0 skipped of 10")
    through = [int(line.split("] ")[1].split("/")[0]) for line in drawn]
    assert through == sorted(through) and through[-1] == 10, through
    assert all(line.startswith(f"run {run_id} [") for line in drawn)
    assert " ETA " in half


def test_ctrl_c_stops_watch_quietly(conn: Conn, db_url: str) -> None:
    run_id = campaigns.campaign_create(conn, "waiting")
    enqueue(conn, run_id, 1)
    command = pgcoord("watch", str(run_id), "--interval", "0.1", "--database-url", db_url)
    with started(command) as (proc, output):
        first = output.next(time.monotonic() + 60)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == INTERRUPTED
        assert output.err() == ""
    assert first is not None and first.startswith(f"run {run_id} [")


def test_on_80_columns_the_line_shows_the_eta_and_the_throughput_first(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = CampaignProgress(123, "big", "running", 9000, 15, 85_885, 12, 88, 95_000)
    stats = CampaignStats(123, 4000, 310, 25, 640.5, 1890.25)
    monkeypatch.setenv("COLUMNS", "80")
    watch.Line(True).show(watch.status_line(run, stats, per_second=66.7))
    drawn = capsys.readouterr().out
    text = drawn.removeprefix("\r").removesuffix("\x1b[K")
    assert text.startswith("run 123 [") and " 85,985/95,000 90.5%  ETA 2m15s  " in text, text
    assert len(text) <= 79 and text.endswith("  4,000 msgs/min"), "whole parts that fit"


def test_watch_connects_again_when_its_connection_is_killed(conn: Conn, db_url: str) -> None:
    run_id = campaigns.campaign_create(conn, "through a restart")
    enqueue(conn, run_id, 1)
    command = pgcoord("watch", str(run_id), "--interval", "0.1", "--database-url", db_url)
    deadline = time.monotonic() + 60
    with started(command) as (proc, output):
        first = output.next(deadline)
        assert first is not None and first.startswith(f"run {run_id} [")
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND query LIKE '%%pgcoord.campaign_%%'"
        ).fetchone()
        assert killed == (1,)
        seen = [first]
        while "connecting again" not in seen[-1]:
            line = output.next(deadline)
            assert line is not None, seen
            seen.append(line)
        [message] = campaigns.campaign_claim(conn, "w", 1)
        complete(conn, message, 5)
        seen += output.rest(deadline)
        assert proc.wait(timeout=60) == 0
        assert output.err() == ""
    assert seen[-1].startswith(f"run {run_id} 'through a restart' is done: 1 sent")


def test_the_throughput_is_what_the_watch_saw_over_the_last_minute() -> None:
    stats = CampaignStats(1, 120, 0, 0, None, None)
    seen = watch.Throughput()
    seen.add(0.0, 10)
    assert seen.per_second(stats) == 2.0  # the run's last minute, before a second look
    seen.add(10.0, 60)
    assert seen.per_second(stats) == 5.0
    seen.add(70.0, 70)
    seen.add(80.0, 80)
    assert seen.per_second(stats) == 20 / 70  # the look at 0 s is more than a minute old

    slow = watch.Throughput()
    slow.add(0.0, 10)
    slow.add(1.0, 10)
    assert slow.per_second(stats) == 2.0  # nothing through yet: still the run's last minute
    slow.add(61.0, 10)
    assert slow.per_second(stats) == 0.0  # a whole minute seen without a message through


def test_the_progress_never_reads_100_percent_before_the_end() -> None:
    assert (percent(1999, 2000), percent(2000, 2000), percent(0, 0)) == ("99.9%", "100.0%", "-")
    assert [duration(s) for s in (0, 59.6, 147, 3720, 3 * 86400 + 4 * 3600)] == [
        "0s",
        "1m00s",
        "2m27s",
        "1h02m",
        "3d04h",
    ]
