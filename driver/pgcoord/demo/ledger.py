"""The ledgers: what the demo's worker processes record, each scene in a schema of its
own, and how the demo reads it back.

Every scene's schema holds its roster (`Roster`):

  workers  one row per worker process, written once its pool is open (ready)

The storm's (`Ledger`) adds:

  claims   every burst a handler started, as claimed, logged before the "model" runs
  replies  the fenced side effect, one row per answered burst; no unique constraint,
           so a double answer would show instead of failing

A reply row commits in one transaction with `buffer_complete` (`complete_in`), so it
lands only while its claim is current, and a killed worker's reply never lands.

The campaign's (`TryLog`) adds:

  tries    every try of a campaign message a handler started: its claim token, attempt
           and worker, logged before the pipeline runs
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg.rows import class_row
from psycopg.sql import SQL, Composed, Identifier

from pgcoord import Batch, BufferStatus, CampaignMessage, complete_in
from pgcoord.inbox import buffer_status

from .plan import Plan

T = TypeVar("T")

ROSTER: LiteralString = (
    "CREATE SCHEMA {schema};"
    " CREATE TABLE {schema}.workers ("
    " name text PRIMARY KEY,"
    " pid integer NOT NULL,"
    " released boolean NOT NULL DEFAULT false,"
    " ready_at timestamptz NOT NULL DEFAULT clock_timestamp());"
)
STORM_TABLES: LiteralString = (
    " CREATE TABLE {schema}.claims ("
    " claim_token bigint PRIMARY KEY,"
    " conversation_key text NOT NULL,"
    " message_ids bigint[] NOT NULL,"
    " bodies text[] NOT NULL,"
    " first_message_at timestamptz NOT NULL,"
    " last_message_at timestamptz NOT NULL,"
    " attempt integer NOT NULL,"
    " worker text NOT NULL,"
    " claimed_at timestamptz NOT NULL DEFAULT clock_timestamp());"
    " CREATE TABLE {schema}.replies ("
    " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " claim_token bigint NOT NULL,"
    " conversation_key text NOT NULL,"
    " message_ids bigint[] NOT NULL,"
    " attempt integer NOT NULL,"
    " worker text NOT NULL,"
    " body text NOT NULL,"
    " replied_at timestamptz NOT NULL DEFAULT clock_timestamp())"
)
TRY_TABLES: LiteralString = (
    " CREATE TABLE {schema}.tries ("
    " message_id bigint NOT NULL,"
    " claim_token bigint NOT NULL,"  # one claim may hold several messages
    " attempt integer NOT NULL,"
    " worker text NOT NULL,"
    " started_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
    " PRIMARY KEY (message_id, claim_token))"
)
DROP_LEDGER: LiteralString = "DROP SCHEMA IF EXISTS {schema} CASCADE"
REGISTER: LiteralString = "INSERT INTO {schema}.workers (name, pid) VALUES (%(name)s, %(pid)s)"
RELEASED: LiteralString = "SELECT released FROM {schema}.workers WHERE name = %(name)s"
RELEASE: LiteralString = "UPDATE {schema}.workers SET released = true WHERE name = ANY(%(names)s)"
READY: LiteralString = "SELECT name FROM {schema}.workers"
LOG_CLAIM: LiteralString = (
    "INSERT INTO {schema}.claims (claim_token, conversation_key, message_ids, bodies,"
    " first_message_at, last_message_at, attempt, worker)"
    " VALUES (%(claim_token)s, %(conversation_key)s, %(message_ids)s, %(bodies)s,"
    " %(first_message_at)s, %(last_message_at)s, %(attempt)s, %(worker)s)"
)
# The fenced side effect; complete_in follows in the same transaction.
REPLY: LiteralString = (
    "INSERT INTO {schema}.replies (claim_token, conversation_key, message_ids, attempt,"
    " worker, body)"
    " VALUES (%(claim_token)s, %(conversation_key)s, %(message_ids)s, %(attempt)s,"
    " %(worker)s, %(body)s)"
)
CLAIMS: LiteralString = (
    "SELECT claim_token, conversation_key, message_ids, bodies, first_message_at,"
    " last_message_at, attempt, worker, claimed_at FROM {schema}.claims ORDER BY claim_token"
)
# claims logged within %(fresh)s, still held by their worker and not answered: a kill or
# a stop of that worker now lands mid-batch (while its model thinks)
HOLDING: LiteralString = (
    "SELECT c.claim_token, c.conversation_key, c.message_ids, c.bodies, c.first_message_at,"
    " c.last_message_at, c.attempt, c.worker, c.claimed_at FROM {schema}.claims AS c"
    " JOIN pgcoord.buffer_status AS s"
    " ON s.conversation_key = c.conversation_key AND s.claimed_by = c.worker"
    " WHERE c.claimed_at > clock_timestamp() - %(fresh)s"
    " AND NOT EXISTS (SELECT FROM {schema}.replies AS r WHERE r.claim_token = c.claim_token)"
    " ORDER BY c.claim_token"
)
LOG_TRY: LiteralString = (
    "INSERT INTO {schema}.tries (message_id, claim_token, attempt, worker)"
    " VALUES (%(message_id)s, %(claim_token)s, %(attempt)s, %(worker)s)"
)
TRIES: LiteralString = (
    "SELECT message_id, claim_token, attempt, worker, started_at FROM {schema}.tries"
    " ORDER BY claim_token, message_id"
)
REPLIES: LiteralString = (
    "SELECT claim_token, conversation_key, message_ids, attempt, worker, replied_at"
    " FROM {schema}.replies ORDER BY id"
)
ANSWERED: LiteralString = (
    "SELECT count(*) FROM {schema}.replies AS r CROSS JOIN LATERAL unnest(r.message_ids)"
)
STORED: LiteralString = (
    "SELECT id AS message_id, provider_message_id, conversation_key, state, received_at"
    " FROM pgcoord.messages WHERE provider = %(provider)s ORDER BY id"
)


@dataclass(frozen=True, slots=True)
class Claim:
    """A burst as a worker's handler received it (the claims log)."""

    claim_token: int
    conversation_key: str
    message_ids: list[int]
    bodies: list[str]
    first_message_at: datetime
    last_message_at: datetime
    attempt: int
    worker: str
    claimed_at: datetime

    def burst(self) -> Batch:
        return Batch(
            self.conversation_key,
            self.claim_token,
            self.message_ids,
            self.bodies,
            self.first_message_at,
            self.last_message_at,
            self.attempt,
        )


@dataclass(frozen=True, slots=True)
class Reply:
    """A row of the fenced side effect."""

    claim_token: int
    conversation_key: str
    message_ids: list[int]
    attempt: int
    worker: str
    replied_at: datetime


@dataclass(frozen=True, slots=True)
class Try:
    """A try of a campaign message as a worker's handler started it (the tries log)."""

    message_id: int
    claim_token: int
    attempt: int
    worker: str
    started_at: datetime


@dataclass(frozen=True, slots=True)
class Stored:
    """A message of the storm as pgcoord.messages holds it."""

    message_id: int
    provider_message_id: str
    conversation_key: str
    state: str
    received_at: datetime


class Roster:
    """A scene's schema and its roster of worker processes; the scene's own tables
    (`tables`) come with it. The worker processes write it (the async methods), the demo
    reads it (the sync ones)."""

    tables: LiteralString = ""

    def __init__(self, schema: str) -> None:
        self.name = schema
        self.schema = Identifier(schema)

    def query(self, text: LiteralString) -> Composed:
        return SQL(text).format(schema=self.schema)

    def rows(
        self,
        conn: psycopg.Connection[Any],
        row: type[T],
        text: LiteralString,
        params: Mapping[str, Any] | None = None,
    ) -> list[T]:
        """The rows of the query `text` on the schema, as `row`s."""
        with conn.cursor(row_factory=class_row(row)) as cur:
            return cur.execute(self.query(text), params).fetchall()

    def create(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(self.query(ROSTER + self.tables))

    def drop(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(self.query(DROP_LEDGER))

    async def register(self, conn: psycopg.AsyncConnection[Any], name: str, pid: int) -> None:
        """The worker `name` is ready."""
        await conn.execute(self.query(REGISTER), {"name": name, "pid": pid})

    async def is_released(self, conn: psycopg.AsyncConnection[Any], name: str) -> bool:
        """Whether the demo has let the gated worker `name` start claiming."""
        row = await (await conn.execute(self.query(RELEASED), {"name": name})).fetchone()
        return bool(row and row[0])

    def ready(self, conn: psycopg.Connection[Any]) -> set[str]:
        return {row[0] for row in conn.execute(self.query(READY))}

    def release(self, conn: psycopg.Connection[Any], names: Sequence[str]) -> None:
        """Let the gated workers `names` start claiming."""
        conn.execute(self.query(RELEASE), {"names": list(names)})


class Ledger(Roster):
    """The storm's schema: its roster, the claims log and the fenced replies."""

    tables = STORM_TABLES

    # written by the worker processes --------------------------------------------------
    async def log_claim(
        self, conn: psycopg.AsyncConnection[Any], burst: Batch, worker: str
    ) -> None:
        params = {
            "claim_token": burst.claim_token,
            "conversation_key": burst.conversation_key,
            "message_ids": burst.message_ids,
            "bodies": burst.bodies,
            "first_message_at": burst.first_message_at,
            "last_message_at": burst.last_message_at,
            "attempt": burst.attempt,
            "worker": worker,
        }
        await conn.execute(self.query(LOG_CLAIM), params)

    async def reply_fenced(
        self, conn: psycopg.AsyncConnection[Any], burst: Batch, worker: str
    ) -> None:
        """The fenced side effect: the reply row and the completion commit together, or,
        when the claim is no longer current (ClaimLost), neither."""
        params = {
            "claim_token": burst.claim_token,
            "conversation_key": burst.conversation_key,
            "message_ids": burst.message_ids,
            "attempt": burst.attempt,
            "worker": worker,
            "body": f"answer to {len(burst.message_ids)} message(s) by {worker}",
        }
        async with conn.transaction():
            await conn.execute(self.query(REPLY), params)
            await complete_in(conn, burst)

    # read by the demo -----------------------------------------------------------------
    def claims(self, conn: psycopg.Connection[Any]) -> list[Claim]:
        return self.rows(conn, Claim, CLAIMS)

    def holding(self, conn: psycopg.Connection[Any], fresh: timedelta) -> list[Claim]:
        """The claims logged within `fresh` that their worker still holds unanswered."""
        return self.rows(conn, Claim, HOLDING, {"fresh": fresh})

    def replies(self, conn: psycopg.Connection[Any]) -> list[Reply]:
        return self.rows(conn, Reply, REPLIES)

    def answered(self, conn: psycopg.Connection[Any]) -> int:
        """How many message ids the replies hold, repeats counted."""
        row = conn.execute(self.query(ANSWERED)).fetchone()
        return int(row[0]) if row else 0

    def drained(self, conn: psycopg.Connection[Any], plan: Plan) -> bool:
        """Nothing of the storm buffered and the replies hold as many ids as it sent."""
        return not buffered(conn, plan) and self.answered(conn) >= plan.messages


class TryLog(Roster):
    """The campaign's schema: its roster and the tries its handlers started."""

    tables = TRY_TABLES

    async def log_try(
        self, conn: psycopg.AsyncConnection[Any], message: CampaignMessage, worker: str
    ) -> None:
        params = {
            "message_id": message.message_id,
            "claim_token": message.claim_token,
            "attempt": message.attempt,
            "worker": worker,
        }
        await conn.execute(self.query(LOG_TRY), params)

    def tries(self, conn: psycopg.Connection[Any]) -> list[Try]:
        return self.rows(conn, Try, TRIES)


def stored(conn: psycopg.Connection[Any], plan: Plan) -> list[Stored]:
    """The storm's messages as pgcoord.messages holds them."""
    with conn.cursor(row_factory=class_row(Stored)) as cur:
        return cur.execute(STORED, {"provider": plan.provider}).fetchall()


def buffered(conn: psycopg.Connection[Any], plan: Plan) -> list[BufferStatus]:
    """The buffer_status rows of the storm's conversations."""
    return [s for s in buffer_status(conn) if s.conversation_key.startswith(plan.prefix)]
