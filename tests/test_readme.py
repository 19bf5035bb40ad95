"""The README's Python examples: each block is whole as written (it parses, and imports
what it uses), but for the names a reader brings, which each block names as theirs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
# what the reader brings: their database, their code, their clients and data
THEIRS = {
    *("DATABASE_URL", "conn", "send_reply", "bot", "whatsapp", "http", "GATEWAY", "recipients"),
    *("sid", "from_number", "body", "form"),  # a webhook's fields
}


def blocks() -> list[str]:
    found = BLOCK.findall(README.read_text())
    assert found, "the README has Python examples"
    return found


@pytest.mark.parametrize("n", range(len(blocks())))
def test_a_python_example_is_whole(n: int) -> None:
    source = blocks()[n]
    compile(source, f"README.md python block {n}", "exec")
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--isolated",
            "--select",
            "F821,F401",
            "--output-format",
            "concise",
            "--stdin-filename",
            f"block{n}.py",
            "-",
        ],
        input=source,
        capture_output=True,
        text=True,
        check=False,
    )
    undefined = set(re.findall(r"F821 Undefined name `(\w+)`", checked.stdout))
    unused = re.findall(r"F401 .*", checked.stdout)
    assert undefined <= THEIRS, f"block {n} uses names it does not define: {undefined - THEIRS}"
    assert not unused, f"block {n}: {unused}"
