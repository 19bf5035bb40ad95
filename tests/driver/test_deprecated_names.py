"""The names of the previous release still work for one more, each with a
DeprecationWarning pointing at the caller: pgcoord.Burst and pgcoord.types.Burst (now
Batch), the modules pgcoord.aio and pgcoord.inbox_aio (now locks_async, client_async and
inbox_async), and ClaimLost.burst (now batch)."""

from __future__ import annotations

import importlib
import inspect
import sys
from datetime import UTC, datetime
from types import ModuleType

import pytest

import pgcoord
from pgcoord import AsyncClient, Batch, ClaimLost, inbox_async, locks_async


def calls_of(module: ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if inspect.isfunction(value)
        and value.__module__ == module.__name__
        and not name.startswith("_")
    }


def fresh_import(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import module `name` anew, so that its import-time warning is raised again."""
    monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module(name)


def test_burst_is_batch_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match=r"^pgcoord\.Burst is deprecated, use") as caught:
        assert pgcoord.Burst is Batch
    assert caught[0].filename == __file__
    with pytest.warns(DeprecationWarning, match=r"^pgcoord\.types\.Burst is deprecated") as caught:
        from pgcoord.types import Burst
    assert Burst is Batch
    assert caught[0].filename == __file__


def test_other_missing_names_still_fail() -> None:
    with pytest.raises(AttributeError, match="Bursts"):
        _ = pgcoord.Bursts
    with pytest.raises(ImportError):
        from pgcoord.types import Bursts  # noqa: F401


def test_the_old_async_modules_reexport_the_new_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.warns(DeprecationWarning, match=r"^pgcoord\.aio is deprecated"):
        aio = fresh_import("pgcoord.aio", monkeypatch)
    assert set(aio.__all__) == calls_of(locks_async) | {"AsyncClient"}
    assert aio.AsyncClient is AsyncClient
    for name in calls_of(locks_async):
        assert getattr(aio, name) is getattr(locks_async, name), name

    with pytest.warns(DeprecationWarning, match=r"^pgcoord\.inbox_aio is deprecated"):
        inbox_aio = fresh_import("pgcoord.inbox_aio", monkeypatch)
    assert set(inbox_aio.__all__) == calls_of(inbox_async)
    for name in calls_of(inbox_async):
        assert getattr(inbox_aio, name) is getattr(inbox_async, name), name


def test_claim_lost_burst_is_its_batch_with_a_warning() -> None:
    now = datetime.now(UTC)
    batch = Batch("c", 7, [1], ["hi"], now, now, 1)
    error = ClaimLost(batch)
    assert error.batch is batch
    with pytest.warns(DeprecationWarning, match=r"^ClaimLost\.burst is deprecated") as caught:
        assert error.burst is batch
    assert caught[0].filename == __file__
