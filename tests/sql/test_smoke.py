from __future__ import annotations

from typing import Any

import psycopg


def test_installed_version_is_the_newest_release(conn: psycopg.Connection[Any]) -> None:
    from pgcoord import releases

    row = conn.execute("SELECT pgcoord.version()").fetchone()
    assert row is not None
    assert row[0] == releases.latest()
