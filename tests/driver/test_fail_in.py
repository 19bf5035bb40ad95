"""campaign_fail_in: campaign_fail answering, in the same statement, whether the message
failed for good and how long until its retry by the server's clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg

from pgcoord import campaigns

BACKOFF = [timedelta(minutes=5), timedelta(minutes=30)]


def test_retry_in_follows_the_backoff_then_the_last_try_fails_for_good(
    conn: psycopg.Connection[Any],
) -> None:
    run_id = campaigns.campaign_create(conn, "fail-in", max_retries=2, retry_backoff=BACKOFF)
    campaigns.campaign_enqueue(conn, run_id, [{"recipient": "r"}])
    answers = []
    for _ in range(3):
        [message] = campaigns.campaign_claim(conn, "w", 1, run_id=run_id)
        answers.append(
            campaigns.campaign_fail_in(conn, message.message_id, message.claim_token, "boom")
        )
        conn.execute(
            "UPDATE pgcoord.campaign_queue SET due_at = clock_timestamp() WHERE run_id = %s",
            [run_id],
        )
    (first_final, first_in), (second_final, second_in), (last_final, last_in) = answers
    assert not first_final and BACKOFF[0] - timedelta(seconds=5) < first_in <= BACKOFF[0]
    assert not second_final and BACKOFF[1] - timedelta(seconds=5) < second_in <= BACKOFF[1]
    assert last_final and last_in == timedelta(0)
    [progress] = campaigns.campaign_progress(conn, run_id)
    assert progress.failed == 1


def test_a_later_retry_after_wins_and_a_stale_token_changes_nothing(
    conn: psycopg.Connection[Any],
) -> None:
    run_id = campaigns.campaign_create(conn, "fail-in-later", retry_backoff=BACKOFF)
    campaigns.campaign_enqueue(conn, run_id, [{"recipient": "r"}])
    [message] = campaigns.campaign_claim(conn, "w", 1, run_id=run_id)
    hour = timedelta(hours=1)
    found = campaigns.campaign_fail_in(conn, message.message_id, message.claim_token, "429", hour)
    assert found is not None
    final, retry_in = found
    assert not final and hour - timedelta(seconds=5) < retry_in <= hour
    stale = campaigns.campaign_fail_in(conn, message.message_id, message.claim_token, "again")
    assert stale is None
    [progress] = campaigns.campaign_progress(conn, run_id)
    assert (progress.pending, progress.failed) == (1, 0)
