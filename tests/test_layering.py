"""The library never imports the demo: `import pgcoord` and every module of the package
outside `pgcoord.demo` leave `pgcoord.demo` out of `sys.modules`, and no library source
names it in an import statement. The CLI's passthrough names the demo's module as a
string and imports it only when `pgcoord demo` runs; that is allowed."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import pgcoord

PACKAGE = Path(pgcoord.__file__).resolve().parent
DEMO = "pgcoord.demo"

# Imports the modules named on its command line in order; after each, looks for the
# demo in sys.modules. Prints the first module that brought it in, and what it brought.
PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
    demo = sorted(m for m in sys.modules if m == "pgcoord.demo" or m.startswith("pgcoord.demo."))
    if demo:
        print(json.dumps({"module": name, "demo": demo}))
        break
else:
    print(json.dumps(None))
"""


def is_demo(name: str) -> bool:
    return name == DEMO or name.startswith(f"{DEMO}.")


def modules(path: Path = PACKAGE, prefix: str = "pgcoord.") -> list[tuple[str, Path, bool]]:
    """Every module of the package below `path`, found without importing any: its name,
    its file and whether it is a package."""
    found = []
    for info in pkgutil.iter_modules([str(path)], prefix):
        short = info.name.rpartition(".")[2]
        if info.ispkg:
            found.append((info.name, path / short / "__init__.py", True))
            found.extend(modules(path / short, f"{info.name}."))
        else:
            found.append((info.name, path / f"{short}.py", False))
    return found


def library() -> list[tuple[str, Path, bool]]:
    """`pgcoord` itself and every module of it outside the demo."""
    return [("pgcoord", PACKAGE / "__init__.py", True)] + [
        m for m in modules() if not is_demo(m[0])
    ]


def first_to_import_the_demo(names: list[str]) -> dict[str, object] | None:
    """Import `names` in order in a fresh interpreter: the first that brought in the demo
    and the demo modules it brought, or None."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *names], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] | None = json.loads(done.stdout)
    return answer


def demo_imports(source: str, module: str, is_package: bool) -> list[str]:
    """The modules of the demo that the import statements of `source` (the source of
    `module`) name, relative imports resolved."""
    package = module if is_package else module.rpartition(".")[0]
    named: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            named.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            named.append(base)
            named.extend(f"{base}.{alias.name}" for alias in node.names)
    return [name for name in named if is_demo(name)]


def test_the_walk_finds_the_library_and_the_demo() -> None:
    names = {name for name, _, _ in library()}
    assert {"pgcoord", "pgcoord.cli", "pgcoord.locks", "pgcoord.inbox"} <= names
    assert not any(is_demo(name) for name in names)
    demo = {name for name, _, _ in modules() if is_demo(name)}
    assert {DEMO, f"{DEMO}.main", f"{DEMO}.checks"} <= demo
    assert all(path.is_file() for _, path, _ in library())


def test_importing_the_library_imports_nothing_of_the_demo() -> None:
    # __main__ modules run a program when imported; the static test below covers them
    names = [name for name, _, _ in library() if not name.endswith(".__main__")]
    assert first_to_import_the_demo(names) is None


def test_the_probe_sees_an_import_of_the_demo() -> None:
    found = first_to_import_the_demo(["pgcoord", "pgcoord.locks", f"{DEMO}.checks"])
    assert found is not None
    assert found["module"] == f"{DEMO}.checks"
    assert f"{DEMO}.checks" in found["demo"]  # type: ignore[operator]


@pytest.mark.parametrize("module", library(), ids=lambda module: module[0])
def test_no_library_source_imports_the_demo(module: tuple[str, Path, bool]) -> None:
    name, path, is_package = module
    assert demo_imports(path.read_text(), name, is_package) == []


@pytest.mark.parametrize(
    ("source", "module", "is_package", "found"),
    [
        ("from .demo import main", "pgcoord.cli", False, ["pgcoord.demo", "pgcoord.demo.main"]),
        ("from . import demo", "pgcoord", True, ["pgcoord.demo"]),
        ("from pgcoord import demo, locks", "pgcoord.cli", False, ["pgcoord.demo"]),
        ("import pgcoord.demo.checks", "pgcoord.cli", False, ["pgcoord.demo.checks"]),
        ("from ..demo.checks import Check", "pgcoord.worker.runtime", False, [
            "pgcoord.demo.checks", "pgcoord.demo.checks.Check"
        ]),
        ("def f():\n    from pgcoord.demo import main", "pgcoord.cli", False, [
            "pgcoord.demo", "pgcoord.demo.main"
        ]),
        ("PASSTHROUGH = {'demo': ('pgcoord.demo.main', 'run the demo')}", "pgcoord.cli", False,
         []),
        ("from . import demonstration", "pgcoord", True, []),
        ("from .locks import lock_acquire", "pgcoord.cli", False, []),
    ],
)  # fmt: skip
def test_the_source_check_finds_imports_of_the_demo(
    source: str, module: str, is_package: bool, found: list[str]
) -> None:
    assert demo_imports(source, module, is_package) == found
