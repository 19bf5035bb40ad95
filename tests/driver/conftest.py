"""Fixtures of the driver tests: a sync Client on the test's database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pgcoord import Client


@pytest.fixture
def client(db_url: str) -> Iterator[Client]:
    """A Client with its own pool, large enough for the concurrent tests."""
    with Client(db_url, max_size=16) as c:
        yield c
