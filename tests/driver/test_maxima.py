"""The longest delays the driver knows (config.*_MAX, at which a worker caps a handler's
Retry or RateLimited) are the functions' own: each is accepted, and a microsecond more
is refused with InvalidArgument naming the argument. The SQL stays the one source; this
test keeps the copy honest."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from pgcoord import InvalidArgument, campaigns, config, inbox, rates

MICROSECOND = timedelta(microseconds=1)

# the constant, the argument it bounds, and a call with that delay (a stale claim where
# there is one: the arguments are checked first, and nothing is changed)
MAXIMA: list[tuple[str, str, Callable[[psycopg.Connection[Any], timedelta], object]]] = [
    (
        "BUFFER_RETRY_IN_MAX",
        "p_retry_in",
        lambda conn, delay: inbox.buffer_fail(conn, "nobody", 1, "e", delay),
    ),
    (
        "CAMPAIGN_DELAY_MAX",
        "p_retry_after",
        lambda conn, delay: campaigns.campaign_fail(conn, 1, 1, "e", delay),
    ),
    (
        "CAMPAIGN_DELAY_MAX",
        "p_delay",
        lambda conn, delay: campaigns.campaign_snooze(conn, 1, 1, delay),
    ),
    ("RATE_PAUSE_MAX", "p_for", lambda conn, delay: rates.rate_pause(conn, "k", delay)),
]


@pytest.mark.parametrize(("name", "argument", "call"), MAXIMA, ids=[m[1] for m in MAXIMA])
def test_the_drivers_maxima_are_the_functions(
    conn: psycopg.Connection[Any],
    name: str,
    argument: str,
    call: Callable[[psycopg.Connection[Any], timedelta], object],
) -> None:
    maximum: timedelta = getattr(config, name)
    call(conn, maximum)
    with pytest.raises(InvalidArgument, match=rf"^{argument} must be "):
        call(conn, maximum + MICROSECOND)
