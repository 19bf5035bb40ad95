"""What happened, as facts the checks judge: what each webhook of the lock race got,
what became of the killed worker's batch, what the storm's deliveries, stored
messages, claims and replies show (`analyse`), and what a campaign's queue holds after
its run."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pgcoord import BufferStatus, Lock

from .ledger import Claim, Reply, Stored
from .plan import Plan
from .senders import Delivery


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


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A campaign message as the queue holds it after the run."""

    message_id: int
    recipient: str
    status: str  # pending, processing, sent, failed or skipped
    attempt: int  # of its last claim: 1 + the tries it had failed before
    error: str | None  # what its last failed try said
    metrics: Mapping[str, Any] | None  # what the handler returned when it was sent


def analyse(
    plan: Plan,
    deliveries: Sequence[Delivery],
    rows: Sequence[Stored],
    claims: Sequence[Claim],
    replies: Sequence[Reply],
    status: Sequence[BufferStatus],
) -> Outcome:
    """The facts about a storm from what it sent (`deliveries`), what pgcoord stored
    (`rows`), what the workers claimed and replied (the ledger) and what is still
    buffered (`status`)."""
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
        misdelivered=_misdelivered(by_id, rows),
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
    )


# every message stored once -----------------------------------------------------------


def _by_provider_id(deliveries: Sequence[Delivery]) -> dict[str, list[Delivery]]:
    by_id: dict[str, list[Delivery]] = defaultdict(list)
    for d in deliveries:
        by_id[d.provider_message_id].append(d)
    return by_id


def _misdelivered(by_id: dict[str, list[Delivery]], rows: Sequence[Stored]) -> tuple[str, ...]:
    """Provider ids not stored as exactly one row, answered duplicate = false exactly once
    and named by every repeat; and rows of ids that were never sent."""
    row_of = {r.provider_message_id: r for r in rows}
    wrong = [
        pid
        for pid, ds in sorted(by_id.items())
        if (row := row_of.get(pid)) is None
        or sum(not d.duplicate for d in ds) != 1
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
