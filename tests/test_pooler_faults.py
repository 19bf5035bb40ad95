"""The SIGKILL fault run (test_fault_buffers) again, with the workers, the webhook lanes
and the checks all connected through PgBouncer in transaction mode (see poolerkit)."""

from __future__ import annotations

from pathlib import Path

import test_fault_buffers


def test_sigkilled_workers_through_the_pooler_lose_no_message_and_answer_none_twice(
    pooled_db_url: str, tmp_path: Path
) -> None:
    test_fault_buffers.test_sigkilled_workers_lose_no_message_and_answer_none_twice(
        pooled_db_url, tmp_path
    )
