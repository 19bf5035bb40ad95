"""What happened, as facts the checks judge: what each webhook of the lock race got,
what became of the killed worker's batch, what the storm's deliveries, stored
messages, claims and replies show (`analyse`), what a campaign's queue holds after
its run and what became of the messages its killed worker held (`handover`), and, for
the torture, the faults it injected, its zombies, what the lock contenders' fenced
writes show (`analyse_locks`) and the keyed enqueues of its campaign's producer."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pgcoord import BufferStatus, CampaignEnqueued, Lock

from .ledger import Claim, Reply, Stored, Try
from .plan import Plan
from .senders import Delivery
from .torture_lockers import Hold, LockTry, LockWrite


@dataclass(frozen=True, slots=True)
class Webhook:
    """What one webhook of the burst got: its answer, how long it took, and whether its
    fenced reply was written."""

    name: str
    lock: Lock
    seconds: float
    replied: bool


@dataclass(frozen=True, slots=True)
class Takeover:
    """The batch the killed worker held, and what became of it."""

    victim: str
    claim: Claim | None  # the batch it held when it was killed (None: it never held one)
    again: Claim | None  # the next delivery of the same messages
    reply: Reply | None  # the fenced reply of those messages (from that delivery or a later)
    late_complete: bool | None  # what the dead worker's late buffer_complete returned
    late_extend: datetime | None  # ... and its late heartbeat (buffer_extend)
    late_reply_refused: bool  # its late fenced reply raised ClaimLost and rolled back
    stale_replies: int  # replies in the ledger with its token


@dataclass(frozen=True, slots=True)
class Outcome:
    """The facts about a storm, from what was sent, stored, claimed and replied."""

    messages: int  # distinct provider message ids sent
    deliveries: int  # message_ingest calls
    repeats: int  # deliveries after the first of an id
    doubles: int  # ids delivered twice at the same instant
    stored: int  # rows in pgcoord.messages for the storm's provider
    misdelivered: tuple[str, ...]  # ids not answered duplicate = false exactly once ...
    replies: int
    unanswered: tuple[int, ...]  # stored message ids in no reply
    answered_twice: tuple[int, ...]  # message ids in more than one reply
    strangers: tuple[int, ...]  # message ids in replies that the storm did not store
    bursts: int
    judged: int  # bursts whose messages arrived within half the debounce of each other
    split: tuple[int, ...]  # judged bursts answered by more than one reply
    merged: int  # replies that answered more than one burst
    not_final: tuple[int, ...]  # reply tokens that are not their messages' last claim
    superseded: int  # claims without a reply, each delivered again by a later claim
    unrecovered: tuple[int, ...]  # claims without a reply and no later claim of the batch
    buffered: tuple[BufferStatus, ...]  # buffer_status rows of the storm's conversations
    not_done: tuple[int, ...]  # stored messages whose state is not 'done'
    latencies: tuple[float, ...] = field(default=())  # seconds: last message -> reply
    drain: float | None = None  # seconds from the last new message to the last reply
    by_worker: dict[str, int] = field(default_factory=dict)  # replies per worker
    lost_answers: int = 0  # ids of which a delivery's answer was lost (and made again)


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A campaign message as the queue holds it after the run."""

    message_id: int
    recipient: str
    status: str  # pending, processing, sent, failed or skipped
    attempt: int  # of its last claim: 1 + the tries it had failed before
    error: str | None  # what its last failed try said
    metrics: Mapping[str, Any] | None  # what the handler returned when it was sent
    finished_at: datetime | None = None  # when it was sent or failed for good


@dataclass(frozen=True, slots=True)
class Chunk:
    """One keyed enqueue of the torture's producer (`campaign_enqueue_once`): the
    answer of its one call that got an answer, after `failed` calls whose connection
    failed (their answers lost), each made again with the same key."""

    key: str
    size: int  # messages in the chunk
    answer: CampaignEnqueued
    failed: int
    cut: bool  # its first call landed and the proxy lost its answer after the commit


@dataclass(frozen=True, slots=True)
class LateCall:
    """The killed campaign worker's late calls on a message it was sending, with the
    claim token it held."""

    message_id: int
    claim_token: int
    completed: bool  # what campaign_complete returned
    extended: datetime | None  # what campaign_extend returned


@dataclass(frozen=True, slots=True)
class Handover:
    """The campaign messages the killed worker held, and what became of them."""

    victim: str
    held: Mapping[int, int]  # message id -> the attempt of the claim it held when killed
    again: Mapping[int, Try]  # message id -> the next try of that message, if any
    late: tuple[LateCall, ...]  # its late calls, on the messages it was sending
    after: Mapping[int, QueuedMessage]  # the held messages after the run


def analyse(
    plan: Plan,
    deliveries: Sequence[Delivery],
    rows: Sequence[Stored],
    claims: Sequence[Claim],
    replies: Sequence[Reply],
    status: Sequence[BufferStatus],
    lost_answers: Collection[str] = (),
) -> Outcome:
    """The facts about a storm from what it sent (`deliveries`), what pgcoord stored
    (`rows`), what the workers claimed and replied (the ledger) and what is still
    buffered (`status`). `lost_answers`: the ids of which a delivery got no answer (its
    connection failed) and was made again: stored then or not, so the deliveries that
    were answered may all say duplicate = true."""
    by_id = _by_provider_id(deliveries)
    replies_of = _replies_of(replies)
    ids = {r.message_id for r in rows}
    members = _bursts(plan, rows)
    judged = _judged(plan, rows, members)
    superseded, unrecovered = _unreplied(claims, replies)
    return Outcome(
        messages=len(by_id),
        deliveries=len(deliveries),
        repeats=len(deliveries) - len(by_id),
        doubles=len({d.provider_message_id for d in deliveries if d.kind == "double"}),
        stored=len(rows),
        misdelivered=_misdelivered(by_id, rows, lost_answers),
        replies=len(replies),
        unanswered=tuple(sorted(ids - set(replies_of))),
        answered_twice=tuple(sorted(mid for mid, rs in replies_of.items() if len(rs) > 1)),
        strangers=tuple(sorted(set(replies_of) - ids)),
        bursts=len(members),
        judged=len(judged),
        split=tuple(n for n in judged if len(_replies_of_all(members[n], replies_of)) > 1),
        merged=_merged(members, replies),
        not_final=_not_final(claims, replies),
        superseded=superseded,
        unrecovered=unrecovered,
        buffered=tuple(status),
        not_done=tuple(r.message_id for r in rows if r.state != "done"),
        latencies=_latencies(rows, replies),
        drain=_drain(rows, replies),
        by_worker=_by_worker(replies),
        lost_answers=len(set(lost_answers)),
    )


# every message stored once -----------------------------------------------------------


def _by_provider_id(deliveries: Sequence[Delivery]) -> dict[str, list[Delivery]]:
    by_id: dict[str, list[Delivery]] = defaultdict(list)
    for d in deliveries:
        by_id[d.provider_message_id].append(d)
    return by_id


def _misdelivered(
    by_id: dict[str, list[Delivery]], rows: Sequence[Stored], lost_answers: Collection[str]
) -> tuple[str, ...]:
    """Provider ids not stored as exactly one row, answered duplicate = false exactly once
    (at most once when an answer was lost) and named by every repeat; and rows of ids
    that were never sent."""
    row_of = {r.provider_message_id: r for r in rows}
    wrong = [
        pid
        for pid, ds in sorted(by_id.items())
        if (row := row_of.get(pid)) is None
        or sum(not d.duplicate for d in ds) not in ((0, 1) if pid in lost_answers else (1,))
        or {d.message_id for d in ds} != {row.message_id}
    ]
    return (*wrong, *sorted(set(row_of) - set(by_id)))


# every message in exactly one reply ----------------------------------------------------


def _replies_of(replies: Sequence[Reply]) -> dict[int, list[int]]:
    """message id -> the indexes of the replies that hold it."""
    replies_of: dict[int, list[int]] = defaultdict(list)
    for i, reply in enumerate(replies):
        for mid in reply.message_ids:
            replies_of[mid].append(i)
    return replies_of


def _replies_of_all(message_ids: Sequence[int], replies_of: dict[int, list[int]]) -> set[int]:
    return {i for m in message_ids for i in replies_of.get(m, [])}


# each burst in one reply ---------------------------------------------------------------


def _bursts(plan: Plan, rows: Sequence[Stored]) -> dict[int, list[int]]:
    """Burst number -> the stored message ids of that burst."""
    burst_of = {m.provider_message_id: b.number for b in plan.bursts for m in b.messages}
    members: dict[int, list[int]] = defaultdict(list)
    for r in rows:
        if r.provider_message_id in burst_of:
            members[burst_of[r.provider_message_id]].append(r.message_id)
    return members


def _judged(plan: Plan, rows: Sequence[Stored], members: dict[int, list[int]]) -> list[int]:
    """The bursts typed fast enough, by the server's clock, that one reply must answer
    them: no gap of half the debounce between two messages, all within half max_wait."""
    received = {r.message_id: r.received_at for r in rows}
    limit = plan.debounce.total_seconds() / 2
    judged = []
    for number, mids in sorted(members.items()):
        times = sorted(received[m] for m in mids)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        if all(g < limit for g in gaps) and (times[-1] - times[0]) < plan.max_wait / 2:
            judged.append(number)
    return judged


def _merged(members: dict[int, list[int]], replies: Sequence[Reply]) -> int:
    """Replies that answered more than one burst (bursts that queued up)."""
    burst_of = {mid: number for number, mids in members.items() for mid in mids}
    return sum(len({burst_of.get(m) for m in r.message_ids}) > 1 for r in replies)


# fencing: each reply is its messages' last claim; every other claim was superseded ------


def _not_final(claims: Sequence[Claim], replies: Sequence[Reply]) -> tuple[int, ...]:
    """The tokens of replies that are not their claim as logged, or not the last claim of
    each of their messages."""
    claim_of = {c.claim_token: c for c in claims}
    last_claim: dict[int, int] = {}
    for c in claims:
        for mid in c.message_ids:
            last_claim[mid] = max(last_claim.get(mid, 0), c.claim_token)
    return tuple(
        reply.claim_token
        for reply in replies
        if not _is_its_claim(reply, claim_of.get(reply.claim_token))
        or any(last_claim[m] != reply.claim_token for m in reply.message_ids)
    )


def _is_its_claim(reply: Reply, claim: Claim | None) -> bool:
    return claim is not None and (
        claim.conversation_key,
        claim.message_ids,
        claim.attempt,
        claim.worker,
    ) == (reply.conversation_key, reply.message_ids, reply.attempt, reply.worker)


def _unreplied(claims: Sequence[Claim], replies: Sequence[Reply]) -> tuple[int, tuple[int, ...]]:
    """The claims without a reply: how many were delivered again by a later claim with a
    higher attempt, and the tokens of those that were not."""
    replied = {r.claim_token for r in replies}
    lost = [c for c in claims if c.claim_token not in replied]
    unrecovered = tuple(c.claim_token for c in lost if not _delivered_again(c, claims))
    return len(lost) - len(unrecovered), unrecovered


def _delivered_again(claim: Claim, claims: Sequence[Claim]) -> bool:
    return any(
        c.claim_token > claim.claim_token
        and c.conversation_key == claim.conversation_key
        and c.message_ids == claim.message_ids
        and c.attempt > claim.attempt
        for c in claims
    )


# timing and shares ---------------------------------------------------------------------


def _latencies(rows: Sequence[Stored], replies: Sequence[Reply]) -> tuple[float, ...]:
    """Seconds from each reply's last message to the reply, sorted."""
    received = {r.message_id: r.received_at for r in rows}
    return tuple(
        sorted(
            (r.replied_at - max(received[m] for m in r.message_ids)).total_seconds()
            for r in replies
            if all(m in received for m in r.message_ids) and r.message_ids
        )
    )


def _drain(rows: Sequence[Stored], replies: Sequence[Reply]) -> float | None:
    """Seconds from the last new message to the last reply."""
    if not replies or not rows:
        return None
    last_reply = max(r.replied_at for r in replies)
    return (last_reply - max(r.received_at for r in rows)).total_seconds()


def _by_worker(replies: Sequence[Reply]) -> dict[str, int]:
    by_worker: dict[str, int] = defaultdict(int)
    for reply in replies:
        by_worker[reply.worker] += 1
    return dict(sorted(by_worker.items()))


# the killed worker's batch -------------------------------------------------------------


def next_delivery(claims: Sequence[Claim], claim: Claim) -> Claim | None:
    """The first later claim of the same batch (same conversation, same messages)."""
    return next(
        (
            c
            for c in claims
            if c.claim_token > claim.claim_token
            and c.conversation_key == claim.conversation_key
            and c.message_ids == claim.message_ids
        ),
        None,
    )


def reply_of(replies: Sequence[Reply], claim: Claim) -> Reply | None:
    """The first reply to the messages of `claim`, from whichever claim."""
    return next(
        (
            r
            for r in replies
            if r.conversation_key == claim.conversation_key and r.message_ids == claim.message_ids
        ),
        None,
    )


# the killed campaign worker's messages ------------------------------------------------


def handover(
    victim: str,
    held: Mapping[int, int],
    tries: Sequence[Try],
    late: Sequence[LateCall],
    queued: Sequence[QueuedMessage],
) -> Handover:
    """What became of the messages `victim` held (`held`: message id -> attempt), from
    the tries log and the queue after the run."""
    after = {m.message_id: m for m in queued if m.message_id in held}
    return Handover(victim, dict(held), next_tries(held, tries), tuple(late), after)


def next_tries(held: Mapping[int, int], tries: Sequence[Try]) -> dict[int, Try]:
    """For each message of `held` (id -> attempt), its first try one attempt later."""
    again: dict[int, Try] = {}
    for t in tries:  # in claim order
        if held.get(t.message_id, -1) + 1 == t.attempt and t.message_id not in again:
            again[t.message_id] = t
    return again


# the torture ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault the torture injected, and how long until work flowed again after it."""

    kind: str  # "kill", "stop", "terminate" or "restart"
    at: float  # seconds after the load began
    what: str  # what it did and what came of it, for the report
    recovery: float | None  # seconds until work flowed again; None: not within the bound
    # per flow of work (or per batch or key a stopped process held): seconds until it
    # went on after the fault, None when it did not within the bound
    flows: Mapping[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Zombie:
    """A process stopped (SIGSTOP) while it held grants or claims, resumed (SIGCONT)
    only after another holder had them, and what became of its late writes."""

    name: str
    kind: str  # "lock" (a contender), "buffer" or "campaign" (a worker)
    tokens: tuple[int, ...]  # the grants or claims it held when it was stopped
    taken_over: bool  # every one of them had a new holder before it was resumed
    late_tries: tuple[bool, ...]  # a contender's late writes: what the fence answered each
    landed: int  # its writes with those tokens that took effect after it was stopped


@dataclass(frozen=True, slots=True)
class LockOutcome:
    """What the lock contenders' fenced writes show."""

    tries: int  # fenced writes made
    refused: int  # ... that the fence refused
    writes: int  # rows of the fenced effect
    out_of_order: tuple[str, ...]  # a grant's write let through after a newer grant's
    shared: tuple[str, ...]  # grants whose writes came from two owners
    unfenced: tuple[str, ...]  # effects and writes let through that do not match
    live: tuple[Hold, ...]  # leases left live after the contenders stopped


def analyse_locks(
    tries: Sequence[LockTry], writes: Sequence[LockWrite], live: Sequence[Hold]
) -> LockOutcome:
    """The facts about the contenders' fenced writes: `tries` and `writes` in the
    order they were made (server clock), and the leases `live` once they stopped."""
    admitted = [t for t in tries if t.current]
    return LockOutcome(
        tries=len(tries),
        refused=len(tries) - len(admitted),
        writes=len(writes),
        out_of_order=_out_of_order(admitted),
        shared=_shared(admitted, writes),
        unfenced=_unfenced(admitted, writes),
        live=tuple(live),
    )


def _out_of_order(admitted: Sequence[LockTry]) -> tuple[str, ...]:
    """Writes let through with a grant older than one already let through for the key:
    two grants of a key overlapped."""
    newest: dict[str, LockTry] = {}
    found = []
    for t in admitted:
        last = newest.get(t.key)
        if last is not None and t.token < last.token:
            found.append(f"{t.key}: token {t.token} ({t.owner}) after {last.token} ({last.owner})")
        if last is None or t.token > last.token:
            newest[t.key] = t
    return tuple(found)


def _shared(admitted: Sequence[LockTry], writes: Sequence[LockWrite]) -> tuple[str, ...]:
    owners: defaultdict[tuple[str, int], set[str]] = defaultdict(set)
    for t in admitted:
        owners[t.key, t.token].add(t.owner)
    for w in writes:
        owners[w.key, w.token].add(w.owner)
    return tuple(
        f"{key}: token {token} by {', '.join(sorted(names))}"
        for (key, token), names in sorted(owners.items())
        if len(names) > 1
    )


def _unfenced(admitted: Sequence[LockTry], writes: Sequence[LockWrite]) -> tuple[str, ...]:
    """(key, token, owner) of the effects that are not one to one with the writes the
    fence let through."""
    let_through = Counter((t.key, t.token, t.owner) for t in admitted)
    effects = Counter((w.key, w.token, w.owner) for w in writes)
    return tuple(
        f"{key}: token {token} by {owner}: {let_through[key, token, owner]} let through, "
        f"{effects[key, token, owner]} written"
        for key, token, owner in sorted(set(let_through) | set(effects))
        if let_through[key, token, owner] != effects[key, token, owner]
    )


def lock_zombie(
    name: str, held: Hold, taken_over: bool, tries: Sequence[LockTry], writes: Sequence[LockWrite]
) -> Zombie:
    """The contender `name` stopped while it held `held` (before it wrote with it)."""
    grant = (held.key, held.token)
    late = tuple(t.current for t in tries if (t.key, t.token) == grant and t.owner == name)
    landed = sum((w.key, w.token) == grant for w in writes)
    return Zombie(name, "lock", (held.token,), taken_over, late, landed)


def buffer_zombie(
    name: str, held: Sequence[Claim], taken_over: bool, replies: Sequence[Reply], since: datetime
) -> Zombie:
    """The worker `name` stopped at `since` (server clock) while it held the claims
    `held`, unanswered."""
    tokens = {c.claim_token for c in held}
    landed = sum(r.claim_token in tokens and r.replied_at > since for r in replies)
    return Zombie(name, "buffer", tuple(sorted(tokens)), taken_over, (), landed)


def campaign_zombie(
    name: str,
    held: Mapping[int, int],
    taken_over: bool,
    tries: Sequence[Try],
    queued: Sequence[QueuedMessage],
) -> Zombie:
    """The campaign worker `name` stopped while it held the messages `held` (id -> the
    attempt of its claim). A message counts as landed when `name` sent it in the end
    without a later try of its own: with the claim it held when it was stopped."""
    tokens = {
        t.claim_token for t in tries if t.worker == name and held.get(t.message_id) == t.attempt
    }
    retried = {
        t.message_id
        for t in tries
        if t.worker == name and t.attempt > held.get(t.message_id, t.attempt)
    }
    landed = sum(
        m.message_id in held
        and m.message_id not in retried
        and m.status == "sent"
        and (m.metrics or {}).get("worker") == name
        for m in queued
    )
    return Zombie(name, "campaign", tuple(sorted(tokens)), taken_over, (), landed)
