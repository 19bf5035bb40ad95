"""scripts/async-to-sync: the generated sync modules are what their async originals
generate, and the parts of the transform that unasync does not do."""

from __future__ import annotations

import importlib.util
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "async-to-sync"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    loader = SourceFileLoader("async_to_sync", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_every_generated_module_is_current(script: ModuleType) -> None:
    assert script.main(["--check"]) == 0
    for original, generated in script.MODULES.items():
        text = (script.PACKAGE / generated).read_text()
        assert text.startswith(
            f"# DO NOT CHANGE! Generated from {original} by scripts/async-to-sync;\n"
        ), generated


def test_check_names_each_module_that_differs(
    script: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(script, "generate", lambda original: "# not what is there\n")
    assert script.main(["--check"]) == 1
    err = capsys.readouterr().err
    for original, generated in script.MODULES.items():
        assert f"driver/pgcoord/{generated} differs from what {original} generates" in err


def test_awaitables_are_unwrapped_and_names_mapped_in_docstrings(script: ModuleType) -> None:
    source = (
        "def f(c: Callable[P, Coroutine[Any, Any, list[Awaitable[int]]]]) -> Awaitable[R]:\n"
        '    """Calls locks_async over an AsyncConnection (AsyncConnections too)."""\n'
        "    # see client_async.AsyncClient\n"
    )
    assert script.retouch(source) == (
        "def f(c: Callable[P, list[int]]) -> R:\n"
        '    """Calls locks over an Connection (AsyncConnections too)."""\n'
        "    # see client.Client\n"
    )
