"""A Python value of the wrong type is a TypeError naming the call and the argument, for
every call of the locks, inbox, campaigns and rates modules, sync and async, on a
connection and through the clients; a call with the right types that finds no pgcoord
function still raises NotInstalled."""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import psycopg
import pytest

from pgcoord import (
    AsyncClient,
    BufferWorker,
    CampaignWorker,
    Client,
    NotInstalled,
    campaigns,
    campaigns_async,
    inbox,
    inbox_async,
    locks,
    locks_async,
    migrations,
    rates,
    rates_async,
)
from pgcoord.arguments import describe, fits

SECOND = timedelta(seconds=1)

# call -> (its arguments after the connection, with exactly one of the wrong type: the
# one named second, whose value is the third)
WRONG: dict[str, tuple[dict[str, Any], str, Any]] = {
    "lock_acquire": ({"key": "k", "owner": "o", "ttl": 30}, "ttl", 30),
    "lock_release": ({"key": "k", "owner": 5}, "owner", 5),
    "lock_extend": ({"key": "k", "owner": "o", "ttl": 30.0}, "ttl", 30.0),
    "lock_is_current": ({"key": "k", "token": "x41"}, "token", "x41"),
    "message_ingest": (
        {"provider": "p", "provider_message_id": "m", "conversation_key": "c", "body": "b"}
        | {"debounce": 10},
        "debounce",
        10,
    ),
    "message_prune": ({"older_than": 14}, "older_than", 14),
    "message_payloads": ({"message_ids": [2.5]}, "message_ids", [2.5]),
    "buffer_claim": ({"worker": "w", "limit": 2.5}, "limit", 2.5),
    "buffer_claim_with_payloads": ({"worker": 5}, "worker", 5),
    "buffer_complete": ({"conversation_key": "c", "claim_token": "x"}, "claim_token", "x"),
    "buffer_fail": (
        {"conversation_key": "c", "claim_token": 1, "error": "e", "retry_in": 60},
        "retry_in",
        60,
    ),
    "buffer_extend": ({"conversation_key": "c", "claim_token": 1, "lease": 60}, "lease", 60),
    "buffer_release": ({"conversation_key": "c", "claim_token": True}, "claim_token", True),
    "buffer_fail_for_good": (
        {"conversation_key": "c", "claim_token": 1, "error": b"x"},
        "error",
        b"x",
    ),
    "buffer_revive": ({"conversation_key": 7}, "conversation_key", 7),
    "campaign_create": ({"name": 5}, "name", 5),
    "campaign_set_status": ({"run_id": 1.5, "status": "paused"}, "run_id", 1.5),
    "campaign_enqueue": ({"run_id": "one", "items": []}, "run_id", "one"),
    "campaign_enqueue_once": ({"run_id": 1, "key": 7, "items": []}, "key", 7),
    "campaign_claim": ({"worker": "w", "limit": 2.5}, "limit", 2.5),
    "campaign_complete": ({"message_id": 1, "claim_token": "x"}, "claim_token", "x"),
    "campaign_complete_many": (
        {"message_ids": [1], "claim_tokens": [1.5]},
        "claim_tokens",
        [1.5],
    ),
    "campaign_completed": ({"message_ids": [1.5], "claim_tokens": [1]}, "message_ids", [1.5]),
    "campaign_completed_then_claim": (
        {"message_ids": [1], "claim_tokens": [1], "metrics": None, "worker": "w", "limit": 1.5},
        "limit",
        1.5,
    ),
    "campaign_fail": ({"message_id": 1, "claim_token": 1, "error": 5}, "error", 5),
    "campaign_fail_for_good": ({"message_id": 1, "claim_token": 1, "error": 5}, "error", 5),
    "campaign_fail_in": ({"message_id": 1, "claim_token": 1.5, "error": "e"}, "claim_token", 1.5),
    "campaign_snooze": ({"message_id": 1, "claim_token": 1, "delay": 5}, "delay", 5),
    "campaign_extend": ({"message_id": 1, "claim_token": 1, "lease": 300}, "lease", 300),
    "campaign_release": ({"message_id": 1, "claim_token": 1.5}, "claim_token", 1.5),
    "campaign_skip_stale": ({"older_than": 3600}, "older_than", 3600),
    "campaign_due_in": ({"run_id": "x"}, "run_id", "x"),
    "campaign_idle": ({"run_id": "x"}, "run_id", "x"),
    "campaign_busy": ({"run_id": "x"}, "run_id", "x"),
    "campaign_progress": ({"run_id": "x"}, "run_id", "x"),
    "campaign_stats": ({"run_id": 1.5}, "run_id", 1.5),
    "campaign_prune": ({"older_than": 86400}, "older_than", 86400),
    "rate_acquire": ({"key": "k", "per_second": 10, "burst": 2.0}, "burst", 2.0),
    "rate_pause": ({"key": "k", "pause": 30}, "pause", 30),
}
SYNC = (locks, inbox, campaigns, rates)
ASYNC = (locks_async, inbox_async, campaigns_async, rates_async)


def calls(module: ModuleType) -> dict[str, Any]:
    """The module's calls: its public functions whose first parameter is a connection."""
    return {
        name: value
        for name, value in vars(module).items()
        if inspect.isfunction(value)
        and value.__module__ == module.__name__
        and not name.startswith("_")
        and next(iter(inspect.signature(value).parameters), None) == "conn"
    }


def with_arguments(module: ModuleType) -> set[str]:
    return {
        name for name, call in calls(module).items() if len(inspect.signature(call).parameters) > 1
    }


def expected(call: str, argument: str, value: Any) -> str:
    return rf"^{call}: {argument} must be .+, got {type(value).__name__} {re.escape(repr(value))}$"


def test_every_call_with_arguments_has_a_case() -> None:
    sync_calls = set().union(*(with_arguments(m) for m in SYNC))
    async_calls = set().union(*(with_arguments(m) for m in ASYNC))
    assert sync_calls == async_calls == set(WRONG)


def test_a_wrong_type_names_the_argument_on_a_connection(conn: psycopg.Connection[Any]) -> None:
    for module in SYNC:
        for name in with_arguments(module):
            arguments, argument, value = WRONG[name]
            with pytest.raises(TypeError, match=expected(name, argument, value)) as caught:
                getattr(module, name)(conn, **arguments)
            assert isinstance(caught.value.__cause__, psycopg.Error), name  # the server's


def client_calls(cls: type[Client] | type[AsyncClient]) -> list[str]:
    """The calls that the client has as methods (all but the worker's own:
    campaign_completed, campaign_completed_then_claim, campaign_fail_in, and
    campaign_idle and campaign_busy, which mark the session of the connection they are
    made on)."""
    names = [name for name in WRONG if hasattr(cls, name)]
    assert len(names) >= len(WRONG) - 5
    return names


def test_a_wrong_type_names_the_argument_through_the_client(client: Client) -> None:
    for name in client_calls(Client):
        arguments, argument, value = WRONG[name]
        with pytest.raises(TypeError, match=expected(name, argument, value)):
            getattr(client, name)(**arguments)


def test_a_wrong_type_names_the_argument_async(db_url: str) -> None:
    async def main() -> None:
        async with (
            await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn,
            AsyncClient(db_url) as client,
        ):
            for module in ASYNC:
                for name in with_arguments(module):
                    arguments, argument, value = WRONG[name]
                    match = expected(name, argument, value)
                    with pytest.raises(TypeError, match=match) as caught:
                        await getattr(module, name)(conn, **arguments)
                    assert isinstance(caught.value.__cause__, psycopg.Error), name
            for name in client_calls(AsyncClient):
                arguments, argument, value = WRONG[name]
                with pytest.raises(TypeError, match=expected(name, argument, value)):
                    await getattr(client, name)(**arguments)

    asyncio.run(main())


# values that fail while the call turns its arguments into parameters, before anything
# is sent: call -> (arguments, the wrong one, its value)
UNSENDABLE: dict[str, tuple[dict[str, Any], str, Any]] = {
    "campaign_create": ({"name": "n", "retry_backoff": 60}, "retry_backoff", 60),
    "campaign_enqueue": ({"run_id": 1, "items": [5]}, "items", [5]),
    "campaign_enqueue_once": ({"run_id": 1, "key": "k", "items": [5]}, "items", [5]),
    "campaign_complete": ({"message_id": 1, "claim_token": 1, "metrics": "x"}, "metrics", "x"),
    "campaign_complete_many": (
        {"message_ids": [1], "claim_tokens": [1], "metrics": [5]},
        "metrics",
        [5],
    ),
    "message_ingest": (
        {"provider": "p", "provider_message_id": "m", "conversation_key": "c", "body": "b"}
        | {"payload": "notjson"},
        "payload",
        "notjson",
    ),
}


def test_a_value_that_cannot_be_sent_names_the_argument(
    conn: psycopg.Connection[Any], client: Client, db_url: str
) -> None:
    """A value that fails before the call is sent (a backoff of 60 where a list of
    timedelta is due, a text for a JSON object) is the same TypeError, from the module
    and through the client, sync and async."""

    async def through_async(name: str, arguments: dict[str, Any]) -> None:
        async with AsyncClient(db_url) as aclient:
            await getattr(aclient, name)(**arguments)

    for name, (arguments, argument, value) in UNSENDABLE.items():
        module = next(m for m in SYNC if hasattr(m, name))
        with pytest.raises(TypeError, match=expected(name, argument, value)) as caught:
            getattr(module, name)(conn, **arguments)
        assert not isinstance(caught.value.__cause__, psycopg.Error), "nothing was sent"
        with pytest.raises(TypeError, match=expected(name, argument, value)):
            getattr(client, name)(**arguments)
        with pytest.raises(TypeError, match=expected(name, argument, value)):
            asyncio.run(through_async(name, arguments))


INGEST = {"provider": "p", "provider_message_id": "m", "conversation_key": "c", "body": "b"}
# values of the right type that JSON or PostgreSQL cannot hold:
# (call, arguments, the error, what its message says)
UNHOLDABLE: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    (
        "message_ingest",
        INGEST | {"payload": {"score": float("nan")}},
        ValueError,
        r"^message_ingest: payload: Out of range float values are not JSON compliant",
    ),
    (
        "campaign_enqueue",
        {"run_id": 1, "items": [{"recipient": "r", "payload": {"x": float("inf")}}]},
        ValueError,
        r"^campaign_enqueue: items: Out of range float",
    ),
    (
        "campaign_enqueue_once",
        {"run_id": 1, "key": "k", "items": [{"recipient": "r", "payload": {"x": float("nan")}}]},
        ValueError,
        r"^campaign_enqueue_once: items: Out of range float",
    ),
    (
        "campaign_complete_many",
        {"message_ids": [1], "claim_tokens": [1], "metrics": [{"ms": float("-inf")}]},
        ValueError,
        r"^campaign_complete_many: metrics: Out of range float",
    ),
    (
        "campaign_complete",
        {"message_id": 1, "claim_token": 1, "metrics": {"at": object()}},
        TypeError,
        r"^campaign_complete: metrics: object <object object at .*> has no JSON form",
    ),
    (
        "message_ingest",
        INGEST | {"payload": {"name": "a\x00b"}},
        ValueError,
        r"^message_ingest: payload: a text in it holds a NUL character, which jsonb cannot",
    ),
    (
        "message_ingest",
        INGEST | {"body": "a\x00b"},
        ValueError,
        r"^body: a text holding a NUL character, which PostgreSQL cannot",
    ),
    (
        "message_ingest",
        INGEST | {"body": "b\udcff"},
        ValueError,
        r"^body: a text the connection's encoding \(utf-8\) cannot: .*surrogate",
    ),
    (
        "lock_acquire",
        {"key": "k\udcff", "owner": "o"},
        ValueError,
        r"^key: a text the connection's encoding \(utf-8\) cannot: .*surrogate",
    ),
    (
        "campaign_complete",
        {"message_id": 1, "claim_token": 1, "metrics": {"text": "broken \ud83d pair"}},
        ValueError,
        r"^campaign_complete: metrics: a text in it holds a lone surrogate",
    ),
]


def test_a_value_json_or_postgresql_cannot_hold_names_the_argument(
    conn: psycopg.Connection[Any], client: Client
) -> None:
    """NaN, an infinity, an object with no JSON form, a NUL character, a lone surrogate
    (which the server refuses in jsonb, 22P02, though the encoder escapes it): refused before
    anything reaches the server, naming the argument, and the connection goes on."""
    for name, arguments, error, said in UNHOLDABLE:
        module = next(m for m in SYNC if hasattr(m, name))
        with pytest.raises(error, match=said) as caught:
            getattr(module, name)(conn, **arguments)
        assert getattr(caught.value.__cause__, "sqlstate", None) is None, "nothing was sent"
        with pytest.raises(error, match=said):
            getattr(client, name)(**arguments)
    assert locks.lock_acquire(conn, "k", "o", ttl=SECOND).acquired


def test_dates_and_times_in_any_json_argument_go_as_iso_text(conn: psycopg.Connection[Any]) -> None:
    at = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)
    ingested = inbox.message_ingest(conn, "p", "m", "c", "b", payload={"at": at})
    stored = inbox.message_payloads(conn, [ingested.message_id])
    assert stored == {ingested.message_id: {"at": "2026-12-04T18:00:00+00:00"}}


def test_the_lease_of_a_client_lock_and_the_workers_intervals_are_timedeltas(
    client: Client, db_url: str
) -> None:
    with (
        pytest.raises(TypeError, match=r"^lock: ttl must be a timedelta, got int 30$"),
        client.lock("k", ttl=30),  # type: ignore[arg-type]
    ):
        pass

    async def handler(item: Any) -> None:
        return None

    for worker, option in ((BufferWorker, "lease"), (CampaignWorker, "grace")):
        with pytest.raises(TypeError, match=rf"^{option} must be a timedelta, got int 60$"):
            worker(handler, db_url, **{option: 60})
    with pytest.raises(TypeError, match=r"^retry_in must be a timedelta, got int 5$"):
        BufferWorker(handler, db_url, retry_in=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^skip_stale_every must be a timedelta or None, got"):
        CampaignWorker(handler, db_url, skip_stale_every=60)  # type: ignore[arg-type]


def test_a_transaction_stays_usable_for_the_caller_to_roll_back(
    conn: psycopg.Connection[Any],
) -> None:
    with pytest.raises(TypeError, match="ttl must be a timedelta"), conn.transaction():
        locks.lock_acquire(conn, "k", "o", ttl=30)  # type: ignore[arg-type]
    assert locks.lock_acquire(conn, "k", "o", ttl=SECOND).acquired


def test_right_types_and_a_missing_function_are_not_installed(empty_db_url: str) -> None:
    migrations.migrate(empty_db_url, "0.1.0")  # the lease locks only: no inbox functions
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        with pytest.raises(NotInstalled) as caught:
            inbox.buffer_claim(conn, "w", 2, SECOND)
        assert caught.value.sqlstate == "42883"
        with pytest.raises(TypeError, match=r"^buffer_claim: limit must be an int"):
            inbox.buffer_claim(conn, "w", 2.5, SECOND)  # type: ignore[arg-type]
        assert locks.lock_acquire(conn, "k", "o", SECOND).acquired


def test_what_fits_an_annotation() -> None:
    assert fits(1, float) and not fits(True, int) and not fits(1.5, int)
    assert fits([1, 2], Sequence[int]) and not fits("12", Sequence[int])
    assert not fits([timedelta(0), 5], Sequence[timedelta])
    assert fits([{}], Iterable[Mapping[str, Any]]) and not fits("ab", Iterable[Mapping[str, Any]])
    assert fits(None, Mapping[str, Any] | None) and not fits([], Mapping[str, Any] | None)
    assert describe(Sequence[timedelta]) == "a Sequence of timedelta"
    assert describe(Mapping[str, Any] | None) == "a Mapping or None"
    assert describe(int) == "an int"


def test_a_naive_datetime_in_a_json_argument_is_this_process_local_time(
    conn: psycopg.Connection[Any],
) -> None:
    """Whatever the session's time zone: a naive datetime is what `datetime.now()` gives,
    the process's local time, and goes with its offset."""
    naive = datetime.now().replace(microsecond=0) - timedelta(hours=1)  # due
    conn.execute("SET TIME ZONE 'Pacific/Kiritimati'")  # +14: far from any local zone here
    ingested = inbox.message_ingest(conn, "p", "naive", "c", "b", payload={"at": naive})
    stored = inbox.message_payloads(conn, [ingested.message_id])[ingested.message_id]["at"]
    assert datetime.fromisoformat(stored) == naive.astimezone()
    run = campaigns.campaign_create(conn, "naive")
    campaigns.campaign_enqueue(conn, run, [{"recipient": "r", "scheduled_at": naive}])
    [claimed] = campaigns.campaign_claim(conn, "w", run_id=run)
    assert claimed.scheduled_at == naive.astimezone()


def test_what_only_looks_like_a_nul_or_a_broken_pair_is_sent(
    conn: psycopg.Connection[Any],
) -> None:
    """A surrogate pair held as two code points (UTF-16 decoded with surrogatepass) is one
    character to the server, and a backslash before u0000 is text: both are stored."""
    payload = {"pair": "\ud83d\ude00", "literal": "C:\\u0000\\dir"}
    ingested = inbox.message_ingest(conn, "p", "look-alike", "c", "b", payload=payload)
    stored = inbox.message_payloads(conn, [ingested.message_id])[ingested.message_id]
    assert stored == {"pair": "\U0001f600", "literal": "C:\\u0000\\dir"}


def test_an_object_whose_own_code_fails_is_named_not_raised_through(
    conn: psycopg.Connection[Any],
) -> None:
    class Odd:
        def __repr__(self) -> str:
            return "odd \x00"

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    with pytest.raises(TypeError, match=r"^message_ingest: payload: Odd odd \\x00 has no JSON"):
        inbox.message_ingest(conn, "p", "odd", "c", "b", payload={"o": Odd()})
    with pytest.raises(TypeError, match=r"^message_ingest: payload: RuntimeError: no repr$"):
        inbox.message_ingest(conn, "p", "broken", "c", "b", payload={"o": Broken()})
