"""Real parallel connections: claimers released together by a barrier never share a
conversation, and ingest, claim, fail and complete running side by side deliver every
message in exactly one completed claim, one claim per conversation at a time."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from inboxkit import claim, complete, fail, ingest, ingest_many, statuses
from sqlkit import Conn, connections, fan_out, scalar

from pgcoord.types import Batch

CLAIMERS = 8
ROUNDS = 12
CONVERSATIONS = 40


def test_8_claimers_share_no_conversation_and_miss_none(db_url: str, conn: Conn) -> None:
    not_due: dict[str, int] = {}
    last_token = 0
    with connections(db_url, CLAIMERS) as conns:
        for round_no in range(ROUNDS):
            batch = [
                (f"r{round_no}-c{i}-{n}", f"r{round_no}-c{i}", f"r{round_no}-c{i} says {n}")
                for i in range(CONVERSATIONS)
                for n in range(1 + i % 3)
            ]
            expected: dict[str, tuple[list[int], list[str]]] = defaultdict(lambda: ([], []))
            for (_, key, body), stored in zip(batch, ingest_many(conn, batch), strict=True):
                expected[key][0].append(stored.message_id)
                expected[key][1].append(body)
            later = [(f"r{round_no}-later{i}",) * 3 for i in range(3)]
            ingest_many(conn, later, debounce=timedelta(minutes=5))  # never due here
            not_due |= dict.fromkeys((key for _, key, _ in later), 1)

            def drain(i: int, c: Conn) -> list[Batch]:
                taken = []
                while bursts := claim(c, f"claimer-{i}", limit=3):
                    assert len(bursts) <= 3
                    taken += bursts
                return taken

            per_claimer = fan_out(conns, drain)
            bursts = [burst for taken in per_claimer for burst in taken]
            counts = Counter(burst.conversation_key for burst in bursts)
            shared = {key: n for key, n in counts.items() if n > 1}
            assert shared == {}, f"round {round_no}: conversations claimed twice: {shared}"
            assert set(counts) == set(expected), (
                f"round {round_no}: missed {set(expected) - set(counts)}"
            )
            tokens = [burst.claim_token for burst in bursts]
            assert len(set(tokens)) == len(tokens)
            assert min(tokens) > last_token, "tokens grow from round to round"
            last_token = max(tokens)
            for burst in bursts:
                ids, bodies = expected[burst.conversation_key]
                assert (burst.message_ids, burst.bodies, burst.attempt) == (ids, bodies, 1)

            def finish(i: int, c: Conn, per_claimer: list[list[Batch]] = per_claimer) -> list[bool]:
                return [complete(c, b.conversation_key, b.claim_token) for b in per_claimer[i]]

            assert all(all(done) for done in fan_out(conns, finish))
            left = {row.conversation_key: row.message_count for row in statuses(conn)}
            assert left == not_due, f"round {round_no}: left buffered {left}"


@dataclass
class Ledger:
    """What the claimers saw, kept under one lock: who holds which conversation now, and
    every claim of each conversation in the order they were made."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    live: dict[str, int] = field(default_factory=dict)
    claims: dict[str, list[tuple[Batch, str]]] = field(default_factory=lambda: defaultdict(list))
    overlaps: list[str] = field(default_factory=list)

    def took(self, burst: Batch) -> None:
        with self.lock:
            key = burst.conversation_key
            if key in self.live:
                self.overlaps.append(f"{key}: {burst.claim_token} while {self.live[key]} held it")
            self.live[key] = burst.claim_token
            self.claims[key].append((burst, "held"))

    def letting_go(self, burst: Batch, outcome: str) -> None:
        """Called just before the complete or fail, so that a claim that follows it can
        never be taken for an overlap."""
        with self.lock:
            key = burst.conversation_key
            assert self.live.pop(key) == burst.claim_token
            index = next(i for i, (b, _) in enumerate(self.claims[key]) if b is burst)
            self.claims[key][index] = (burst, outcome)


def test_ingest_claim_fail_and_complete_side_by_side_deliver_each_message_once(
    db_url: str, conn: Conn
) -> None:
    ingesters, claimers, per_ingester = 3, 3, 100
    keys = [f"conv-{i}" for i in range(4)]
    ledger = Ledger()
    sent: list[list[tuple[str, int, str]]] = [[] for _ in range(ingesters)]  # key, id, body
    finished: list[int] = []  # the ingesters that are done
    deadline = time.monotonic() + 30

    def ingester(i: int, c: Conn) -> None:
        rnd = random.Random(i)
        for n in range(per_ingester):
            key = rnd.choice(keys)
            body = f"from {i}: #{n} {'é' * (n % 4)}"
            debounce = timedelta(milliseconds=rnd.choice([0, 5, 20]))
            result = ingest(
                c, f"ing{i}-{n}", key, body, debounce=debounce, max_wait=timedelta(milliseconds=50)
            )
            assert not result.duplicate
            sent[i].append((key, result.message_id, body))
            if n % 7 == 0:  # a provider retry
                assert ingest(c, f"ing{i}-{n}", key, body).message_id == result.message_id
        finished.append(i)

    def claimer(i: int, c: Conn) -> int:
        rnd = random.Random(100 + i)
        calls = 0  # claims that found work
        while time.monotonic() < deadline:
            bursts = claim(c, f"claimer-{i}", limit=2)
            if not bursts:
                if len(finished) == ingesters and not scalar(
                    c, "SELECT count(*) FROM pgcoord.buffer_status"
                ):
                    return calls
                time.sleep(0.002)
                continue
            calls += 1
            for burst in bursts:
                ledger.took(burst)
            for burst in bursts:
                if burst.attempt < 3 and (calls == 1 or rnd.random() < 0.15):
                    ledger.letting_go(burst, "failed")
                    assert fail(c, burst.conversation_key, burst.claim_token, "try again")
                else:
                    ledger.letting_go(burst, "completed")
                    assert complete(c, burst.conversation_key, burst.claim_token)
        raise AssertionError("the claimers did not drain the buffers in time")

    def run(i: int, c: Conn) -> object:
        if i < ingesters:
            return ingester(i, c)
        return claimer(i - ingesters, c)

    with connections(db_url, ingesters + claimers) as conns:
        fan_out(conns, run, timeout=40)

    assert ledger.overlaps == [], "two live claims of one conversation"
    assert ledger.live == {}
    bodies = {message_id: body for messages in sent for _, message_id, body in messages}
    delivered: Counter[int] = Counter()
    for key, claims in ledger.claims.items():
        for index, (burst, outcome) in enumerate(claims):
            assert burst.message_ids == sorted(burst.message_ids), "arrival order in a burst"
            assert burst.bodies == [bodies[m] for m in burst.message_ids]
            if outcome == "completed":
                delivered.update(burst.message_ids)
            else:
                assert outcome == "failed", f"{key}: a claim left {outcome}"
                retry = claims[index + 1][0]
                assert (retry.message_ids, retry.attempt) == (burst.message_ids, burst.attempt + 1)
    outcomes = Counter(outcome for claims in ledger.claims.values() for _, outcome in claims)
    assert outcomes["failed"] >= 1, "each claimer fails its first burst"
    print(
        outcomes,
        Counter(len(b.message_ids) for claims in ledger.claims.values() for b, _ in claims),
    )
    assert set(delivered) == set(bodies), "every message delivered"
    assert [m for m, n in delivered.items() if n > 1] == [], "no message delivered twice"

    # one ingester's messages to a conversation are answered in the order it sent them
    order: dict[int, int] = {}
    for claims in ledger.claims.values():
        completed = [burst for burst, outcome in claims if outcome == "completed"]
        for index, burst in enumerate(completed):
            order.update(dict.fromkeys(burst.message_ids, index))
    for messages in sent:
        for key in keys:
            indices = [order[message_id] for k, message_id, _ in messages if k == key]
            assert indices == sorted(indices), f"{key}: answered out of order"

    assert statuses(conn) == []
    assert conn.execute(
        "SELECT state, count(*) FROM pgcoord.messages GROUP BY state"
    ).fetchall() == [("done", ingesters * per_ingester)]
    assert scalar(conn, "SELECT count(*) FROM pgcoord.buffers") == 0
