"""Bad arguments to every section-3 function and helper: SQLSTATE 22004 for NULL, 22023
otherwise (infinite and over-long intervals included), a message naming the argument,
and nothing changed, whatever state the messages are in. The edges of each range are
accepted."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from campaignkit import (
    LONG,
    SHORT,
    claim,
    complete,
    complete_many,
    create,
    enqueue_many,
    enqueue_once,
    extend,
    fail,
    prune,
    release,
    set_status,
    skip_stale,
    snapshot,
    snooze,
    until_lease_ran_out,
)
from sqlkit import (
    BELOW_ZERO_BY_THE_CALENDAR,
    OVER_BY_THE_CALENDAR,
    PARTS_PAST_THE_DATES,
    Conn,
    bad_call_problem,
    call_named,
    daylight_saving_within_a_day,
    scalar,
    server_clock,
)

NULL, INVALID = "22004", "22023"
TYPES = {
    "p_name": "text",
    "p_max_retries": "integer",
    "p_retry_backoff": "interval[]",
    "p_stale_after": "interval",
    "p_run_id": "bigint",
    "p_status": "text",
    "p_items": "jsonb",
    "p_worker": "text",
    "p_limit": "integer",
    "p_lease": "interval",
    "p_message_id": "bigint",
    "p_claim_token": "bigint",
    "p_metrics": "jsonb",
    "p_message_ids": "bigint[]",
    "p_claim_tokens": "bigint[]",
    "p_error": "text",
    "p_retry_after": "interval",
    "p_delay": "interval",
    "p_older_than": "interval",
    "p_key": "text",
}

NAME = [
    (None, NULL, "null"),
    ("", INVALID, "empty"),
    ("n" * 1025, INVALID, "1025-bytes"),
    ("é" * 513, INVALID, "1026-bytes-in-513-characters"),
]
NOT_NULL = [(None, NULL, "null")]
INFINITY = "infinity"  # an infinite interval where the server has them (17+), else rejected


def interval_cases(low: str, high: str, nullable: bool = False) -> list[tuple[Any, str, str]]:
    """Values outside an interval range: `low` is '>0' or '>=0', `high` the maximum."""
    cases: list[tuple[Any, str, str]] = [] if nullable else [(None, NULL, "null")]
    cases += [(timedelta(seconds=-1), INVALID, "negative"), (f"{high} 1 second", INVALID, "over")]
    cases += [(INFINITY, INVALID, "infinity"), ("-" + INFINITY, INVALID, "minus-infinity")]
    # within the range as PostgreSQL compares intervals, outside it by the calendar
    cases += [
        (BELOW_ZERO_BY_THE_CALENDAR, INVALID, "below-0-by-the-calendar"),
        (OVER_BY_THE_CALENDAR[high], INVALID, "over-by-the-calendar"),
    ]
    # within the range as compared, yet a part alone reaches past the dates there are
    cases += [(parts, INVALID, f"parts-past-{n}") for n, parts in enumerate(PARTS_PAST_THE_DATES)]
    if low == ">0":
        cases.append((timedelta(0), INVALID, "zero"))
    return cases


CASES: dict[str, list[tuple[Any, str, str]]] = {
    "p_name": NAME,
    "p_key": NAME,
    "p_worker": NAME,
    "p_max_retries": [(None, NULL, "null"), (-1, INVALID, "negative"), (101, INVALID, "101")],
    "p_retry_backoff": [
        (None, NULL, "null"),
        ("{}", INVALID, "empty"),
        ("{1 second,-1 second}", INVALID, "a-negative-element"),
        ("{1 second,NULL}", INVALID, "a-null-element"),
        ("{31 days}", INVALID, "over-30-days"),
        ("{1 mon}", INVALID, "a-month"),
        ("{" + BELOW_ZERO_BY_THE_CALENDAR + "}", INVALID, "below-0-by-the-calendar"),
        ("{" + PARTS_PAST_THE_DATES[0] + "}", INVALID, "a-part-past-the-dates"),
        ("{{1 second},{2 seconds}}", INVALID, "two-dimensions"),
        ("{" + ",".join(["1 second"] * 101) + "}", INVALID, "101-elements"),
        ("[0:1]={1 second,2 seconds}", INVALID, "starting-at-0"),
    ],
    "p_stale_after": interval_cases(">0", "100 years"),
    "p_run_id": [(None, NULL, "null"), (987654321, INVALID, "unknown")],
    "p_items": [
        (None, NULL, "null"),
        ('{"recipient": "+1"}', INVALID, "an-object"),
        ('[{"recipient": "+1"}, {"recipient": ""}]', INVALID, "a-bad-item"),
    ],
    "p_status": [(None, NULL, "null"), ("done", INVALID, "unknown"), ("Running", INVALID, "case")],
    "p_limit": [(None, NULL, "null"), (0, INVALID, "zero"), (10001, INVALID, "10001")],
    "p_lease": interval_cases(">0", "1 day"),
    "p_message_id": NOT_NULL,
    "p_claim_token": NOT_NULL,
    "p_metrics": [
        (None, NULL, "null"),
        ("[]", INVALID, "array"),
        ('"x"', INVALID, "string"),
        ("null", INVALID, "json-null"),
    ],
    "p_error": NOT_NULL,
    "p_retry_after": interval_cases(">=0", "30 days", nullable=True),
    "p_delay": interval_cases(">=0", "30 days"),
    "p_older_than": interval_cases(">=0", "100 years", nullable=True),
}
# where a function's range of an argument differs from the others'
FUNCTION_CASES: dict[str, dict[str, list[tuple[Any, str, str]]]] = {
    "campaign_prune": {
        "p_older_than": interval_cases(">0", "100 years"),
        "p_limit": [(None, NULL, "null"), (0, INVALID, "zero"), (1000001, INVALID, "1000001")],
    },
}
MANY_CASES: list[tuple[dict[str, Any], str, str, str]] = [
    ({"p_message_ids": None}, "p_message_ids", NULL, "null-ids"),
    ({"p_claim_tokens": None}, "p_claim_tokens", NULL, "null-tokens"),
    ({"p_message_ids": "{1,NULL}"}, "p_message_ids", INVALID, "a-null-id"),
    ({"p_claim_tokens": "{1,NULL}"}, "p_claim_tokens", INVALID, "a-null-token"),
    ({"p_message_ids": "{{1},{2}}"}, "p_message_ids", INVALID, "two-dimensional-ids"),
    ({"p_claim_tokens": "{1}"}, "p_claim_tokens", INVALID, "fewer-tokens"),
    ({"p_claim_tokens": "{1,2,3}"}, "p_claim_tokens", INVALID, "more-tokens"),
    ({"p_metrics": "{}"}, "p_metrics", INVALID, "no-metrics"),
    ({"p_metrics": '{"{}","{}","{}"}'}, "p_metrics", INVALID, "more-metrics"),
    ({"p_metrics": '{"{}","[]"}'}, "p_metrics", INVALID, "an-array-metric"),
    ({"p_metrics": '{"{}",NULL}'}, "p_metrics", INVALID, "a-null-metric"),
]


def call(conn: Conn, function: str, arguments: dict[str, Any]) -> None:
    types = TYPES | {"p_metrics": "jsonb[]" if function == "campaign_complete_many" else "jsonb"}
    call_named(conn, function, arguments, types)


def setup(conn: Conn) -> dict[str, Any]:
    """A run with messages in every state; the held ones' ids and tokens. Before it, a
    run that ended with a message left pending, which a prune would delete."""
    ended = create(conn, "ended")
    enqueue_many(conn, ended, 1)
    assert set_status(conn, ended, "cancelled") == "running"
    run_id = create(conn, max_retries=1, retry_backoff=[timedelta(0)])
    [doomed_id] = enqueue_many(conn, run_id, 1)
    first = claim(conn, "unlucky", limit=1)[0]
    assert fail(conn, doomed_id, first.claim_token) is not None  # its retry is due now
    ids = [doomed_id, *enqueue_many(conn, run_id, 7)]
    held = claim(conn, "holder", limit=4)
    assert [c.message_id for c in held] == ids[:4]
    expired = claim(conn, "crashed", limit=2, lease=SHORT)
    sent = claim(conn, "done", limit=1)[0]
    assert complete(conn, sent.message_id, sent.claim_token)
    until_lease_ran_out(conn, expired[0].message_id)
    return {
        "run_id": run_id,
        "ids": ids,
        "held": [(c.message_id, c.claim_token) for c in held[1:]],
        "doomed": (held[0].message_id, held[0].claim_token),  # its last try
        "expired": [(c.message_id, c.claim_token) for c in expired],
        "sent": (sent.message_id, sent.claim_token),
    }


def bases(function: str, state: dict[str, Any]) -> list[dict[str, Any]]:
    """Valid arguments for `function`, one set per state a call could change."""
    run_id = state["run_id"]
    claims = [state["held"][0], state["doomed"], state["expired"][0], state["sent"]]
    each = [{"p_message_id": m, "p_claim_token": t} for m, t in claims]
    return {
        "campaign_create": [
            {
                "p_name": "n",
                "p_max_retries": 3,
                "p_retry_backoff": "{1 second}",
                "p_stale_after": LONG,
            }
        ],
        "campaign_set_status": [{"p_run_id": run_id, "p_status": "paused"}],
        "campaign_enqueue": [{"p_run_id": run_id, "p_items": '[{"recipient": "+1"}]'}],
        "campaign_enqueue_once": [
            {"p_run_id": run_id, "p_key": "k", "p_items": '[{"recipient": "+1"}]'}
        ],
        "campaign_claim": [
            {"p_worker": "w", "p_limit": 10, "p_lease": LONG, "p_run_id": run_id},
        ],
        "campaign_complete": [{**c, "p_metrics": "{}"} for c in each],
        "campaign_fail": [{**c, "p_error": "e", "p_retry_after": timedelta(0)} for c in each],
        "campaign_snooze": [{**c, "p_delay": timedelta(0)} for c in each],
        "campaign_extend": [{**c, "p_lease": LONG} for c in each],
        "campaign_release": each,
        "campaign_skip_stale": [{"p_older_than": timedelta(0)}],
        "campaign_due_in": [{"p_run_id": run_id}],
        "campaign_stats": [{"p_run_id": run_id}],
        "campaign_prune": [{"p_older_than": timedelta(microseconds=1), "p_limit": 10}],
    }[function]


def problem_with(
    conn: Conn, function: str, arguments: dict[str, Any], bad: str, sqlstate: str
) -> str | None:
    return bad_call_problem(
        lambda: call(conn, function, arguments), bad, sqlstate, lambda: snapshot(conn)
    )


NULL_RUN = {
    "campaign_claim",
    "campaign_due_in",
    "campaign_stats",
}  # where p_run_id NULL means every run
FUNCTIONS = [
    "campaign_create",
    "campaign_set_status",
    "campaign_enqueue",
    "campaign_enqueue_once",
    "campaign_claim",
    "campaign_complete",
    "campaign_fail",
    "campaign_snooze",
    "campaign_extend",
    "campaign_release",
    "campaign_skip_stale",
    "campaign_due_in",
    "campaign_stats",
    "campaign_prune",
]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_bad_arguments_raise_naming_them_and_change_nothing(conn: Conn, function: str) -> None:
    infinite_intervals = int(scalar(conn, "SHOW server_version_num")) >= 170000
    state = setup(conn)
    problems, checked = [], 0
    for base in bases(function, state):
        for argument in base:
            cases = FUNCTION_CASES.get(function, {}).get(argument, CASES[argument])
            for value, sqlstate, label in cases:
                if label.endswith("infinity") and not infinite_intervals:
                    continue  # 'infinity' is no interval before PostgreSQL 17
                if (argument, label) == ("p_run_id", "null") and function in NULL_RUN:
                    continue  # NULL: every run
                arguments = {**base, argument: value}
                problem = problem_with(conn, function, arguments, argument, sqlstate)
                checked += 1
                if problem:
                    where = ", ".join(f"{k}={str(v)[:12]!r}" for k, v in base.items())
                    problems.append(f"{argument} {label} ({where}): {problem}")
    assert checked >= 1
    assert problems == [], f"{function}: " + "; ".join(problems)
    assert_still_working(conn, state)


def test_bad_arrays_to_complete_many_raise_naming_them_and_change_nothing(conn: Conn) -> None:
    state = setup(conn)
    [(message_id, token), (other, other_token), *_] = state["held"]
    base = {
        "p_message_ids": f"{{{message_id},{other}}}",
        "p_claim_tokens": f"{{{token},{other_token}}}",
        "p_metrics": None,
    }
    problems = []
    for change, bad, sqlstate, label in MANY_CASES:
        problem = problem_with(conn, "campaign_complete_many", {**base, **change}, bad, sqlstate)
        if problem:
            problems.append(f"{label}: {problem}")
    assert problems == []
    assert_still_working(conn, state)


def assert_still_working(conn: Conn, state: dict[str, Any]) -> None:
    """The valid calls still do their work afterwards: the state was left as it was."""
    (doomed, doomed_token) = state["doomed"]
    result = fail(conn, doomed, doomed_token, "last")
    assert result is not None and result.status == "failed"
    (expired, expired_token) = state["expired"][0]
    assert extend(conn, expired, expired_token) is not None
    held = state["held"]
    assert complete_many(conn, [m for m, _ in held], [t for _, t in held]) == len(held)
    # the other expired message shares the extended lease (one token): only the pending one
    assert [c.message_id for c in claim(conn, limit=10)] == state["ids"][7:]


def test_the_edges_of_each_range_are_accepted(conn: Conn) -> None:
    run_id = create(
        conn,
        "x" * 1024,
        max_retries=100,
        retry_backoff=[timedelta(days=30)] * 99 + [timedelta(0)],
        stale_after=timedelta(days=36000),
    )
    assert create(conn, "é" * 512, max_retries=0, retry_backoff=[timedelta(0)])
    assert scalar(
        conn,
        "SELECT pgcoord.campaign_create(p_name => 'x', p_stale_after => '100 years')",
    )
    [message_id, other] = enqueue_many(conn, run_id, 2)
    assert enqueue_once(conn, run_id, "k" * 1024, []) == (0, False)
    assert enqueue_once(conn, run_id, "é" * 512, []) == (0, False)
    [claimed] = claim(conn, "w" * 1024, limit=1, lease=timedelta(days=1))
    assert extend(conn, message_id, claimed.claim_token, timedelta(microseconds=1)) is not None
    assert snooze(conn, message_id, claimed.claim_token, timedelta(days=30))
    assert len(claim(conn, "w", limit=10000, lease=timedelta(microseconds=1))) == 1
    until_lease_ran_out(conn, other)
    [again] = claim(conn, "é" * 512, limit=1)
    assert again.message_id == other
    result = fail(conn, other, again.claim_token, "", timedelta(days=30))
    assert result is not None and result.status == "pending"
    assert skip_stale(conn, timedelta(days=36000)) == 0
    assert skip_stale(conn, timedelta(0)) == 2
    assert release(conn, message_id, claimed.claim_token) is False
    assert set_status(conn, run_id, "finished") == "running"
    assert prune(conn, timedelta(days=36000), 1) == 0
    assert prune(conn, timedelta(microseconds=1), 1000000) == 2


@pytest.mark.parametrize("function", ["campaign_claim", "campaign_extend"])
def test_a_lease_that_would_end_before_the_clock_is_refused(conn: Conn, function: str) -> None:
    """On a day of 23 hours (the session's time zone springs forward), '1 day -23 hours
    -30 minutes' compares as 30 minutes, yet would end 30 minutes before the clock: a
    claim free for another claimer at once. It is refused; '1 day -22 hours -30
    minutes' (30 minutes after the clock) is granted."""
    state = setup(conn)
    base = bases(function, state)[0]
    with daylight_saving_within_a_day(conn):
        backwards = "1 day -23 hours -30 minutes"
        assert scalar(conn, "SELECT %s::interval = '30 minutes'", backwards)
        problem = problem_with(conn, function, {**base, "p_lease": backwards}, "p_lease", INVALID)
        assert problem is None
        before = server_clock(conn)
        call(conn, function, {**base, "p_lease": "1 day -22 hours -30 minutes"})
        after = server_clock(conn)
    half_hour = timedelta(minutes=30)
    ends = [end for (end,) in conn.execute(CLAIMED_UNTIL).fetchall()]
    assert any(before + half_hour <= end <= after + half_hour for end in ends), ends


CLAIMED_UNTIL = (
    "SELECT claimed_until FROM pgcoord.campaign_message_status WHERE claimed_until IS NOT NULL"
)


THEN_CLAIM_CASES: list[tuple[str, Any, str, str]] = [
    ("p_message_ids", None, NULL, "null-ids"),
    ("p_claim_tokens", "{1}", INVALID, "fewer-tokens"),
    ("p_metrics", "{}", INVALID, "an-object"),
    ("p_metrics", '"x"', INVALID, "a-string"),
    ("p_metrics", "[{}]", INVALID, "fewer-metrics"),
    ("p_metrics", "[{}, []]", INVALID, "an-array-metric"),
    ("p_worker", "", INVALID, "empty-worker"),
    ("p_limit", 0, INVALID, "zero-limit"),
    ("p_lease", None, NULL, "null-lease"),
    ("p_run_id", 987654321, INVALID, "unknown-run"),
]


def test_bad_arguments_to_completed_then_claim_raise_naming_them_and_change_nothing(
    conn: Conn,
) -> None:
    """The worker's completion-then-claim: its own check of the metrics array, and the
    checks of the two functions it calls, with the completion undone by a bad claim."""
    state = setup(conn)
    [(message_id, token), (other, other_token), *_] = state["held"]
    base = {
        "p_message_ids": f"{{{message_id},{other}}}",
        "p_claim_tokens": f"{{{token},{other_token}}}",
        "p_metrics": "[{}, {}]",
        "p_worker": "w",
        "p_limit": 10,
        "p_lease": LONG,
        "p_run_id": state["run_id"],
    }
    problems = []
    for argument, value, sqlstate, label in THEN_CLAIM_CASES:
        arguments = {**base, argument: value}
        problem = problem_with(conn, "campaign_completed_then_claim", arguments, argument, sqlstate)
        if problem:
            problems.append(f"{label}: {problem}")
    assert problems == []
    assert_still_working(conn, state)
