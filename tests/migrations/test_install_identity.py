"""The three ways to install give the same schema, and installing again changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from urllib.parse import quote, urlencode

import psycopg
import pytest
from installkit import (
    LATEST_REVISION,
    alembic_revisions,
    alembic_upgrade,
    assert_complete,
    assert_same_schema,
    install_with_alembic,
    install_with_cli,
    install_with_psql,
    snapshot,
    without_versions,
)
from psycopg.conninfo import conninfo_to_dict

from pgcoord import cli, migrations, releases
from pgcoord.locks import lock_acquire, lock_status


def as_url(conninfo: str) -> str:
    """The postgresql:// URL form of a conninfo (alembic is given both forms)."""
    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    user = quote(params.pop("user", ""), safe="")
    password = params.pop("password", "")
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    host = params.pop("host", "")
    port = params.pop("port", "")
    dbname = quote(params.pop("dbname", ""), safe="")
    netloc = host if host and not host.startswith("/") else ""
    if host.startswith("/"):
        params["host"] = host
    if port:
        netloc += f":{port}"
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql://{auth}{netloc}/{dbname}{query}"


def alembic_table_schemas(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT n.nspname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
            " WHERE c.relname LIKE '%alembic_version' AND c.relkind = 'r' ORDER BY 1"
        ).fetchall()
    return [row[0] for row in rows]


def test_psql_migrate_and_alembic_install_the_same_schema(new_db: Callable[[], str]) -> None:
    by_psql, by_cli, by_alembic = new_db(), new_db(), new_db()

    install_with_psql(by_psql)
    output = install_with_cli(by_cli)
    install_with_alembic(as_url(by_alembic))

    reference = snapshot(by_psql)
    assert_complete(reference)
    assert f"installed pgcoord {releases.latest()}" in output
    assert_same_schema(snapshot(by_cli), reference)
    # alembic applies every release in turn: the same schema, a longer version history
    by_alembic_snapshot = snapshot(by_alembic)
    assert by_alembic_snapshot["schema_version"] == [(version,) for version in releases.versions()]
    assert_same_schema(without_versions(by_alembic_snapshot), without_versions(reference))
    # alembic's bookkeeping stays outside schema pgcoord
    assert alembic_table_schemas(by_alembic) == ["public"]
    assert alembic_revisions(by_alembic) == [LATEST_REVISION]
    assert alembic_table_schemas(by_psql) == []


def test_installing_again_changes_nothing_and_keeps_the_data(
    new_db: Callable[[], str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = new_db()
    install_with_psql(url)
    with psycopg.connect(url, autocommit=True) as conn:
        held = lock_acquire(conn, "install-again", "worker-1", ttl=timedelta(hours=1))
    assert held.acquired
    before = snapshot(url)

    install_with_psql(url)
    assert migrations.migrate(url) == (releases.latest(), releases.latest())
    assert cli.main(["migrate", "--database-url", url]) == 0
    assert "already installed" in capsys.readouterr().out
    # alembic adopts a database installed by other means, then has nothing left to do
    alembic_upgrade(url)
    assert alembic_revisions(url) == [LATEST_REVISION]
    alembic_upgrade(url)

    assert_same_schema(snapshot(url), before)
    with psycopg.connect(url, autocommit=True) as conn:
        [kept] = lock_status(conn)
        again = lock_acquire(conn, "install-again-2", "worker-2")
    assert (kept.key, kept.owner, kept.token) == ("install-again", "worker-1", held.token)
    assert kept.expires_at == held.expires_at
    assert again.token > held.token  # the token sequence was not reset
    assert alembic_revisions(url) == [LATEST_REVISION]
