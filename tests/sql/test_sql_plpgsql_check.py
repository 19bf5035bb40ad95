"""plpgsql_check over every PL/pgSQL function of the schema: the bodies that sqlfluff
cannot see into. Zero findings at every level it reports."""

from __future__ import annotations

import pytest
from psycopg import sql
from sqlkit import Conn, scalar

# The types the callers pass to a polymorphic (anyelement) argument.
ANYELEMENT_TYPES = ("text", "interval", "bigint", "integer", "double precision", "jsonb")


def test_plpgsql_check_finds_nothing(conn: Conn) -> None:
    available = scalar(
        conn, "SELECT count(*) FROM pg_available_extensions WHERE name = 'plpgsql_check'"
    )
    if not available:
        version = scalar(conn, "SHOW server_version")
        pytest.skip(
            f"plpgsql_check is not installed on this server (PostgreSQL {version}); "
            "scripts/plpgsql-check-install installs it for a system server"
        )
    conn.execute("CREATE EXTENSION plpgsql_check")
    # The keyword argument naming the anyelement type is spelt 'anyelememttype' in some
    # releases: take it from the catalog.
    type_argument = scalar(
        conn,
        "SELECT n FROM pg_proc AS p, unnest(p.proargnames) AS n"
        " WHERE p.proname = 'plpgsql_check_function_tb' AND n LIKE 'anyelem%%type' LIMIT 1",
    )
    functions = conn.execute(
        "SELECT p.oid::regprocedure::text,"
        " 'anyelement'::regtype = ANY (p.proargtypes::regtype[]) AS polymorphic"
        " FROM pg_proc AS p JOIN pg_language AS l ON l.oid = p.prolang"
        " WHERE p.pronamespace = 'pgcoord'::regnamespace AND l.lanname = 'plpgsql'"
        " ORDER BY 1"
    ).fetchall()
    assert len(functions) >= 4, functions

    findings = []
    for signature, polymorphic in functions:
        for element_type in ANYELEMENT_TYPES if polymorphic else (None,):
            hint = sql.SQL("")
            if element_type:
                hint = sql.SQL(", {} => %(type)s::regtype").format(sql.Identifier(type_argument))
            query = sql.SQL(
                "SELECT level, lineno, message, detail, hint"
                " FROM plpgsql_check_function_tb(%(function)s::regprocedure,"
                " fatal_errors => false, all_warnings => true{})"
            ).format(hint)
            rows = conn.execute(query, {"function": signature, "type": element_type}).fetchall()
            findings += [(signature, element_type, *row) for row in rows]
    assert findings == []
