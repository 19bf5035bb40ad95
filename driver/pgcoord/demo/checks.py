"""The invariants the demo checks, one function each: every function judges some facts
(see `facts`) and returns a `Check`, the claim as the demo prints it and whether it held.
The scenes print them; a campaign scene or a fault harness can call the same functions
on facts of its own."""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from pgcoord import CampaignEnqueued, Lock, LockStatus

from .facts import (
    Chunk,
    Fault,
    Handover,
    LockOutcome,
    Outcome,
    QueuedMessage,
    Takeover,
    Webhook,
    Zombie,
)
from .output import plural
from .parts import message_of, part_key

if TYPE_CHECKING:
    from .provider import Ledger, Throttle
    from .workers import WorkerProcess


@dataclass(frozen=True, slots=True)
class Check:
    """One claim the demo makes about what happened, and whether it held; `detail` says
    what was found instead (printed when it did not hold)."""

    label: str
    held: bool
    detail: str = ""


def _brief(status: LockStatus) -> str:
    expired = ", expired" if status.expired else ""
    return f"{status.key} held by {status.owner}, token {status.token}{expired}"


def _briefs(statuses: Sequence[LockStatus]) -> str:
    return "; ".join(map(_brief, statuses)) or "none"


# The lock race ---------------------------------------------------------------------------


def race_checks(webhooks: Sequence[Webhook], replies: Sequence[str]) -> list[Check]:
    """The claims about the burst: one winner, everyone else told that winner, and the
    winner's fenced reply the only reply."""
    return [
        one_winner(webhooks),
        others_told_the_holder(webhooks),
        only_the_winners_reply(webhooks, replies),
    ]


def _winner(webhooks: Sequence[Webhook]) -> Webhook | None:
    winners = [w for w in webhooks if w.lock.acquired]
    return winners[0] if len(winners) == 1 else None


def one_winner(webhooks: Sequence[Webhook]) -> Check:
    winners = [w for w in webhooks if w.lock.acquired]
    return Check(
        f"exactly one of {len(webhooks)} webhooks acquired the lock",
        len(winners) == 1,
        f"{len(winners)} acquired: {', '.join(w.name for w in winners[:5]) or 'none'}",
    )


def others_told_the_holder(webhooks: Sequence[Webhook]) -> Check:
    winner = _winner(webhooks)
    if winner is None:
        return Check("the others were told one and the same holder", False, "no single holder")
    others = [w for w in webhooks if not w.lock.acquired]
    wrong = [
        w
        for w in others
        if (w.lock.owner, w.lock.token) != (winner.name, winner.lock.token) or w.lock.took_over
    ]
    return Check(
        f"the {len(others)} others were told the holder: {winner.name}, token {winner.lock.token}",
        not wrong,
        f"{len(wrong)} were told something else, e.g. {wrong[0].lock}" if wrong else "",
    )


def only_the_winners_reply(webhooks: Sequence[Webhook], replies: Sequence[str]) -> Check:
    winner = _winner(webhooks)
    return Check(
        "the winner's fenced reply was written, and it is the only reply",
        winner is not None and winner.replied and list(replies) == [winner.name],
        f"replies written by: {', '.join(replies) or 'nobody'}",
    )


# Releases, leases and fencing ------------------------------------------------------------


def non_owner_release_refused(holder: str, refused: bool, still_held: bool) -> Check:
    return Check(
        f"a non-owner's release returns false and {holder} still holds the lock",
        refused and still_held,
        f"release refused: {refused}, lock still current: {still_held}",
    )


def owner_release_frees(owner: str, released: bool, left: Sequence[LockStatus]) -> Check:
    """`left`: the key's rows in lock_status after the release."""
    return Check(
        f"{owner}'s own release returns true and the key is free",
        released and not left,
        f"released: {released}, left: {_briefs(left)}",
    )


def live_lease_refuses(holder: str, held: Lock, asker: str, answer: Lock) -> Check:
    """`asker` asked while `holder`'s lease (`held`) was live, and was answered `answer`."""
    return Check(
        f"{asker}, asking at once, is refused: {holder}'s lease is still live",
        held.acquired
        and not answer.acquired
        and (answer.owner, answer.token) == (holder, held.token),
        f"{holder}: {held}; {asker} was answered {answer}",
    )


def took_over_with_larger_token(old: Lock, owner: str, new: Lock) -> Check:
    return Check(
        f"{owner} took over with a larger fencing token ({new.token} > {old.token})",
        new.acquired
        and new.took_over
        and new.owner == owner
        and (new.token or 0) > (old.token or 0),
        f"{owner} was answered {new}",
    )


def stale_holder_refused(
    holder: str, late_release: bool, late_extend: datetime | None, late_current: bool
) -> Check:
    """The stale holder's late release, heartbeat (lock_extend) and is_current."""
    return Check(
        f"{holder}'s late release: false; heartbeat: NULL; old token: not current",
        late_release is False and late_extend is None and late_current is False,
    )


def fenced_write_only_current(
    stale: tuple[str, Lock], fresh: tuple[str, Lock], rows: tuple[int, int], replies: Sequence[str]
) -> Check:
    """A fenced write by the stale holder with its token and one by the fresh holder with
    its token (`stale`, `fresh`: owner and lock), the `rows` each wrote, and the writers
    of the key's replies afterwards."""
    (stale_owner, stale_lock), (fresh_owner, fresh_lock) = stale, fresh
    return Check(
        f"fenced write with token {stale_lock.token} changed nothing; "
        f"with token {fresh_lock.token} it wrote the reply",
        rows == (0, 1) and list(replies) == [fresh_owner],
        f"rows written by {stale_owner}: {rows[0]}, by {fresh_owner}: {rows[1]}; "
        f"replies: {list(replies)}",
    )


def one_live_row_after_expiry(
    rows: Sequence[LockStatus], old: tuple[str, Lock], new: tuple[str, Lock]
) -> Check:
    """`rows`: the key's lock_status rows after `new` took over from `old` (owner and
    lock each)."""
    (old_owner, old_lock), (new_owner, new_lock) = old, new
    granted_after = (
        bool(rows)
        and old_lock.expires_at is not None
        and rows[0].acquired_at >= old_lock.expires_at
    )
    return Check(
        f"one row: {new_owner}'s live lease, granted only after {old_owner}'s ran out",
        len(rows) == 1
        and (rows[0].owner, rows[0].token, rows[0].expired) == (new_owner, new_lock.token, False)
        and granted_after,
        f"rows: {_briefs(rows)}; {old_owner}'s lease ended at {old_lock.expires_at:%H:%M:%S.%f}",
    )


def cleaned_up(what: str, error: Exception | None) -> Check:
    return Check(f"clean up {what}", error is None, str(error or ""))


# The storm -------------------------------------------------------------------------------


def storm_checks(outcome: Outcome, takeover: Takeover) -> list[Check]:
    """The claims about the storm, in the order the demo prints them: the takeover first,
    then what the ledger shows."""
    return [
        batch_delivered_again(takeover),
        late_calls_refused(takeover),
        stored_once(outcome),
        answered_once(outcome),
        bursts_in_one_reply(outcome),
        replies_fenced(outcome),
        nothing_stuck(outcome),
    ]


def own_scratch_database(scene: str, error: Exception | None) -> Check:
    return Check(
        f"{scene} gets a scratch database of its own",
        error is None,
        f"CREATE DATABASE was refused ({error}); without DATABASE_URL the demo "
        "runs on an embedded server",
    )


def batch_delivered_again(t: Takeover) -> Check:
    """The killed worker's batch came again to another worker, one attempt later, with
    the same messages, and that delivery (or a later one) answered them."""
    claim, again = t.claim, t.again
    if claim is None:
        return Check(f"{t.victim} is SIGKILLed while it holds a batch", False, "it never held one")
    batch = f"{plural(len(claim.message_ids), 'message')} of {claim.conversation_key}"
    return Check(
        f"{t.victim}'s batch ({batch}) came again to "
        f"{again.worker if again else 'another worker'} as attempt {claim.attempt + 1} "
        "and was answered there",
        again is not None
        and again.worker != claim.worker
        and again.attempt == claim.attempt + 1
        and again.message_ids == claim.message_ids
        and t.reply is not None
        and t.reply.message_ids == claim.message_ids
        and t.reply.claim_token >= again.claim_token,
        f"next delivery: {again and (again.worker, again.attempt, again.message_ids)}; "
        f"its reply: {t.reply and (t.reply.worker, t.reply.message_ids)}",
    )


def late_calls_refused(t: Takeover) -> Check:
    """The killed worker's late buffer_complete, buffer_extend and fenced reply were all
    refused by its token."""
    claim = t.claim
    if claim is None:
        return Check(f"{t.victim}'s late completion is refused by its token", False, "no claim")
    return Check(
        f"{t.victim}'s late buffer_complete (token {claim.claim_token}) returned false, "
        "its heartbeat NULL, and its fenced reply rolled back",
        t.late_complete is False
        and t.late_extend is None
        and t.late_reply_refused
        and t.stale_replies == 0,
        f"complete -> {t.late_complete}, extend -> {t.late_extend}, "
        f"reply refused: {t.late_reply_refused}, replies with the token: {t.stale_replies}",
    )


def stored_once(o: Outcome) -> Check:
    lost = (
        f" ({o.lost_answers} delivered again after a fault cut their answer)"
        if o.lost_answers
        else ""
    )
    return Check(
        f"every message stored once: {o.stored} messages from {o.deliveries} deliveries, "
        f"all {o.repeats} provider retries answered duplicate = true{lost}",
        not o.misdelivered and o.stored == o.messages,
        f"{o.stored} rows for {o.messages} provider ids; {len(o.misdelivered)} ids answered "
        f"wrongly, e.g. {', '.join(o.misdelivered[:3]) or '-'}",
    )


def answered_once(o: Outcome) -> Check:
    return Check(
        f"every message answered exactly once by the fenced ledger "
        f"({o.stored} messages in {o.replies} replies)",
        not (o.unanswered or o.answered_twice or o.strangers) and o.stored > 0,
        f"unanswered: {len(o.unanswered)}, in two replies or more: {len(o.answered_twice)}, "
        f"not of the storm: {len(o.strangers)}",
    )


def bursts_in_one_reply(o: Outcome) -> Check:
    unjudged = o.bursts - o.judged
    aside = f"; {unjudged} slowed down in sending, not judged" if unjudged else ""
    return Check(
        f"each of the {o.judged} bursts answered by one reply{aside}",
        not o.split and o.judged > 0,
        f"{len(o.split)} bursts split over several replies, e.g. burst {o.split[:3]}",
    )


def replies_fenced(o: Outcome) -> Check:
    return Check(
        "every reply carries the last claim of its messages; claims without a reply "
        f"({o.superseded + len(o.unrecovered)}) were all delivered again",
        not o.not_final and not o.unrecovered,
        f"replies of stale claims: {list(o.not_final[:5])}; "
        f"claims never delivered again: {list(o.unrecovered[:5])}",
    )


def nothing_stuck(o: Outcome) -> Check:
    dead = sum(s.dead for s in o.buffered)
    return Check(
        "nothing stuck: buffer_status is empty, no dead batch, every message done",
        not o.buffered and not o.not_done,
        f"{len(o.buffered)} buffer_status rows ({dead} dead), {len(o.not_done)} messages not done",
    )


def workers_stopped_cleanly(workers: Sequence[WorkerProcess], codes: Mapping[str, int]) -> Check:
    """`codes`: each worker's exit status after SIGTERM (WorkerProcess.stop)."""
    stopped = [w for w in workers if codes[w.name] != 0]
    return Check(
        f"the {len(workers)} workers stopped cleanly on SIGTERM",
        not stopped,
        "; ".join(f"{w.name} exit {codes[w.name]}: {w.log_tail(5)}" for w in stopped),
    )


# The campaign ----------------------------------------------------------------------------


def campaign_checks(
    messages: Sequence[QueuedMessage],
    enqueued: int,
    max_retries: int,
    ledger: Ledger,
    deaf: Mapping[str, Sequence[tuple[float, float]]],
) -> list[Check]:
    """The claims about a campaign sent through the fake provider: `messages` as the
    queue holds them after the run, `enqueued` how many were enqueued, `max_retries`
    the run's, `ledger` what the provider did, `deaf` when each worker could not act on
    an answer (see fleet_waited_after_429)."""
    return [
        none_lost_or_stuck(messages, enqueued),
        sent_or_failed(messages, max_retries, ledger),
        refused_failed_at_once(messages, max_retries, ledger),
        sent_parts_accepted(messages, ledger),
        parts_accepted_once(ledger),
        within_gateway_limit(ledger),
        fleet_waited_after_429(ledger, deaf),
    ]


def enqueued_once(key: str, first: CampaignEnqueued, again: CampaignEnqueued) -> Check:
    """The enqueue made again with its key (a producer's retry after a lost answer)
    enqueued nothing more."""
    return Check(
        f"enqueued once: the same call again with its key {key!r} (a producer's retry "
        f"after a lost answer) added nothing to the {first.enqueued:,} messages",
        not first.duplicate and again.duplicate and again.enqueued == first.enqueued,
        f"first call {first}, the call again {again}",
    )


def enqueued_once_under_faults(chunks: Sequence[Chunk], messages: Sequence[QueuedMessage]) -> Check:
    """The torture's producer enqueued each chunk once, however often a fault cut a
    call's answer: each chunk answered with its whole size, found enqueued when its lost
    answer came after the commit (at least one did) and new when no call of it failed;
    the queue holds each recipient once and as many messages as the chunks."""
    wrong = [
        c
        for c in chunks
        if c.answer.enqueued != c.size
        or (c.cut and not c.answer.duplicate)
        or (not c.failed and c.answer.duplicate)
    ]
    doubled = [r for r, n in Counter(m.recipient for m in messages).items() if n > 1]
    size = sum(c.size for c in chunks)
    again = sum(c.failed for c in chunks)
    cut = sum(c.cut for c in chunks)
    return Check(
        f"enqueued once under faults: {plural(len(chunks), 'chunk')} under their keys, "
        f"{plural(again, 'call')} made again after a lost answer ({cut} lost after the "
        f"commit, found enqueued); the queue holds each of the {size:,} messages once",
        bool(chunks) and cut > 0 and not wrong and not doubled and len(messages) == size,
        f"answered wrongly: {[(c.key, c.answer, c.failed, c.cut) for c in wrong[:5]]}; "
        f"recipients twice: {doubled[:5]}; {len(messages)} messages for {size} enqueued; "
        f"{cut} answers lost after the commit",
    )


def none_lost_or_stuck(messages: Sequence[QueuedMessage], enqueued: int) -> Check:
    stuck = [m for m in messages if m.status in ("pending", "processing")]
    return Check(
        f"none lost or stuck: the {enqueued:,} messages enqueued are all there, none "
        "pending or processing",
        len({m.message_id for m in messages}) == len(messages) == enqueued and not stuck,
        f"{len(messages)} messages for {enqueued} enqueued; stuck: "
        f"{[(m.message_id, m.status) for m in stuck[:5]]}",
    )


def refused(ledger: Ledger) -> set[int]:
    """The messages the gateway refused (a recipient it does not know)."""
    return {i for key in ledger.refused if (i := message_of(key)) is not None}


def sent_or_failed(messages: Sequence[QueuedMessage], max_retries: int, ledger: Ledger) -> Check:
    """Each message was sent, or failed for good after all its tries, its error kept, or
    failed at once when the gateway refused it (the next check)."""
    tries = max_retries + 1
    sent = sum(m.status == "sent" for m in messages)
    unknown = refused(ledger)
    failed = [m for m in messages if m.status == "failed" and m.message_id not in unknown]
    early = [m for m in failed if m.attempt != tries or not m.error]
    other = [m for m in messages if m.status not in ("sent", "failed")]
    return Check(
        f"every message sent ({sent:,}) or failed after its {tries} tries with its error "
        f"kept ({len(failed):,}), but for those the gateway refused",
        bool(messages) and not early and not other,
        f"failed at another try or without an error: "
        f"{[(m.message_id, m.attempt, m.error) for m in early[:3]]}; neither sent nor "
        f"failed: {[(m.message_id, m.status) for m in other[:5]]}",
    )


def refused_failed_at_once(
    messages: Sequence[QueuedMessage], max_retries: int, ledger: Ledger
) -> Check:
    """Each message whose recipient the gateway does not know failed for good with the
    404 kept, without spending its retries (and a generation each) on what no retry
    mends: refused fewer times than its run's tries (once, or again when the worker that
    heard the 404 lost its claim before it could say so)."""
    unknown = refused(ledger)
    ended = {m.message_id: m for m in messages if m.message_id in unknown}
    wrong = [
        (i, m.status, m.error) if m else (i, None, None)
        for i in sorted(unknown)
        if (m := ended.get(i)) is None or m.status != "failed" or " 404: " not in (m.error or "")
    ]
    refusals = Counter(message_of(key) for key in ledger.refused)
    retried = [(i, n) for i, n in refusals.items() if n > max_retries]
    return Check(
        f"{plural(len(unknown), 'message')} to numbers the gateway does not know failed for "
        f"good with the 404 kept, without spending their retries ({len(ledger.refused)} "
        "refusals in all)",
        bool(unknown) and not wrong and not retried,
        f"not failed with the 404 (id, status, error): {wrong[:3]}; refused on every try "
        f"(id, refusals): {retried[:3]}",
    )


def sent_parts_accepted(messages: Sequence[QueuedMessage], ledger: Ledger) -> Check:
    """The gateway took every part of each sent message (as many as its metrics say),
    of any other message at most the parts before the one that failed, and nothing
    else."""
    keys: defaultdict[int | None, set[str]] = defaultdict(set)
    for acceptance in ledger.accepted:
        keys[message_of(acceptance.key)].add(acceptance.key)
    wrong = []
    unsent = 0  # parts taken of messages not sent in the end
    for m in messages:
        taken = keys.pop(m.message_id, set())
        parts = (m.metrics or {}).get("parts") if m.status == "sent" else len(taken)
        unsent += 0 if m.status == "sent" else len(taken)
        if not isinstance(parts, int) or taken != {part_key(m.message_id, i) for i in range(parts)}:
            wrong.append((m.message_id, m.status, parts, sorted(taken)))
    strangers = sorted(key for others in keys.values() for key in others)
    return Check(
        f"the gateway took all the parts of every sent message and no others "
        f"({len(ledger.accepted):,} parts, {unsent} of them of messages that failed)",
        not wrong and not strangers and bool(ledger.accepted),
        f"messages whose parts differ (id, status, parts, taken): {wrong[:3]}; "
        f"parts of no message: {strangers[:5]}",
    )


def parts_accepted_once(ledger: Ledger) -> Check:
    """No recipient given the same text under two keys (a part sent again under a new
    key): the gateway keeps one acceptance per key, and answers a key's repeat with it.
    A campaign writes one message per recipient, and the fake model never repeats a part
    within a message."""
    texts = Counter(a.digest for a in ledger.accepted)
    again = [a.key for a in ledger.accepted if texts[a.digest] > 1]
    replays = sum(a.replays for a in ledger.accepted)
    return Check(
        f"each of the {len(ledger.accepted):,} parts accepted once by the gateway; "
        f"{plural(replays, 'part')} sent again answered with the first acceptance",
        not again and bool(ledger.accepted),
        f"keys given the same text as another: {again[:5]}",
    )


def within_gateway_limit(ledger: Ledger) -> Check:
    """The gateway never had more requests than its limit in any one second: in every
    window of one second, wherever it begins, not only in each second of its clock."""
    busiest, at = _busiest_second(ledger.arrivals)
    return Check(
        f"at most {ledger.gateway_limit} gateway requests in any one second "
        f"(the busiest had {busiest})",
        busiest <= ledger.gateway_limit,
        f"{busiest} requests in the second from {at:.3f} s",
    )


def _busiest_second(arrivals: Sequence[float]) -> tuple[int, float]:
    """The most requests in a window of one second, and where it begins."""
    busiest, at, first = 0, 0.0, 0
    for last, time in enumerate(arrivals):
        while time - arrivals[first] >= 1.0:
            first += 1
        if last - first + 1 > busiest:
            busiest, at = last - first + 1, arrivals[first]
    return busiest, at


# how long the answer of a 429 may take to reach its worker and the pause to be made,
# while requests granted before it still arrive
PAUSE_GRACE = 0.5


def fleet_waited_after_429(
    ledger: Ledger, deaf: Mapping[str, Sequence[tuple[float, float]]]
) -> Check:
    """After each gateway 429, no gateway request from any worker until its Retry-After
    had passed (PAUSE_GRACE after the answer excepted, for requests granted before the
    pause): the fleet's budget was paused, not only the message snoozed.

    A 429 answered to a worker that could not act on it pauses nobody, and is left out:
    `deaf` holds, by worker name (the User-Agent of its requests), the spans of the
    provider's clock from each SIGSTOP to its SIGCONT and from a SIGKILL on; a 429
    answered in one, or PAUSE_GRACE before it began, went unheard."""

    def heard(throttle: Throttle) -> bool:
        spans = deaf.get(throttle.client, ())
        return not any(a - PAUSE_GRACE <= throttle.answered < b for a, b in spans)

    throttles = [t for t in ledger.throttles if heard(t)]
    unheard = len(ledger.throttles) - len(throttles)
    breaches = []
    for throttle in throttles:
        start, end = throttle.answered + PAUSE_GRACE, throttle.answered + throttle.after
        inside = bisect.bisect_left(ledger.arrivals, end) - bisect.bisect_left(
            ledger.arrivals, start
        )
        if inside > 0:
            breaches.append((throttle.answered, throttle.client, inside))
    besides = f" ({unheard} more answered to a stopped or killed worker)" if unheard else ""
    return Check(
        f"after each of the gateway's {plural(len(throttles), '429')}{besides}, no worker "
        f"sent until its Retry-After had passed (the fleet's budget paused)",
        bool(throttles) and not breaches,
        f"requests inside the pause (429 answered at, to, requests): {breaches[:3]}"
        if breaches
        else "the gateway answered no 429 to a worker that could act on it",
    )


def messages_delivered_again(h: Handover, max_retries: int) -> Check:
    """Each message the killed worker held came again to another worker, one attempt
    later, and ended sent by that worker or failed after its tries; one whose lost lease
    was its last try failed with 'lease expired'."""
    if not h.held:
        return Check(f"{h.victim} is SIGKILLed while it holds messages", False, "it held none")
    wrong = []
    for message_id, attempt in sorted(h.held.items()):
        again, final = h.again.get(message_id), h.after.get(message_id)
        sender = (final.metrics or {}).get("worker") if final else None
        if attempt > max_retries:
            ok = final is not None and (final.status, final.error) == ("failed", "lease expired")
        else:
            ok = (
                again is not None
                and again.worker != h.victim
                and final is not None
                and (final.status == "failed" or (final.status == "sent" and sender != h.victim))
            )
        if not ok:
            wrong.append((message_id, attempt, again and again.worker, final and final.status))
    workers = ", ".join(sorted({t.worker for t in h.again.values()})) or "other workers"
    attempts = "/".join(str(a) for a in sorted({a + 1 for a in h.held.values()}))
    return Check(
        f"{h.victim}'s {plural(len(h.held), 'message')} came again to {workers} as attempt "
        f"{attempts}, each then sent there or failed after its tries",
        not wrong,
        f"(message, attempt held, next try by, status): {wrong[:5]}",
    )


def late_completions_refused(h: Handover) -> Check:
    """The killed worker's late campaign_complete and campaign_extend with its stale
    tokens were refused, and left the messages as the other workers had left them."""
    if not h.late:
        return Check(
            f"{h.victim}'s late campaign_complete is refused by its token", False, "no token"
        )
    accepted = [c for c in h.late if c.completed or c.extended is not None]
    touched = [
        m
        for c in h.late
        if (m := h.after.get(c.message_id)) is not None
        and (m.metrics or {}).get("worker") == h.victim
    ]
    return Check(
        f"{h.victim}'s late campaign_complete with its stale tokens returned false "
        f"({plural(len(h.late), 'message')}), campaign_extend NULL; the messages stayed as "
        "the other workers left them",
        not accepted and not touched,
        f"taken: {[(c.message_id, c.completed, c.extended) for c in accepted[:3]]}; "
        f"changed: {[m.message_id for m in touched[:3]]}",
    )


# The torture -----------------------------------------------------------------------------


def faults_injected(faults: Sequence[Fault], kinds: Sequence[str]) -> Check:
    """Every kind of fault of the run (`kinds`) struck at least once."""
    counts = Counter(f.kind for f in faults)
    missing = [kind for kind in kinds if not counts[kind]]
    return Check(
        "every fault injected: " + ", ".join(f"{kind} {counts[kind]}x" for kind in kinds),
        not missing,
        f"never injected: {', '.join(missing)}",
    )


def work_flowed_again(faults: Sequence[Fault], bound: float) -> Check:
    """After every fault, work flowed again within `bound` seconds of the leases it
    waited for."""
    stuck = [f for f in faults if f.recovery is None]
    slowest = max((f.recovery for f in faults if f.recovery is not None), default=0.0)
    return Check(
        f"work flowed again after every fault, within {bound:g} s of the leases it "
        f"waited for (the slowest recovery took {slowest:.2f} s)",
        bool(faults) and not stuck,
        "; ".join(
            f"{f.kind} at {f.at:.1f} s: "
            + ", ".join(name for name, after in f.flows.items() if after is None)
            for f in stuck
        )
        or "no fault",
    )


ZOMBIES = {"lock": "lock holder", "buffer": "buffer worker", "campaign": "campaign worker"}


def zombie_writes_refused(zombies: Sequence[Zombie]) -> Check:
    """Every zombie (stopped past its lease, taken over, resumed) had its late writes
    refused: a contender's fenced write refused by the fence, a buffer worker's reply or
    a campaign worker's completion never landed with its old claim token."""
    taken = [z for z in zombies if z.taken_over]
    wrong = [
        z for z in taken if z.landed or any(z.late_tries) or (z.kind == "lock" and not z.late_tries)
    ]
    kinds = Counter(z.kind for z in taken)
    stopped = [
        plural(kinds[kind], noun)
        for kind, noun in ZOMBIES.items()
        if kinds[kind] or kind in ("lock", "buffer")
    ]
    return Check(
        f"every zombie's late write refused ({', '.join(stopped)} stopped past their lease, "
        "taken over, resumed)",
        bool(taken) and not wrong,
        "; ".join(
            f"{z.name} ({z.kind}, tokens {list(z.tokens)}): late writes let through "
            f"{list(z.late_tries)}, landed {z.landed}"
            for z in wrong
        )
        or f"no zombie was taken over ({len(zombies)} stopped)",
    )


def lock_writes_fenced(o: LockOutcome) -> Check:
    """Per key, the fence let writes through in grant order only, each grant's from its
    holder alone, and each took effect exactly once."""
    return Check(
        f"fenced lock writes: {o.tries - o.refused} let through in grant order, each by its "
        f"grant's holder and written once; {o.refused} late ones refused",
        o.tries > o.refused and not (o.out_of_order or o.shared or o.unfenced),
        f"older grants written after newer ones: {list(o.out_of_order[:3])}; grants "
        f"written by two holders: {list(o.shared[:3])}; effects not one to one with the "
        f"writes let through: {list(o.unfenced[:3])}",
    )


def no_lease_left(o: LockOutcome) -> Check:
    """Once the contenders stopped, no lease of theirs is left live."""
    return Check(
        "no lease left live once the contenders stopped",
        not o.live,
        "; ".join(f"{h.key} held by {h.owner}, token {h.token}" for h in o.live),
    )
