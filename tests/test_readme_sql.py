"""The README's psql examples, copied as a reader copies them into a new database: every
statement runs without an error, and the columns that a comment shows for a statement
(a header such as `--  acquired | owner | ...`, or a view's `-- key, owner, ...`) are the
columns it returns, in order."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```sql\n(.*?)^```", re.DOTALL | re.MULTILINE)
# what the reader brings: the table of the fencing example
THEIRS = "CREATE TABLE conversations (id integer PRIMARY KEY, replied_at timestamptz)"


@dataclass
class Statement:
    text: str
    line: int
    shown: list[str] = field(default_factory=list)  # the columns a comment shows


def code_and_comment(line: str, quoted: bool) -> tuple[str, str, bool]:
    """A line split at its first `--` outside a quoted string (`quoted`: whether the line
    starts inside one), and whether the next line starts inside one."""
    for i, char in enumerate(line):
        if char == "'":
            quoted = not quoted
        elif line.startswith("--", i) and not quoted:
            return line[:i].rstrip(), line[i + 2 :].strip(), quoted
    return line.rstrip(), "", quoted


def columns(comment: str, statement: str) -> list[str]:
    """The columns a comment shows: a header's, or the list after a view's SELECT *."""
    if "|" in comment:
        return [name.strip() for name in comment.split("|")]
    if re.fullmatch(r"SELECT \* FROM pgcoord\.\w+;", statement.strip()) and "," in comment:
        return [name.strip() for name in comment.split(",")]
    return []


def statements(block: str, first_line: int) -> list[Statement]:
    found: list[Statement] = []
    pending: list[str] = []
    start = 0
    quoted = False
    for n, line in enumerate(block.splitlines(), start=first_line):
        code, comment, quoted = code_and_comment(line, quoted)
        if code:
            start = start or n
            pending.append(code)
            if code.endswith(";"):
                found.append(Statement("\n".join(pending), start))
                found[-1].shown = columns(comment, found[-1].text)
                pending, start = [], 0
        elif comment and found and not pending and not found[-1].shown:
            # the first comment under a statement may show its result's header
            found[-1].shown = columns(comment, found[-1].text)
    assert not pending, f"README.md:{start}: a statement without its semicolon"
    return found


def examples() -> list[Statement]:
    text = README.read_text()
    found: list[Statement] = []
    for match in BLOCK.finditer(text):
        if "pgcoord." in match.group(1):  # the API's examples, not the role setup
            line = text[: match.start(1)].count("\n") + 1
            found += statements(match.group(1), line)
    return found


def shown_matches(shown: list[str], returned: list[str]) -> bool:
    """`...` in a header stands for columns left out."""
    if "..." not in shown:
        return shown == returned
    cut = shown.index("...")
    head, tail = shown[:cut], shown[cut + 1 :]
    return returned[: len(head)] == head and (not tail or returned[-len(tail) :] == tail)


def test_the_parser_reads_the_examples() -> None:
    found = examples()
    assert len(found) >= 25
    shown = [s for s in found if s.shown]
    assert len(shown) >= 6, [s.text for s in shown]
    assert all("pgcoord." in s.text or "conversations" in s.text for s in found)


def test_the_psql_examples_run_as_written_on_a_new_database(conn: psycopg.Connection[Any]) -> None:
    conn.autocommit = True
    conn.execute(THEIRS)
    for statement in examples():
        where = f"README.md:{statement.line}"
        try:
            cursor = conn.execute(statement.text.encode())
        except psycopg.Error as exc:
            raise AssertionError(f"{where}: {statement.text}\n{exc.sqlstate}: {exc}") from None
        if statement.shown:
            returned = [column.name for column in cursor.description or ()]
            assert shown_matches(statement.shown, returned), (
                f"{where}: the comment shows {statement.shown}, the statement returns {returned}"
            )
