"""Run a pgbench script for a fixed time and read its figures."""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent / "pgbench"
# a pgbench variable in a script (`:name`, not a `::type` cast)
_VARIABLE = re.compile(r"(?<!:):([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True, slots=True)
class PgbenchResult:
    tps: float  # script runs per second, without the connection time
    transactions: int  # script runs completed
    latency_ms: float  # average time of one script run
    client_cpu: float  # CPU seconds pgbench used (user + system), connections included
    statement_latencies_ms: tuple[tuple[str, float], ...]  # with `per_statement` only


def pgbench_path() -> str:
    """The embedded server's pgbench (PostgreSQL 18, talks to older servers too), else
    the first one on PATH."""
    try:
        from pgcoord.embedded import bin_dir

        embedded = bin_dir() / "pgbench"
        if embedded.is_file():
            return str(embedded)
    except ImportError:
        pass
    found = shutil.which("pgbench")
    if found is None:
        raise RuntimeError("no pgbench: install the `embedded` extra or PostgreSQL's client")
    return found


def pgbench_version() -> str:
    out = subprocess.run([pgbench_path(), "--version"], capture_output=True, text=True)
    return out.stdout.strip()


def run_script(
    url: str,
    script: str,
    clients: int,
    seconds: int | None,
    *,
    transactions: int | None = None,
    per_statement: bool = False,
    options: str | None = None,
    variables: dict[str, str] | None = None,
    protocol: str = "prepared",
    rate: int | None = None,
) -> PgbenchResult:
    """Run bench/pgbench/<script>.sql with `clients` connections for `seconds` (or
    `transactions` script runs per client), each statement in its own transaction, with
    prepared statements (`protocol` "extended": unprepared, each statement parsed and
    planned again, as a client that never prepares sends it). `options` goes to the
    server sessions as PGOPTIONS (e.g. "-c synchronous_commit=off"); `variables` are the
    script's :names (--define); `rate` caps the script runs per second (--rate), as a
    producer at a fixed pace."""
    threads = max(1, min(clients, os.cpu_count() or 1))
    command = [
        pgbench_path(),
        "--no-vacuum",
        f"--protocol={protocol}",
        f"--client={clients}",
        f"--jobs={threads}",
        f"--time={seconds}" if transactions is None else f"--transactions={transactions}",
        f"--file={SCRIPTS / (script + '.sql')}",
    ]
    command += [f"--define={name}={value}" for name, value in (variables or {}).items()]
    if per_statement:
        command.append("--report-per-command")
    if rate is not None:
        command.append(f"--rate={rate}")
    command.append(url)
    env = dict(os.environ)
    if options:
        env["PGOPTIONS"] = options
    before = _children_cpu()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    client_cpu = _children_cpu() - before
    if done.returncode != 0:
        raise RuntimeError(f"pgbench failed ({done.returncode}): {done.stderr.strip()}")
    return parse_output(done.stdout, client_cpu)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_output(out: str, client_cpu: float = 0.0) -> PgbenchResult:
    tps = re.search(r"^tps = ([0-9.]+) \(without initial connection time\)", out, re.M)
    transactions = re.search(r"^number of transactions actually processed: (\d+)", out, re.M)
    latency = re.search(r"^latency average = ([0-9.]+) ms", out, re.M)
    if tps is None or transactions is None or latency is None:
        raise RuntimeError(f"unexpected pgbench output:\n{out}")
    failed = re.search(r"^number of failed transactions: (\d+)", out, re.M)
    if failed is not None and int(failed.group(1)) > 0:
        raise RuntimeError(f"pgbench reported failed transactions:\n{out}")
    return PgbenchResult(
        tps=float(tps.group(1)),
        transactions=int(transactions.group(1)),
        latency_ms=float(latency.group(1)),
        client_cpu=client_cpu,
        statement_latencies_ms=statement_latencies(out),
    )


def statement_latencies(out: str) -> tuple[tuple[str, float], ...]:
    """The per-statement block of --report-per-command: the first line of each command
    and its average latency in ms (the failure and retry columns are left out)."""
    lines = out.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if line.startswith("statement latencies")), None
    )
    if start is None:
        return ()
    found: list[tuple[str, float]] = []
    for line in lines[start + 1 :]:
        match = re.match(r"^\s+([0-9.]+)(?:\s+\d+)*\s+(\S.*)$", line)
        if match is None:
            break
        found.append((match.group(2).strip(), float(match.group(1))))
    return tuple(found)


def script_statements(script: str) -> list[str]:
    """The SQL statements of bench/pgbench/<script>.sql, in order, for a client other than
    pgbench to run the same SQL: comments and meta-commands (\\set, \\gset, \\if, ...)
    dropped, and each pgbench variable `:name` a psycopg parameter `%(name)s`."""
    statements: list[str] = []
    lines: list[str] = []
    for line in (SCRIPTS / f"{script}.sql").read_text().splitlines():
        if line.lstrip().startswith("\\"):  # a meta-command ends the statement before it
            if any(text.strip() for text in lines):
                statements.append("\n".join(lines).strip().removesuffix(";"))
            lines = []
        elif not line.lstrip().startswith("--"):
            lines.append(_VARIABLE.sub(r"%(\1)s", line.replace("%", "%%")))
    if any(text.strip() for text in lines):
        statements.append("\n".join(lines).strip().removesuffix(";"))
    return statements
