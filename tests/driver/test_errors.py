"""Every public exception lives in pgcoord.errors and is exported from pgcoord; a missing
relation (an older release, or no pgcoord) is NotInstalled like a missing function."""

from __future__ import annotations

import inspect
from typing import Any

import psycopg
import pytest

import pgcoord
from pgcoord import errors, inbox, locks, migrations


def exceptions(namespace: dict[str, Any]) -> dict[str, type[BaseException]]:
    return {
        name: value
        for name, value in namespace.items()
        if inspect.isclass(value) and issubclass(value, BaseException) and not name.startswith("_")
    }


def test_every_exception_is_defined_in_errors_and_exported() -> None:
    defined = {
        name: cls
        for name, cls in exceptions(vars(errors)).items()
        if cls.__module__ == errors.__name__
    }
    exported = exceptions({name: getattr(pgcoord, name) for name in pgcoord.__all__})
    assert exported == defined
    assert {"LeaseLost", "ClaimLost", "Retry", "HandlerTimeout", "MigrationError"} <= set(defined)


def test_migration_error_is_a_server_error_with_its_fields() -> None:
    with pytest.raises(pgcoord.ServerError) as caught:
        migrations.plan(None, "7.7.7")
    assert type(caught.value) is pgcoord.MigrationError
    assert (caught.value.sqlstate, caught.value.hint) == (None, None)


def test_a_missing_view_is_not_installed(empty_db_url: str) -> None:
    migrations.migrate(empty_db_url, "0.1.0")  # no inbox: no view pgcoord.buffer_status
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert locks.lock_status(conn) == []
        with pytest.raises(pgcoord.NotInstalled) as caught:
            inbox.buffer_status(conn)
    assert caught.value.sqlstate == "42P01"
    assert isinstance(caught.value.__cause__, psycopg.errors.UndefinedTable)
    assert str(caught.value).endswith(
        ": pgcoord, or the release with this call, is not installed in this database "
        "(pgcoord migrate, or alembic upgrade head, installs it)"
    )


def test_no_schema_is_not_installed(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        for call in (locks.lock_status, inbox.buffer_status, inbox.buffer_due_in):
            with pytest.raises(pgcoord.NotInstalled) as caught:
                call(conn)
            assert caught.value.sqlstate in ("3F000", "42P01", "42883"), call
        assert migrations.installed_version(conn) is None
