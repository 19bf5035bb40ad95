"""Every pgcoord exception: server errors mapped by SQLSTATE (keeping the server's message
and hint), and those of leases, the worker's claims and handlers, and migrations. A call
given a Python value of the wrong type raises TypeError naming the argument instead
(`arguments`), and a role refused by the server is told the GRANT it needs
(`PermissionDenied`)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import PoolTimeout

from . import arguments

if TYPE_CHECKING:
    from .types import Batch, Lock


class PgcoordError(Exception):
    """Base of every pgcoord error."""

    sqlstate: str | None = None
    hint: str | None = None


class ServerError(PgcoordError):
    """A pgcoord function raised; `sqlstate`, the message and `hint` are the server's (None
    where the driver raised on its own, as a MigrationError may)."""

    def __init__(self, message: str, sqlstate: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.hint = hint


# what the database or the network did: logged in one line each (`fault_line`), not as
# a traceback, by the workers and the lease heartbeats
FAULTS = (psycopg.OperationalError, PoolTimeout, OSError, TimeoutError)


def fault_line(exc: BaseException) -> str:
    """An exception as one line: its class and its first line of text."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class InvalidArgument(ServerError):
    """22023: an argument has a value the function does not accept."""


class NullArgument(InvalidArgument):
    """22004: an argument with no NULL meaning was NULL."""


class Conflict(ServerError):
    """23505: the call contradicts what is already stored."""


class NotInstalled(ServerError):
    """3F000 / 42883 / 42P01: the pgcoord schema, a function or a view is missing (pgcoord is
    not installed, or an older release is): run `pgcoord migrate`. The message says so
    after the server's."""

    def __init__(self, message: str, sqlstate: str | None = None, hint: str | None = None) -> None:
        super().__init__(f"{message}: {MIGRATE}", sqlstate, hint)


MIGRATE = (
    "pgcoord, or the release with this call, is not installed in this database "
    "(pgcoord migrate, or alembic upgrade head, installs it)"
)


class PermissionDenied(ServerError):
    """42501: the role may not call this function or read this view. Calls reach pgcoord
    through the role pgcoord_client; the message ends with the GRANT that gives it to
    `role` (the refused role, `current_user` on the server) when `role` lacks it."""

    def __init__(
        self,
        message: str,
        sqlstate: str | None = None,
        hint: str | None = None,
        role: str | None = None,
    ) -> None:
        super().__init__(message, sqlstate, hint)
        self.role = role

    def advised(self, role: str, has_grant: bool, member: bool = False) -> PermissionDenied:
        """This refusal of `role`, with the GRANT it needs unless it has pgcoord_client
        already (then the refused object is no part of the API); for a member that does
        not inherit it (a NOINHERIT role), how to make it inherit."""
        message = str(self)
        name = quoted_role(role)
        if member and not has_grant:
            message += (
                f"; {name} is a member of {CLIENT_ROLE} but does not inherit it (a NOINHERIT "
                f"role): GRANT {CLIENT_ROLE} TO {name} WITH INHERIT TRUE (PostgreSQL 16 and "
                f"later; on 15, ALTER ROLE {name} INHERIT)"
            )
        elif not has_grant:
            message += f"; grant it with: GRANT {CLIENT_ROLE} TO {name}"
        return PermissionDenied(message, self.sqlstate, self.hint, role)


class LockNotAcquired(PgcoordError):
    """The lock is held by someone else; `holder` describes the live lease (its owner,
    token and expiry None while another transaction, not yet committed, is taking it)."""

    def __init__(self, key: str, holder: Lock, *, nested: bool = False) -> None:
        if holder.expires_at is None:
            held = ""
        else:
            held = f"(token {holder.token}) until {holder.expires_at.isoformat()}"
        if holder.owner is None:
            message = (
                f"lock {key!r} is being taken by another transaction, not yet committed "
                "(its holder is known once it commits)"
            )
        elif nested:
            message = (
                f"lock {key!r} is already held by a lock() block of this client under "
                f"{holder.owner!r} {held}: lock() is not re-entrant"
            )
        else:
            message = f"lock {key!r} is held by {holder.owner!r} {held}"
        super().__init__(message)
        self.key = key
        self.holder = holder


class LeaseLost(PgcoordError):
    """The lease ended before the block did: it expired, or another owner took the key
    (or, checked after its block, the block's exit released it)."""

    def __init__(self, key: str, owner: str, token: int, how: str = "was lost") -> None:
        super().__init__(f"lease of {key!r} by {owner!r} (token {token}) {how}")
        self.key = key
        self.owner = owner
        self.token = token


class ClaimLost(PgcoordError):
    """The claim of an item (a conversation's batch, a campaign message) is no longer
    current: its lease ran out and another claim took it, or it was already completed or
    given back. `item` is the claimed item (`batch` its name for a buffer's batch)."""

    def __init__(self, item: Any, what: str | None = None) -> None:
        if what is None:
            what = f"conversation {item.conversation_key!r}"
        super().__init__(f"claim {item.claim_token} of {what} is no longer current")
        self.item = item

    @property
    def batch(self) -> Batch:
        """The claimed batch (for a buffer's claim)."""
        batch: Batch = self.item
        return batch

    @property
    def burst(self) -> Batch:
        """Deprecated name of `batch`, kept for one release."""
        warnings.warn(
            "ClaimLost.burst is deprecated, use ClaimLost.batch", DeprecationWarning, stacklevel=2
        )
        return self.batch


class Retry(Exception):
    """Raised by a handler to give the item back with its own delay (a timedelta or
    seconds), for instance the provider's Retry-After on HTTP 429. It counts as a failed
    try, like any error. A buffer's batch comes back after `after`; a campaign message
    after its run's backoff, or after `after` when that is later (campaign_fail's
    p_retry_after)."""

    def __init__(self, after: timedelta | float, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.after = _delay(after, "Retry")


class FailForGood(Exception):
    """Raised by a handler when no retry can mend the item: the recipient does not exist
    or blocked the number, the provider refused the content for good. It counts as a
    try, and ends the item at once with the reason kept, whatever tries are left: a
    campaign message 'failed' (campaign_fail_for_good), a buffer's batch parked as dead
    (buffer_fail_for_good; buffer_revive brings it back)."""


class RateLimited(Exception):
    """Raised by a handler when the provider said "too many requests" (HTTP 429) with a
    Retry-After (a timedelta or seconds): the item is put back for `after` without spending
    a try (a campaign message is snoozed; a buffer's batch is given back untouched while
    the key's pause holds the fleet), and the worker's shared rate key is paused for
    `after`, so every worker of the fleet waits. A buffer worker without a rate budget
    has no pause to hold its batch back: it fails the batch with that delay, a try."""

    def __init__(self, after: timedelta | float, reason: str = "rate limited") -> None:
        super().__init__(reason)
        self.after = _delay(after, "RateLimited")


def _delay(after: timedelta | float, name: str) -> timedelta:
    """A handler's delay as a timedelta (seconds accepted); never negative."""
    if not isinstance(after, timedelta):
        after = timedelta(seconds=after)
    if after < timedelta(0):
        raise ValueError(f"{name} after must not be negative, got {after}")
    return after


class HandlerTimeout(Exception):
    """The handler ran past the worker's `timeout`."""


class MigrationError(ServerError):
    """The schema cannot be brought to the requested version; nothing was changed by the
    step that failed. `sqlstate` and `hint` are the server's when a release file raised,
    else None."""


# the role that holds the API's privileges (db/src/grants.sql)
CLIENT_ROLE = "pgcoord_client"

_BY_SQLSTATE: dict[str, type[ServerError]] = {
    "22023": InvalidArgument,
    "22004": NullArgument,
    "23505": Conflict,
    "3F000": NotInstalled,
    "42883": NotInstalled,
    "42P01": NotInstalled,
    "42501": PermissionDenied,
}


def translate(exc: psycopg.Error) -> Exception | None:
    """The pgcoord exception for a server error, or None for errors that are not ours. A
    type error of the server (no function takes these argument types), or a missing
    function, view or schema, is a TypeError naming the argument when the pgcoord call on
    the stack was given a value that does not fit its annotation (see `arguments`)."""
    sqlstate = exc.sqlstate
    if sqlstate in arguments.CHECKED_SQLSTATES:
        mistyped = arguments.mistyped()
        if mistyped is not None:
            return mistyped
    cls = _BY_SQLSTATE.get(sqlstate or "")
    if cls is None:
        return None
    return cls(exc.diag.message_primary or str(exc), sqlstate, exc.diag.message_hint)


def quoted_role(role: str) -> str:
    """A role name as SQL writes it: bare when it may be, else in double quotes."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", role):
        return role
    return '"' + role.replace('"', '""') + '"'


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise a mapped server error as its pgcoord exception (the original is chained)."""
    try:
        yield
    except psycopg.Error as exc:
        mapped = translate(exc)
        if mapped is None:
            raise
        raise mapped from exc


def unsendable(exc: Exception, params: Mapping[str, Any] | None, encoding: str) -> Exception:
    """psycopg refused to send a text: one holding a NUL character (PostgreSQL text cannot
    hold one), or one the connection's encoding cannot (a lone surrogate, say): a
    ValueError naming the argument; `exc` itself for anything else."""
    for name, value in (params or {}).items():
        if not isinstance(value, str):
            continue
        if "\x00" in value:
            return ValueError(f"{name}: a text holding a NUL character, which PostgreSQL cannot")
        try:
            value.encode(encoding)
        except (UnicodeEncodeError, LookupError) as why:
            return ValueError(
                f"{name}: a text the connection's encoding ({encoding}) cannot: {why}"
            )
    return exc
