"""The campaign bench reports, per run, the snapshot held longest in its database and by
whom (bench/horizon.py): what slows a SKIP LOCKED claim down while it lasts."""

from __future__ import annotations

import time

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench.horizon import HorizonWatch


def test_the_longest_held_snapshot_and_its_holder() -> None:
    watch = HorizonWatch("unused", "unused")
    watch._note(10.0, [(1, "100", "client backend: a"), (2, "101", "autovacuum worker: b")])
    watch._note(10.5, [(1, "105", "client backend: a2"), (2, "101", "autovacuum worker: b")])
    # pid 1 took a new snapshot at 10.5: its time starts again
    watch._note(11.0, [(1, "105", "client backend: a2"), (2, "101", "autovacuum worker: b")])
    assert (watch.longest, watch.holder) == (1.0, "autovacuum worker: b")
    watch._note(12.5, [(1, "105", "client backend: a2")])
    assert (watch.longest, watch.holder) == (2.0, "client backend: a2")
    # a snapshot seen again after it was gone counts from its return
    watch._note(13.0, [(2, "101", "autovacuum worker: b")])
    watch._note(13.5, [(2, "101", "autovacuum worker: b")])
    assert watch.detail() == {"longest_snapshot_s": 2.0, "snapshot_holder": "client backend: a2"}


def test_a_snapshot_held_in_the_database_is_seen(server_url: str, db_url: str) -> None:
    database = conninfo_to_dict(db_url)["dbname"]
    with (
        psycopg.connect(db_url) as holder,
        HorizonWatch(server_url, str(database)) as watch,
    ):
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT 'held' AS snapshot")
        deadline = time.monotonic() + 10
        while watch.longest < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        holder.rollback()
    assert watch.longest >= 0.3
    assert watch.holder == "client backend: SELECT 'held' AS snapshot"


def test_the_report_shows_a_snapshot_held_a_second_or_more_and_what_was_read() -> None:
    from bench.campaigns_report import read_most, snapshot

    assert snapshot({"longest_snapshot_s": 0.9, "snapshot_holder": "client backend: x"}) == ""
    holder = "autovacuum worker: autovacuum:\n    VACUUM ANALYZE pgqueuer.pgqueuer" + " x" * 40
    shown = snapshot({"longest_snapshot_s": 2.5, "snapshot_holder": holder})
    assert shown.startswith("2.5 s: autovacuum worker: autovacuum: VACUUM ANALYZE pgqueuer.")
    assert len(shown) == len("2.5 s: ") + 60
    assert read_most(
        {"rows_read_by": {"campaign_queue_due": 7.4, "campaign_messages_pkey": 1.0}}
    ) == ("campaign_queue_due 7.4, campaign_messages_pkey 1")
    assert read_most({}) == ""
