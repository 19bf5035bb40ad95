"""Real parallel connections: claimers released together by a barrier never share a
message and miss none, round after round; and claim, complete, fail, snooze and release
running side by side send every message exactly once, one claim at a time."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

from campaignkit import (
    Claimed,
    claim,
    complete,
    complete_many,
    counts,
    create,
    enqueue,
    fail,
    item,
    release,
    snooze,
)
from sqlkit import Conn, connections, fan_out, scalar, server_clock

CLAIMERS = 8
ROUNDS = 6
MESSAGES = 2000


def test_8_claimers_share_no_message_and_miss_none(db_url: str, conn: Conn) -> None:
    """Even rounds enqueue messages of one instant (groups of 15), odd rounds each at an
    instant of its own (groups of one, which a claim holds together as one row)."""
    run_id = create(conn)
    now = server_clock(conn)
    later = now + timedelta(hours=1)
    last_token = 0
    with connections(db_url, CLAIMERS) as conns:
        for round_no in range(ROUNDS):
            assert enqueue(
                conn,
                run_id,
                [
                    item(
                        f"r{round_no}-{i}",
                        scheduled_at=now - timedelta(microseconds=i) if round_no % 2 else None,
                    )
                    for i in range(MESSAGES)
                ],
            )
            enqueue(conn, run_id, [item(f"r{round_no}-later", scheduled_at=later)])

            def drain(i: int, c: Conn, round_no: int = round_no) -> list[Claimed]:
                rnd = random.Random(round_no * 100 + i)
                taken = []
                while found := claim(c, f"claimer-{i}", limit=rnd.choice([1, 7, 15, 40])):
                    taken += found
                return taken

            per_claimer = fan_out(conns, drain)
            claimed = [c for taken in per_claimer for c in taken]
            seen = Counter(c.recipient for c in claimed)
            assert {r: n for r, n in seen.items() if n > 1} == {}, f"round {round_no}"
            assert set(seen) == {f"r{round_no}-{i}" for i in range(MESSAGES)}, f"round {round_no}"
            assert {c.attempt for c in claimed} == {1}
            tokens = [c.claim_token for c in claimed]
            assert min(tokens) > last_token, "tokens grow from round to round"
            last_token = max(tokens)
            assert len([p for p in per_claimer if p]) >= 2, "the claimers worked side by side"

            def finish(i: int, c: Conn, per_claimer: list[list[Claimed]] = per_claimer) -> int:
                mine = per_claimer[i]
                done = sum(complete(c, m.message_id, m.claim_token) for m in mine[:5])
                return done + complete_many(
                    c, [m.message_id for m in mine[5:]], [m.claim_token for m in mine[5:]]
                )

            assert sum(fan_out(conns, finish)) == MESSAGES
            sent = (round_no + 1) * MESSAGES
            assert counts(conn, run_id) == (round_no + 1, 0, sent, 0, 0, sent + round_no + 1)
    assert scalar(conn, "SELECT count(*) FROM pgcoord.campaign_outcomes") == ROUNDS * MESSAGES


@dataclass
class Ledger:
    """Who holds which message now, kept under one lock: a claim of a message that
    another worker still holds is an overlap."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    live: dict[int, int] = field(default_factory=dict)
    overlaps: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    refused: list[str] = field(default_factory=list)

    def took(self, claimed: Claimed) -> None:
        with self.lock:
            if claimed.message_id in self.live:
                held = self.live[claimed.message_id]
                self.overlaps.append(f"{claimed.message_id}: {claimed.claim_token} over {held}")
            self.live[claimed.message_id] = claimed.claim_token

    def letting_go(self, claimed: Claimed, outcome: str) -> None:
        """Called just before the call that lets go, so a claim that follows it is never
        taken for an overlap."""
        with self.lock:
            assert self.live.pop(claimed.message_id) == claimed.claim_token
            self.outcomes[outcome] += 1


def test_claim_complete_fail_snooze_and_release_side_by_side_send_each_message_once(
    db_url: str, conn: Conn
) -> None:
    run_id = create(conn, max_retries=100, retry_backoff=[timedelta(0)])
    n = 600
    enqueue(conn, run_id, [item(f"+{i}") for i in range(n)])
    ledger = Ledger()
    deadline = time.monotonic() + 30

    def work(i: int, c: Conn) -> None:
        rnd = random.Random(i)
        idle = 0
        while idle < 3 and time.monotonic() < deadline:
            found = claim(c, f"w{i}", limit=rnd.choice([1, 5, 15]))
            if not found:
                idle += 1
                time.sleep(0.01)
                continue
            idle = 0
            for claimed in found:
                ledger.took(claimed)
            done = []
            for claimed in found:
                action = rnd.choices(["complete", "fail", "snooze", "release"], [6, 2, 1, 1])[0]
                if action == "complete":
                    done.append(claimed)
                    continue
                ledger.letting_go(claimed, action)
                ok = {
                    "fail": lambda m: fail(c, m.message_id, m.claim_token, "e") is not None,
                    "snooze": lambda m: snooze(c, m.message_id, m.claim_token),
                    "release": lambda m: release(c, m.message_id, m.claim_token),
                }[action](claimed)
                if not ok:
                    ledger.refused.append(f"{action} {claimed}")
            for claimed in done:
                ledger.letting_go(claimed, "complete")
            if done and complete_many(
                c, [m.message_id for m in done], [m.claim_token for m in done]
            ) != len(done):
                ledger.refused.append(f"complete_many of {len(done)}")

    with connections(db_url, 4) as conns:
        fan_out(conns, work, timeout=60)
    assert ledger.overlaps == []
    assert ledger.refused == [], "every claim was current when its worker let go"
    assert ledger.outcomes["complete"] == n
    assert min(ledger.outcomes.values()) > 0, ledger.outcomes
    assert counts(conn, run_id) == (0, 0, n, 0, 0, n)
    rows = conn.execute(
        "SELECT status, count(*) FROM pgcoord.campaign_outcomes GROUP BY status"
    ).fetchall()
    assert rows == [("sent", n)]
    assert scalar(conn, "SELECT count(*) FROM pgcoord.campaign_queue") == 0
