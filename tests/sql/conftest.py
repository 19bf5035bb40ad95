"""The SQL tests' connections give up on a statement after STATEMENT_TIMEOUT, so a call
that hangs fails its test instead of stalling the run."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from sqlkit import STATEMENT_TIMEOUT


@pytest.fixture
def conn(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("SELECT set_config('statement_timeout', %s, false)", (STATEMENT_TIMEOUT,))
    return conn
