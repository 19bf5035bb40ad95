"""The campaign's invariants (pgcoord.demo.checks): each holds on a run that keeps it
and fails on facts that break it; all hold after messages sent through the fake
provider with failures, 429s and retries. The killed worker's messages (facts.handover):
delivered again one attempt later to another worker, its late calls refused."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from pgcoord import CampaignMessage, FailForGood, RateLimited
from pgcoord.demo.checks import (
    campaign_checks,
    fleet_waited_after_429,
    late_completions_refused,
    messages_delivered_again,
    none_lost_or_stuck,
    parts_accepted_once,
    refused_failed_at_once,
    sent_or_failed,
    sent_parts_accepted,
    within_gateway_limit,
)
from pgcoord.demo.facts import Handover, LateCall, QueuedMessage, handover
from pgcoord.demo.ledger import Try
from pgcoord.demo.pipeline import make_handler
from pgcoord.demo.provider import Acceptance, FakeProvider, Ledger, Options, Second, Throttle

MAX_RETRIES = 2


def ledger(
    *keys: str, seconds: tuple[Second, ...] = (), limit: int = 5, refused: tuple[str, ...] = ()
) -> Ledger:
    accepted = tuple(
        Acceptance(key, f"acc-{i:06d}", "+1", f"digest of {key}", float(i))
        for i, key in enumerate(keys)
    )
    answers = {"gateway 200": len(keys), "gateway 404": len(refused)}
    return Ledger(limit, accepted, seconds, answers, len(keys), 10 * len(keys), refused=refused)


def sent(message_id: int, parts: int) -> QueuedMessage:
    return QueuedMessage(message_id, "+1", "sent", 1, None, {"parts": parts})


def failed(
    message_id: int, attempt: int = MAX_RETRIES + 1, error: str | None = "boom"
) -> QueuedMessage:
    return QueuedMessage(message_id, "+1", "failed", attempt, error, None)


def test_none_lost_or_stuck() -> None:
    done = [sent(1, 1), failed(2)]
    assert none_lost_or_stuck(done, 2).held
    assert not none_lost_or_stuck(done, 3).held  # one lost
    assert not none_lost_or_stuck([*done, sent(1, 1)], 3).held  # one twice
    stuck = QueuedMessage(3, "+1", "processing", 1, None, None)
    check = none_lost_or_stuck([*done, stuck], 3)
    assert not check.held and "(3, 'processing')" in check.detail


def test_sent_or_failed_after_every_try_with_the_error_kept() -> None:
    none = ledger()
    assert sent_or_failed([sent(1, 1), failed(2)], MAX_RETRIES, none).held
    assert not sent_or_failed([], MAX_RETRIES, none).held
    assert not sent_or_failed([sent(1, 1), failed(2, attempt=2)], MAX_RETRIES, none).held
    assert not sent_or_failed([failed(2, error=None)], MAX_RETRIES, none).held
    assert not sent_or_failed([failed(2, error="")], MAX_RETRIES, none).held
    skipped = QueuedMessage(3, "+1", "skipped", 1, None, None)
    assert not sent_or_failed([sent(1, 1), skipped], MAX_RETRIES, none).held
    # one the gateway refused fails at its first try: left to the next check
    assert sent_or_failed(
        [sent(1, 1), failed(2, attempt=1)], MAX_RETRIES, ledger(refused=("2:0",))
    ).held


REFUSAL = "the gateway (part 1 of 1) answered 404: not a WhatsApp number"


def test_refused_messages_failed_at_once_with_the_404_kept() -> None:
    once = ledger(refused=("2:0",))
    assert refused_failed_at_once([sent(1, 1), failed(2, 1, REFUSAL)], MAX_RETRIES, once).held
    assert not refused_failed_at_once([sent(1, 1)], MAX_RETRIES, ledger()).held  # none refused
    assert not refused_failed_at_once([sent(1, 1), sent(2, 1)], MAX_RETRIES, once).held
    assert not refused_failed_at_once([failed(2, 1, "gateway 503")], MAX_RETRIES, once).held
    assert not refused_failed_at_once([], MAX_RETRIES, once).held  # the message is missing
    # refused again after a lost claim: still no retry spent on it ...
    twice = ledger(refused=("2:0", "2:0"))
    assert refused_failed_at_once([failed(2, 2, REFUSAL)], MAX_RETRIES, twice).held
    # ... but refused on every try is what FailForGood is there to spare
    every = ledger(refused=("2:0",) * (MAX_RETRIES + 1))
    check = refused_failed_at_once([failed(2, MAX_RETRIES + 1, REFUSAL)], MAX_RETRIES, every)
    assert not check.held and "(2, 3)" in check.detail


def test_sent_parts_accepted() -> None:
    messages = [sent(1, 2), failed(2), failed(3)]
    assert sent_parts_accepted(messages, ledger("1:0", "1:1", "2:0")).held
    assert not sent_parts_accepted(messages, ledger("1:0", "2:0")).held  # 1:1 missing
    assert not sent_parts_accepted(messages, ledger("1:0", "1:1", "1:2")).held  # one extra
    assert not sent_parts_accepted(messages, ledger("1:0", "1:1", "2:1")).held  # not in order
    check = sent_parts_accepted(messages, ledger("1:0", "1:1", "4:0", "x"))
    assert not check.held and "['4:0', 'x']" in check.detail  # parts of no message
    no_metrics = QueuedMessage(1, "+1", "sent", 1, None, None)
    assert not sent_parts_accepted([no_metrics], ledger("1:0")).held
    assert not sent_parts_accepted([sent(1, 0)], ledger()).held  # nothing sent at all


def test_parts_accepted_once() -> None:
    once = ledger("1:0", "1:1")
    assert parts_accepted_once(once).held
    same_text = replace(once.accepted[1], key="1:2", digest=once.accepted[0].digest)
    check = parts_accepted_once(replace(once, accepted=(*once.accepted, same_text)))
    assert not check.held and "1:2" in check.detail
    assert not parts_accepted_once(ledger()).held


def test_within_gateway_limit_counts_every_window_of_a_second() -> None:
    calm = ledger(limit=5)
    calm = replace(calm, arrivals=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5))
    check = within_gateway_limit(calm)
    assert check.held and "the busiest had 5" in check.label
    # no second of the clock holds more than 4, the second from 0.6 s holds 7
    busy = replace(calm, arrivals=(0.1, 0.6, 0.7, 0.8, 0.9, 1.1, 1.2, 1.3, 2.5))
    check = within_gateway_limit(busy)
    assert not check.held and "7 requests in the second from 0.600 s" in check.detail


def test_fleet_waited_after_429() -> None:
    throttle = Throttle(1.0, 1, "campaign-1")
    paused = replace(ledger(), throttles=(throttle,), arrivals=(0.9, 1.2, 1.45, 2.0, 2.1))
    assert fleet_waited_after_429(paused, {}).held  # 1.2 and 1.45: granted before the pause
    sent_anyway = replace(paused, arrivals=(0.9, 1.2, 1.7, 2.1))
    check = fleet_waited_after_429(sent_anyway, {})
    assert not check.held and "(1.0, 'campaign-1', 1)" in check.detail
    assert not fleet_waited_after_429(ledger(), {}).held  # no 429 at all: nothing shown


def test_fleet_waited_after_429_leaves_out_a_429_answered_to_a_stopped_worker() -> None:
    # campaign-2 heard its 429 at 1.0 (paused until 2.0); campaign-1, stopped from 1.1 to
    # 4.0, could not act on its 429 at 1.3: the request at 2.1 broke no pause
    throttles = (Throttle(1.0, 1, "campaign-2"), Throttle(1.3, 1, "campaign-1"))
    both = replace(ledger(), throttles=throttles, arrivals=(1.0, 1.3, 2.1))
    assert not fleet_waited_after_429(both, {}).held
    check = fleet_waited_after_429(both, {"campaign-1": [(1.1, 4.0)], "campaign-2": []})
    assert check.held and "1 more answered to a stopped or killed worker" in check.label
    # stopped more than PAUSE_GRACE after its 429, a worker had the time to pause
    late = replace(ledger(), throttles=throttles[:1], arrivals=(1.0, 1.7))
    assert not fleet_waited_after_429(late, {"campaign-2": [(1.6, math.inf)]}).held
    # every 429 unheard (campaign-2 killed just before its answer): nothing shown
    deaf = {"campaign-1": [(1.1, 4.0)], "campaign-2": [(0.8, math.inf)]}
    assert not fleet_waited_after_429(both, deaf).held


def run_campaign(url: str, messages: list[CampaignMessage]) -> list[QueuedMessage]:
    """Each message tried until it is sent or has failed MAX_RETRIES + 1 times; a 429
    spends no try. What a campaign worker does, without the queue."""

    async def main() -> list[QueuedMessage]:
        async with httpx.AsyncClient() as http:
            handler = make_handler(url, http)
            return list(await asyncio.gather(*(attempts(handler, m) for m in messages)))

    async def attempts(handler: Any, m: CampaignMessage) -> QueuedMessage:
        attempt, error = 1, None
        for _ in range(100):
            try:
                metrics = await handler(replace(m, attempt=attempt))
            except RateLimited:
                continue
            except FailForGood as exc:  # as the worker does: failed at once, reason kept
                return QueuedMessage(m.message_id, m.recipient, "failed", attempt, str(exc), None)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                if attempt == MAX_RETRIES + 1:
                    return QueuedMessage(m.message_id, m.recipient, "failed", attempt, error, None)
                attempt += 1
            else:
                return QueuedMessage(m.message_id, m.recipient, "sent", attempt, error, metrics)
        raise AssertionError(f"message {m.message_id} was throttled 100 times")

    return asyncio.run(main())


@pytest.mark.timeout(60)
def test_every_check_holds_after_sending_through_the_fake_provider() -> None:
    options = Options(
        seed=4,
        latency=(0.0, 0.02),
        errors=0.15,
        throttled=0.1,
        retry_after=0,
        gateway_limit=10_000,
        short=0.1,
        long=0.2,
        unknown="+49150000001",  # messages 1 and 10 to 19
    )
    messages = [
        CampaignMessage(i, 1, f"+4915{i:07d}", {"offer": "spring"}, 1, i, datetime.now(UTC))
        for i in range(1, 41)
    ]
    with FakeProvider(options) as fake:
        queued = run_campaign(fake.url, messages)
        facts = fake.ledger()
    statuses = {q.status for q in queued}
    assert statuses == {"sent", "failed"}  # the seed gives both
    assert any(a.replays for a in facts.accepted)  # and retries that re-sent parts
    checks = campaign_checks(queued, len(messages), MAX_RETRIES, facts, {})
    assert [c.label for c in checks if not c.held] == []


# The killed worker's messages -----------------------------------------------------------

VICTIM = "worker-4"
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def tried(message_id: int, token: int, attempt: int, worker: str) -> Try:
    return Try(message_id, token, attempt, worker, T0 + timedelta(seconds=token))


def sent_by(message_id: int, attempt: int, worker: str) -> QueuedMessage:
    return QueuedMessage(message_id, "+1", "sent", attempt, None, {"parts": 1, "worker": worker})


def calm_handover() -> Handover:
    """worker-4 held messages 1 and 2 (attempt 1) and 3 (attempt 2) when it was killed,
    sending 1 and 3 with tokens 10 and 11. Message 1 came back to worker-1 as attempt 2
    and was sent; 2 to worker-2, snoozed once (429: the same attempt), then sent; 3 to
    worker-1 as attempt 3, failed, and failed for good at attempt 4."""
    tries = [
        tried(1, 10, 1, VICTIM),
        tried(3, 11, 2, VICTIM),
        tried(5, 12, 1, "worker-1"),  # a message the victim never held
        tried(1, 20, 2, "worker-1"),
        tried(2, 21, 2, "worker-2"),
        tried(3, 21, 3, "worker-1"),
        tried(2, 22, 2, "worker-3"),  # after a snooze: the same attempt again
        tried(3, 23, 4, "worker-2"),
    ]
    late = [LateCall(1, 10, False, None), LateCall(3, 11, False, None)]
    queued = [
        sent_by(1, 2, "worker-1"),
        sent_by(2, 2, "worker-3"),
        failed(3, attempt=4),
        sent_by(5, 1, "worker-1"),
    ]
    return handover(VICTIM, {1: 1, 2: 1, 3: 2}, tries, late, queued)


def test_handover_finds_the_next_attempt_of_each_held_message() -> None:
    h = calm_handover()
    assert {m: (t.attempt, t.worker, t.claim_token) for m, t in h.again.items()} == {
        1: (2, "worker-1", 20),
        2: (2, "worker-2", 21),  # the first try of attempt 2, not the one after the snooze
        3: (3, "worker-1", 21),
    }
    assert set(h.after) == {1, 2, 3}


def test_messages_delivered_again() -> None:
    h = calm_handover()
    check = messages_delivered_again(h, MAX_RETRIES)
    assert check.held, check.detail
    assert "worker-4's 3 messages came again to worker-1, worker-2 as attempt 2/3" in check.label
    # one never came back
    lost = replace(h, again={m: t for m, t in h.again.items() if m != 2})
    assert "(2, 1, None, 'sent')" in messages_delivered_again(lost, MAX_RETRIES).detail
    # one came back to the dead worker itself (its name reused)
    again = dict(h.again)
    again[1] = replace(again[1], worker=VICTIM)
    assert not messages_delivered_again(replace(h, again=again), MAX_RETRIES).held
    # one ended sent by the dead worker, or still processing
    after = dict(h.after)
    after[1] = sent_by(1, 2, VICTIM)
    assert not messages_delivered_again(replace(h, after=after), MAX_RETRIES).held
    after[1] = QueuedMessage(1, "+1", "processing", 2, None, None)
    assert not messages_delivered_again(replace(h, after=after), MAX_RETRIES).held
    # it held none
    assert not messages_delivered_again(replace(h, held={}), MAX_RETRIES).held


def test_a_held_message_on_its_last_try_fails_with_lease_expired() -> None:
    h = calm_handover()
    last = MAX_RETRIES + 1
    expired = QueuedMessage(4, "+1", "failed", last, "lease expired", None)
    ended = replace(h, held={**h.held, 4: last}, after={**h.after, 4: expired})
    assert messages_delivered_again(ended, MAX_RETRIES).held
    other = replace(expired, error="boom")
    assert not messages_delivered_again(
        replace(ended, after={**h.after, 4: other}), MAX_RETRIES
    ).held


def test_late_completions_refused() -> None:
    h = calm_handover()
    check = late_completions_refused(h)
    assert check.held, check.detail
    assert "returned false (2 messages), campaign_extend NULL" in check.label
    taken = replace(h, late=(LateCall(1, 10, True, None), h.late[1]))
    assert "(1, True, None)" in late_completions_refused(taken).detail
    extended = replace(h, late=(LateCall(1, 10, False, T0), h.late[1]))
    assert not late_completions_refused(extended).held
    # the message's metrics name the dead worker: its completion landed after all
    after = {**h.after, 1: sent_by(1, 2, VICTIM)}
    assert "changed: [1]" in late_completions_refused(replace(h, after=after)).detail
    assert not late_completions_refused(replace(h, late=())).held
