"""The campaign bench's batch tuning: a peer's batch whose run fails (its workers would
not stop in time on a loaded machine) is recorded as failed and the other batches still
run, instead of leaving the peer out of the whole bench; when every batch fails, the
error goes up (and the peer is left out, with its reason)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from bench import campaigns
from bench.campaigns_report import Run, best_batch, tuning_table

ARGS = argparse.Namespace(top=8, warmup=1.0, seconds=4)


def fake_runs(monkeypatch: pytest.MonkeyPatch, failing: set[int]) -> list[int]:
    ran: list[int] = []

    def fleet_run(db: Any, variant: str, workers: int, round_no: int, backlog: int,
                  args: Any, batch: int) -> Run:  # fmt: skip
        ran.append(batch)
        if batch in failing:
            raise RuntimeError("workers exited with [-9, -9]\nits log")
        return Run(variant, workers, round_no, 100.0 * batch, 100 * batch, {"dry": False})

    monkeypatch.setattr(campaigns, "fleet_run", fleet_run)
    return ran


def test_a_failed_batch_is_recorded_and_the_others_still_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran = fake_runs(monkeypatch, failing={500})
    tried = campaigns.tune(None, ARGS, "pgqueuer", [250, 500, 1000], keep_going=True)  # type: ignore[arg-type]
    assert ran == [250, 500, 1000]
    assert [t.get("failed") for t in tried] == [
        None,
        "RuntimeError: workers exited with [-9, -9]",
        None,
    ]
    assert best_batch(tried) == 1000
    assert "failed" in tuning_table(tried)


def test_every_batch_failed_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_runs(monkeypatch, failing={250, 500})
    with pytest.raises(RuntimeError, match="workers exited"):
        campaigns.tune(None, ARGS, "pgqueuer", [250, 500], keep_going=True)  # type: ignore[arg-type]


def test_without_keep_going_the_first_failure_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    ran = fake_runs(monkeypatch, failing={15})
    with pytest.raises(RuntimeError):
        campaigns.tune(None, ARGS, "pgcoord-tuned", [15, 60])  # type: ignore[arg-type]
    assert ran == [15]
