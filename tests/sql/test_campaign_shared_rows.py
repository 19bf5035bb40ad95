"""No enqueue, claim or completion writes a shared row: the run's row keeps its version
however many calls go through it (a counter that every enqueue of one message updated
would leave a version per message, walked by every later enqueue and claim while a long
transaction holds back vacuum). The run's total is still counted right."""

from __future__ import annotations

from campaignkit import claim, complete_many, counts, create, enqueue, item
from sqlkit import Conn, scalar


def version(conn: Conn, run_id: int) -> str:
    """The transaction that wrote the run's row as it is now."""
    return str(scalar(conn, "SELECT xmin::text FROM pgcoord.campaign_runs WHERE id = %s", run_id))


def test_enqueues_claims_and_completions_leave_the_run_row_as_it_was(conn: Conn) -> None:
    run_id = create(conn)
    written = version(conn, run_id)
    for n in range(5):
        assert enqueue(conn, run_id, [item(f"+1555{n}")]) == 1
    assert enqueue(conn, run_id, [item(f"+1666{n}") for n in range(20)]) == 20
    claimed = claim(conn, limit=15)
    assert len(claimed) == 15
    ids, tokens = [c.message_id for c in claimed], [c.claim_token for c in claimed]
    assert complete_many(conn, ids, tokens) == 15
    assert version(conn, run_id) == written
    assert counts(conn, run_id) == (10, 0, 15, 0, 0, 25)
