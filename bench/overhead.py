"""Driver overhead: client CPU per call through pgcoord's call functions beside bare
psycopg sending the same statement with the same parameters, for lock_acquire,
lock_release, message_ingest and campaign_complete_many (15 messages, as a campaign
worker completes them), on one connection with the clients' options.

    python -m bench.overhead [--calls 2000] [--rounds 7] [--placement split]

Within a round the two sides alternate call by call, bare first in odd rounds and the
driver first in even ones, so that drift on a shared machine hits both alike. Each call
is timed with time.process_time_ns (user + system CPU of this process, libpq included).
The process and the server backend are pinned to CPUs of their own when the server is
local (--placement). A profile (cProfile on a CPU clock) then shows where the driver's
extra CPU goes.

The server is DATABASE_URL when set, else an embedded PostgreSQL. The bench works in a
scratch database of its own, drops it at the end, and writes <output>.md and .json.
It measures; it exits 0 whether or not the target is met.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import itertools
import json
import os
import pstats
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg.types.json import Jsonb

from pgcoord import CampaignMessage, campaigns, config, inbox, locks, sql
from pgcoord.arrays import bigints

from . import driver, overhead_report, queues, report
from .database import ScratchDatabase, scratch_database, server
from .overhead_report import Samples
from .server_cpu import ServerCpu

ROOT = Path(__file__).resolve().parent.parent

DRIVER = "driver"
BARE = "bare"
SIDES = (DRIVER, BARE)
# in this order within a round: the releases free the keys the acquires took
CALLS = ("lock_acquire", "lock_release", "message_ingest", "campaign_complete_many")

# the arguments of every call, the same on both sides; the driver leaves `wait` to its
# default, which the bare side sends as the SQL function's default
OWNER = "bench-owner"
TTL = timedelta(minutes=2)
NO_WAIT = timedelta(0)
PROVIDER = "bench"
BODY = "Hello, is the blue one still available?"
PAYLOAD = {"from": "+15550100", "channel": "sms"}
DEBOUNCE = timedelta(seconds=10)
MAX_WAIT = timedelta(seconds=60)
BATCH = 15  # messages per campaign_complete_many: a campaign worker's batch
METRICS = [{"handler_ms": 12.345}] * BATCH  # a no-op handler's metrics, as the worker sends
CLAIM_CHUNK = 990  # messages per claim while the completions' claims are made (<= 10000)

# what a side left on the server: its live leases, its stored messages, and the campaign
# messages it sent (of the run named by the prefix)
SERVER_WORK: LiteralString = """
SELECT
    (SELECT count(*) FROM pgcoord.lock_status
     WHERE NOT expired AND starts_with(key, %(prefix)s)),
    (SELECT count(*) FROM pgcoord.messages
     WHERE provider = %(provider)s AND starts_with(provider_message_id, %(prefix)s)),
    (SELECT coalesce(sum(p.sent), 0) FROM pgcoord.campaign_progress AS p
     WHERE p.name = %(prefix)s)
"""

Call = Callable[[str], object]
# key -> the message ids and claim tokens one campaign_complete_many completes
Claims = dict[str, tuple[list[int], list[int]]]


def compact(value: Any) -> str:
    """JSON as the driver writes every JSON argument: without spaces (the same bytes on
    both sides)."""
    return json.dumps(value, separators=(",", ":"))


def hold(conn: psycopg.Connection[Any], claims: Claims, keys: dict[str, list[str]]) -> None:
    """For every side, a run named by its prefix with BATCH messages per key (the
    campaign bench's messages), claimed before the calls (CLAIM_CHUNK at a time), each
    key given BATCH of them."""
    for prefix, side_keys in keys.items():
        run_id = campaigns.campaign_create(conn, prefix)
        count = BATCH * len(side_keys)
        campaigns.campaign_enqueue(conn, run_id, queues.items(1, count))
        held: list[CampaignMessage] = []
        while len(held) < count:
            limit = min(CLAIM_CHUNK, count - len(held))
            held += campaigns.campaign_claim(conn, prefix, limit, run_id=run_id)
        for i, key in enumerate(side_keys):
            batch = held[i * BATCH : (i + 1) * BATCH]
            claims[key] = ([m.message_id for m in batch], [m.claim_token for m in batch])


def sides(conn: psycopg.Connection[Any], claims: Claims) -> dict[str, dict[str, Call]]:
    """For each call, its two sides as functions of one key: the driver's call function,
    and bare psycopg sending the statement of pgcoord.sql with the same parameters and
    fetching the row as a tuple. A key is a lock key, or a message id that is also its
    conversation key (one new conversation per message), or names BATCH claimed campaign
    messages in `claims` (bare psycopg sends their ids and tokens as lists, as its users
    do, and the metrics as the same JSON)."""

    def driver_lock_acquire(key: str) -> object:
        return locks.lock_acquire(conn, key, OWNER, TTL)

    def bare_lock_acquire(key: str) -> object:
        params = {"key": key, "owner": OWNER, "ttl": TTL, "wait": NO_WAIT}
        return conn.execute(sql.LOCK_ACQUIRE, params).fetchone()

    def driver_lock_release(key: str) -> object:
        return locks.lock_release(conn, key, OWNER)

    def bare_lock_release(key: str) -> object:
        return conn.execute(sql.LOCK_RELEASE, {"key": key, "owner": OWNER}).fetchone()

    def driver_message_ingest(key: str) -> object:
        return inbox.message_ingest(
            conn, PROVIDER, key, key, BODY, PAYLOAD, debounce=DEBOUNCE, max_wait=MAX_WAIT
        )

    def bare_message_ingest(key: str) -> object:
        params = {
            "provider": PROVIDER,
            "provider_message_id": key,
            "conversation_key": key,
            "body": BODY,
            "payload": Jsonb(PAYLOAD, dumps=compact),
            "debounce": DEBOUNCE,
            "max_wait": MAX_WAIT,
        }
        return conn.execute(sql.MESSAGE_INGEST, params).fetchone()

    def driver_campaign_complete_many(key: str) -> object:
        ids, tokens = claims[key]
        return campaigns.campaign_complete_many(conn, ids, tokens, METRICS)

    def bare_campaign_complete_many(key: str) -> object:
        ids, tokens = claims[key]
        params = {
            "message_ids": ids,
            "claim_tokens": tokens,
            "metrics": Jsonb(METRICS, dumps=compact),
        }
        return conn.execute(sql.CAMPAIGN_COMPLETE_MANY, params).fetchone()

    return {
        "lock_acquire": {DRIVER: driver_lock_acquire, BARE: bare_lock_acquire},
        "lock_release": {DRIVER: driver_lock_release, BARE: bare_lock_release},
        "message_ingest": {DRIVER: driver_message_ingest, BARE: bare_message_ingest},
        "campaign_complete_many": {
            DRIVER: driver_campaign_complete_many,
            BARE: bare_campaign_complete_many,
        },
    }


def alternate(first: Call, second: Call, keys: tuple[list[str], list[str]]) -> list[Samples]:
    """Call `first` and `second` in turn, each on its own keys, timing every call. A
    call's figures include one reading of each clock and storing them, alike for both."""
    n = len(keys[0])
    out = [Samples([0] * n, [0] * n), Samples([0] * n, [0] * n)]
    (cpu_a, wall_a), (cpu_b, wall_b) = ((s.cpu, s.wall) for s in out)
    keys_a, keys_b = keys
    cpu_clock, wall_clock = time.process_time_ns, time.perf_counter_ns
    gc.collect()
    cpu0, wall0 = cpu_clock(), wall_clock()
    for i in range(n):
        first(keys_a[i])
        cpu1, wall1 = cpu_clock(), wall_clock()
        cpu_a[i], wall_a[i] = cpu1 - cpu0, wall1 - wall0
        second(keys_b[i])
        cpu0, wall0 = cpu_clock(), wall_clock()
        cpu_b[i], wall_b[i] = cpu0 - cpu1, wall0 - wall1
    return out


def keys_of(prefix: str, calls: int) -> list[str]:
    """Keys starting with `prefix`; the prefixes of the two sides have the same length,
    and so have their keys."""
    return [f"{prefix}{i}" for i in range(calls)]


def server_work(conn: psycopg.Connection[Any], prefix: str) -> tuple[int, int, int]:
    row = conn.execute(SERVER_WORK, {"prefix": prefix, "provider": PROVIDER}).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def one_round(
    conn: psycopg.Connection[Any],
    calls: dict[str, dict[str, Call]],
    claims: Claims,
    round_no: int,
    n: int,
) -> tuple[dict[str, dict[str, Samples]], dict[str, Any]]:
    """Every call, both sides alternating. Also what each side left on the server after
    its acquires, releases, ingests and completions: n live leases, none, n stored
    messages, n * BATCH campaign messages sent."""
    order = (BARE, DRIVER) if round_no % 2 else (DRIVER, BARE)
    prefixes = {side: f"{side[0]}{round_no}-" for side in SIDES}
    keys = {side: keys_of(prefixes[side], n) for side in SIDES}
    hold(conn, claims, {prefixes[side]: keys[side] for side in SIDES})
    samples: dict[str, dict[str, Samples]] = {}
    work: dict[str, dict[str, int]] = {side: {} for side in SIDES}
    for call in CALLS:
        first, second = order
        measured = alternate(calls[call][first], calls[call][second], (keys[first], keys[second]))
        samples[call] = dict(zip(order, measured, strict=True))
        for side in SIDES:
            held, stored, sent = server_work(conn, prefixes[side])
            if call == "lock_acquire":
                work[side]["held_after_acquire"] = held
            elif call == "lock_release":
                work[side]["held_after_release"] = held
            elif call == "message_ingest":
                work[side]["stored"] = stored
            else:
                work[side]["sent"] = sent
    claims.clear()
    return samples, {"first": order[0], "server_work": work}


def same_work(detail: dict[str, Any], calls: int) -> bool:
    wanted = {
        "held_after_acquire": calls,
        "held_after_release": 0,
        "stored": calls,
        "sent": calls * BATCH,
    }
    return all(detail["server_work"][side] == wanted for side in SIDES)


def measure(
    conn: psycopg.Connection[Any], args: argparse.Namespace
) -> tuple[list[overhead_report.Round], dict[str, dict[str, Samples]]]:
    """An uncounted warm-up round, then the rounds. Returns each round's figures and
    every call's samples over all rounds."""
    claims: Claims = {}
    calls = sides(conn, claims)
    if args.warmup_calls:
        one_round(conn, calls, claims, 0, args.warmup_calls)
    rounds = []
    pooled = {call: {side: Samples() for side in SIDES} for call in CALLS}
    for round_no in range(1, args.rounds + 1):
        samples, detail = one_round(conn, calls, claims, round_no, args.calls)
        same = same_work(detail, args.calls)
        for call in CALLS:
            for side in SIDES:
                pooled[call][side].cpu += samples[call][side].cpu
                pooled[call][side].wall += samples[call][side].wall
            found = overhead_report.Round.of(
                round_no, call, detail["first"], samples[call], same, detail["server_work"]
            )
            rounds.append(found)
            print(
                f"round {round_no}/{args.rounds}  {call:<15} driver {found.driver_cpu_us:6.1f}"
                f"  bare {found.bare_cpu_us:6.1f} µs CPU/call  ratio {found.ratio:.3f}",
                file=sys.stderr,
                flush=True,
            )
    return rounds, pooled


def protocol_check(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """One call of each side in libpq's trace: the messages the client sends must be the
    same (statement, parameters, formats) once the key is masked, and each side must
    make one round trip."""
    claims: Claims = {}
    calls = sides(conn, claims)
    hold(conn, claims, {f"t{side[0]}-": [f"t{side[0]}-1"] for side in SIDES})
    found: dict[str, Any] = {}
    for call in CALLS:
        sent: dict[str, list[str]] = {}
        trips: dict[str, int] = {}
        for side in SIDES:
            key = f"t{side[0]}-1"
            lines = driver.protocol_trace(conn, lambda: calls[call][side](key))  # noqa: B023
            sent[side] = [line.replace(key, "<key>") for line in lines if line.startswith("F")]
            for name, values in zip(("ids", "tokens"), claims.get(key, ()), strict=False):
                text = bigints(values)  # as either side sends them
                assert isinstance(text, str)
                # the value with its length, and the length of its message: the sides'
                # ids and tokens may differ in digits
                masked = f"{len(text.encode())} '{text}'"
                sent[side] = [
                    re.sub(r"^F\t\d+\t", "F\t<length>\t", line.replace(masked, f"<{name}>"))
                    if masked in line
                    else line
                    for line in sent[side]
                ]
            trips[side] = sum(1 for line in lines if "\tReadyForQuery\t" in line)
        found[call] = {
            "same_messages": sent[DRIVER] == sent[BARE],
            "round_trips": trips,
            "driver_sent": sent[DRIVER],
            "bare_sent": sent[BARE],
        }
    return found


def profile(conn: psycopg.Connection[Any], calls_per_side: int) -> dict[str, list[list[Any]]]:
    """cProfile on a CPU clock over `calls_per_side` calls of each side of each call: per
    function, the calls and self CPU per call, µs, of each side."""
    claims: Claims = {}
    calls = sides(conn, claims)
    keys = {side: keys_of(f"p{side[0]}-", calls_per_side) for side in SIDES}
    hold(conn, claims, {f"p{side[0]}-": keys[side] for side in SIDES})
    found = {}
    for call in CALLS:
        by_side = {}
        for side in SIDES:
            by_side[side] = _profiled(calls[call][side], keys[side])
        names = sorted(set(by_side[DRIVER]) | set(by_side[BARE]))
        found[call] = [
            [name, *by_side[DRIVER].get(name, (0.0, 0.0)), *by_side[BARE].get(name, (0.0, 0.0))]
            for name in names
        ]
    return found


def _profiled(work: Call, keys: list[str]) -> dict[str, tuple[float, float]]:
    """Function -> (calls, self CPU µs), per call of `work`."""
    profiler = cProfile.Profile(time.process_time_ns, 1e-9)
    gc.collect()
    profiler.enable()
    for key in keys:
        work(key)
    profiler.disable()
    n = len(keys)
    found: dict[str, tuple[float, float]] = {}
    stats: dict[tuple[str, int, str], tuple[int, int, float, float, object]]
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    for (file, line, name), (_, calls, self_seconds, _, _) in stats.items():
        label = function_label(file, line, name)
        before = found.get(label, (0.0, 0.0))
        found[label] = (before[0] + calls / n, before[1] + 1e6 * self_seconds / n)
    return found


def function_label(file: str, line: int, name: str) -> str:
    """pstats' file:line(function), with the file relative to the site-packages, the
    checkout or the standard library; the bench's function of either side is one row."""
    if file == "~":
        return name  # a built-in, e.g. <method 'decode' of 'bytes' objects>
    path = Path(file)
    if "site-packages" in path.parts:
        shown = "/".join(path.parts[path.parts.index("site-packages") + 1 :])
    elif path == Path(__file__):
        if name.startswith((f"{DRIVER}_", f"{BARE}_")):
            return "bench/overhead.py(the side's function)"
        shown = "bench/overhead.py"
    elif path.is_relative_to(ROOT):
        shown = str(path.relative_to(ROOT)).removeprefix("driver/")
    else:
        shown = path.name  # the standard library, or <string> for generated code
    return f"{shown}:{line}({name})"


PLACEMENTS = ("split", "shared", "free")


def place(conn: psycopg.Connection[Any], placement: str) -> str:
    """Pin this process and the connection's server backend to CPUs, when the backend
    runs on this machine and this process may: on two CPUs of their own (split), on the
    same one (shared), or leave them to the scheduler (free). Returns what was done.

    Where they share a core, the server's work between two calls evicts the client's
    code and data from that core's caches, and the client's CPU per call grows with how
    much of both it touches, the driver's more than bare psycopg's."""
    cpus = sorted(os.sched_getaffinity(0))
    if placement == "free":
        return "free: client and server backend where the scheduler puts them"
    if ServerCpu.find(conn.info.backend_pid) is None:
        return "free: the server backend is not a process on this machine"
    client = cpus[0]
    backend = cpus[-1] if placement == "split" else client
    if placement == "split" and client == backend:
        return "free: only one CPU available"
    try:
        os.sched_setaffinity(conn.info.backend_pid, {backend})
    except OSError as exc:
        return f"free: the server backend cannot be pinned here ({exc.strerror})"
    os.sched_setaffinity(0, {client})
    return f"{placement}: client on CPU {client}, server backend on CPU {backend}"


def clock_cost_ns(reads: int = 10_000) -> float:
    """Median time between two readings of the CPU clock, ns."""
    clock = time.process_time_ns
    readings = [clock() for _ in range(reads)]
    return statistics.median(b - a for a, b in itertools.pairwise(readings))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = os.environ.get("DATABASE_URL") or None
    with server(url) as server_url, scratch_database(server_url) as db:
        result = describe(db, args, "DATABASE_URL" if url else "embedded")
        with psycopg.connect(db.url, **config.CONNECTION_OPTIONS) as conn:
            result["placement"] = place(conn, args.placement)
            rounds, pooled = measure(conn, args)
            result["protocol"] = protocol_check(conn)
            if args.profile:
                result["profile"] = profile(conn, args.calls)
    result["settings"]["clock_read_ns"] = clock_cost_ns()
    rows = overhead_report.summarise(rounds, pooled)
    found = overhead_report.targets(rows, rounds, result["protocol"])
    md, js = overhead_report.write(args.output, result, rows, rounds, found)

    report.print_outcome(overhead_report.summary_table(rows, "simple"), found, md, js, ROOT)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench overhead", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--calls", type=int, default=2000, help="calls per side, call and round (2000)"
    )
    parser.add_argument("--rounds", type=int, default=7, help="rounds (7)")
    parser.add_argument(
        "--warmup-calls",
        type=int,
        default=500,
        help="calls per side and call of an uncounted first round; 0: none (500)",
    )
    parser.add_argument(
        "--placement",
        choices=PLACEMENTS,
        default="split",
        help="CPUs of this process and the server backend, when the server is local: "
        "one each (split), the same one (shared), or the scheduler's choice (free) (split)",
    )
    parser.add_argument(
        "--no-profile",
        dest="profile",
        action="store_false",
        help="skip the profile of where the driver's extra CPU goes",
    )
    report.add_output(parser, "overhead")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.rounds < 1:
        parser.error("--calls and --rounds must be at least 1")
    if args.warmup_calls < 0:
        parser.error("--warmup-calls must not be negative")
    args.command = " ".join(
        ["scripts/bench overhead", *map(shlex.quote, argv if argv is not None else sys.argv[1:])]
    )
    return args


def describe(db: ScratchDatabase, args: argparse.Namespace, kind: str) -> dict[str, Any]:
    return {
        **report.environment(db, "overhead", args.command, kind),
        "connection_options": dict(config.CONNECTION_OPTIONS),
        "settings": {
            "calls": args.calls,
            "rounds": args.rounds,
            "warmup_calls": args.warmup_calls,
            "profile": args.profile,
            "placement": args.placement,
        },
    }


if __name__ == "__main__":
    sys.exit(main())
