"""Exceptions: server errors mapped by SQLSTATE, keeping the server's message and hint."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:
    from .types import Lock


class PgcoordError(Exception):
    """Base of every pgcoord error."""

    sqlstate: str | None = None
    hint: str | None = None


class ServerError(PgcoordError):
    """A pgcoord function raised; `sqlstate`, the message and `hint` are the server's."""

    def __init__(self, message: str, sqlstate: str | None, hint: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.hint = hint


class InvalidArgument(ServerError):
    """22023: an argument has a value the function does not accept."""


class NullArgument(InvalidArgument):
    """22004: an argument with no NULL meaning was NULL."""


class Conflict(ServerError):
    """23505: the call contradicts what is already stored."""


class NotInstalled(ServerError):
    """3F000 / 42883: the pgcoord schema or function is missing: run `pgcoord migrate`."""


class LockNotAcquired(PgcoordError):
    """The lock is held by someone else; `holder` describes the live lease."""

    def __init__(self, key: str, holder: Lock) -> None:
        super().__init__(
            f"lock {key!r} is held by {holder.owner!r} "
            f"(token {holder.token}) until {holder.expires_at.isoformat()}"
        )
        self.key = key
        self.holder = holder


_BY_SQLSTATE: dict[str, type[ServerError]] = {
    "22023": InvalidArgument,
    "22004": NullArgument,
    "23505": Conflict,
    "3F000": NotInstalled,
    "42883": NotInstalled,
}


def translate(exc: psycopg.Error) -> PgcoordError | None:
    """The pgcoord exception for a server error, or None for errors that are not ours."""
    sqlstate = exc.sqlstate
    cls = _BY_SQLSTATE.get(sqlstate or "")
    if cls is None:
        return None
    return cls(exc.diag.message_primary or str(exc), sqlstate, exc.diag.message_hint)


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
