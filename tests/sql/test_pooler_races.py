"""The SQL contract's races again, through PgBouncer in transaction mode (see poolerkit):
each client a plain psycopg connection with prepare_threshold=None, and more clients
than the pool has server connections, so the clients queue in the pooler and one
client's calls run on whichever server session is free."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlkit
import test_inbox_ingest
import test_inbox_race
import test_lock_race
from poolerkit import POOL_SIZE

# each takes the fixtures db_url and conn, or db_url alone
RACES: list[Callable[..., None]] = [
    test_lock_race.test_exactly_one_of_32_acquires_and_the_others_see_it,
    test_lock_race.test_exactly_one_of_32_takes_over_an_expired_lease,
    test_lock_race.test_release_racing_31_acquirers_hands_the_key_to_at_most_one,
    test_lock_race.test_32_connections_on_32_keys_all_acquire,
    test_inbox_ingest.test_exactly_one_of_20_identical_ingests_stores_the_message,
    test_inbox_ingest.test_concurrent_repeats_that_disagree_are_refused_and_the_first_stays,
    test_inbox_race.test_8_claimers_share_no_conversation_and_miss_none,
    test_inbox_race.test_ingest_claim_fail_and_complete_side_by_side_deliver_each_message_once,
]


@pytest.fixture
def pooled_conn(pooled_db_url: str) -> Iterator[sqlkit.Conn]:
    with sqlkit.connect(pooled_db_url, prepare_threshold=None) as conn:
        yield conn


@pytest.mark.parametrize("race", RACES, ids=lambda race: race.__name__.removeprefix("test_"))
def test_the_race_holds_through_the_pooler(
    race: Callable[..., None],
    pooled_db_url: str,
    pooled_conn: sqlkit.Conn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the races' connections (sqlkit.connections) never prepare a statement
    monkeypatch.setattr(
        sqlkit, "connect", functools.partial(sqlkit.connect, prepare_threshold=None)
    )
    assert min(test_inbox_race.CLAIMERS, test_lock_race.CONNECTIONS) > POOL_SIZE
    fixtures: dict[str, Any] = {"db_url": pooled_db_url, "conn": pooled_conn}
    race(**{name: fixtures[name] for name in inspect.signature(race).parameters})
