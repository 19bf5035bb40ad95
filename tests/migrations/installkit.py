"""Helpers of the install tests: the three ways to install, and a catalog snapshot of
schema pgcoord to compare their results."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path
from types import ModuleType
from typing import Any

import alembic.command
import psycopg
from alembic.config import Config

from pgcoord import releases
from pgcoord.embedded import bin_dir

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

Snapshot = dict[str, list[tuple[Any, ...]]]

# One alembic revision per release, numbered in order (test_release_files checks it).
LATEST_REVISION = f"pgcoord_{len(releases.versions()):04d}"


def load_sqlbuild() -> ModuleType:
    """scripts/sqlbuild.py, the builder of the release files, as a module."""
    spec = importlib.util.spec_from_file_location("sqlbuild", ROOT / "scripts" / "sqlbuild.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a program from the repository root; DATABASE_URL is never inherited."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, **kwargs
    )


def psql_argv(url: str, path: Path) -> list[str]:
    return [
        str(bin_dir() / "psql"),
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-v",
        "VERBOSITY=verbose",
        "-f",
        str(path),
        url,
    ]


def install_file(version: str | None = None) -> Path:
    return releases.releases_dir() / (version or releases.latest()) / "install.sql"


def install_with_psql(url: str, version: str | None = None) -> None:
    done = run(psql_argv(url, install_file(version)))
    assert done.returncode == 0, done.stderr


def migrate_argv(url: str, *extra: str) -> list[str]:
    return [str(VENV_BIN / "pgcoord"), "migrate", "--database-url", url, *extra]


def install_with_cli(url: str) -> str:
    done = run(migrate_argv(url))
    assert done.returncode == 0, done.stderr
    return done.stdout


def alembic_argv(url: str, *command: str) -> list[str]:
    return [str(VENV_BIN / "alembic"), "-x", f"url={url}", *command]


def install_with_alembic(url: str) -> None:
    done = run(alembic_argv(url, "upgrade", "head"))
    assert done.returncode == 0, done.stderr


def alembic_config(url: str, script_location: Path | None = None) -> Config:
    """The configuration `alembic -x url=URL` makes from alembic.ini, for in-process runs
    (a second of interpreter start saved per run)."""
    config = Config(str(ROOT / "alembic.ini"), cmd_opts=Namespace(x=[f"url={url}"]))
    if script_location is not None:
        config.set_main_option("script_location", str(script_location))
    return config


def alembic_upgrade(url: str, target: str = "head", script_location: Path | None = None) -> None:
    alembic.command.upgrade(alembic_config(url, script_location), target)


def alembic_revisions(url: str) -> list[str]:
    """The revisions recorded in the alembic version table of pgcoord (public schema)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version_num FROM public.pgcoord_alembic_version").fetchall()
    return [row[0] for row in rows]


# Everything in schema pgcoord that an install defines, in a form that compares equal
# between two databases with the same schema (no oids, no timestamps, no data).
SNAPSHOT_QUERIES: dict[str, str] = {
    "schema": """
        SELECT n.nspname, pg_get_userbyid(n.nspowner),
               (SELECT array_agg(a ORDER BY a) FROM unnest(n.nspacl::text[]) AS a),
               obj_description(n.oid, 'pg_namespace')
        FROM pg_namespace AS n WHERE n.nspname = 'pgcoord'
    """,
    "relations": """
        SELECT c.relname, c.relkind, c.relpersistence, c.reloptions,
               c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner),
               (SELECT array_agg(a ORDER BY a) FROM unnest(c.relacl::text[]) AS a),
               obj_description(c.oid, 'pg_class')
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'pgcoord'
        ORDER BY c.relname
    """,
    "columns": """
        SELECT c.relname,
               row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
               a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
               co.collname, col_description(c.oid, a.attnum),
               (SELECT array_agg(x ORDER BY x) FROM unnest(a.attacl::text[]) AS x)
        FROM pg_attribute AS a
        JOIN pg_class AS c ON c.oid = a.attrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN pg_collation AS co
            ON co.oid = a.attcollation AND a.attcollation <> 0
        WHERE n.nspname = 'pgcoord' AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY c.relname, a.attnum
    """,
    "constraints": """
        SELECT con.conrelid::regclass::text, con.conname, con.contype,
               pg_get_constraintdef(con.oid)
        FROM pg_constraint AS con JOIN pg_namespace AS n ON n.oid = con.connamespace
        WHERE n.nspname = 'pgcoord'
        ORDER BY 1, 2
    """,
    "indexes": """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
        FROM pg_index AS i
        JOIN pg_class AS c ON c.oid = i.indrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'pgcoord'
        ORDER BY 1
    """,
    "sequences": """
        SELECT s.seqrelid::regclass::text, format_type(s.seqtypid, NULL), s.seqstart,
               s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle,
               (SELECT d.refobjid::regclass::text || '.' || d.refobjsubid
                FROM pg_depend AS d
                WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
        FROM pg_sequence AS s
        JOIN pg_class AS c ON c.oid = s.seqrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'pgcoord'
        ORDER BY 1
    """,
    "views": """
        SELECT c.relname, pg_get_viewdef(c.oid, true)
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'pgcoord' AND c.relkind IN ('v', 'm')
        ORDER BY 1
    """,
    "functions": """
        SELECT p.oid::regprocedure::text, p.prokind,
               CASE WHEN p.prokind <> 'a' THEN pg_get_functiondef(p.oid) END,
               p.proconfig, p.prosecdef, p.provolatile, p.proleakproof, p.proparallel,
               p.proisstrict, pg_get_userbyid(p.proowner),
               (SELECT array_agg(a ORDER BY a) FROM unnest(p.proacl::text[]) AS a),
               obj_description(p.oid, 'pg_proc')
        FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname = 'pgcoord'
        ORDER BY 1
    """,
    "triggers": """
        SELECT t.tgrelid::regclass::text, t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger AS t
        JOIN pg_class AS c ON c.oid = t.tgrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'pgcoord' AND NOT t.tgisinternal
        ORDER BY 1, 2
    """,
    "policies": """
        SELECT pol.polrelid::regclass::text, pol.polname, pol.polcmd, pol.polpermissive,
               pg_get_expr(pol.polqual, pol.polrelid),
               pg_get_expr(pol.polwithcheck, pol.polrelid)
        FROM pg_policy AS pol
        JOIN pg_class AS c ON c.oid = pol.polrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'pgcoord'
        ORDER BY 1, 2
    """,
    "types": """
        SELECT t.typname, t.typtype, format_type(t.typbasetype, t.typtypmod),
               (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder)
                FROM pg_enum AS e WHERE e.enumtypid = t.oid),
               obj_description(t.oid, 'pg_type')
        FROM pg_type AS t JOIN pg_namespace AS n ON n.oid = t.typnamespace
        WHERE n.nspname = 'pgcoord' AND t.typtype IN ('b', 'd', 'e', 'm', 'r')
        ORDER BY 1
    """,
    "default_privileges": """
        SELECT pg_get_userbyid(d.defaclrole), d.defaclobjtype,
               (SELECT array_agg(a ORDER BY a) FROM unnest(d.defaclacl::text[]) AS a)
        FROM pg_default_acl AS d JOIN pg_namespace AS n ON n.oid = d.defaclnamespace
        WHERE n.nspname = 'pgcoord'
        ORDER BY 1, 2
    """,
    "client_role": """
        SELECT r.rolname, r.rolcanlogin, r.rolinherit
        FROM pg_roles AS r WHERE r.rolname = 'pgcoord_client'
    """,
    "schema_version": """
        SELECT v.version FROM pgcoord.schema_version AS v ORDER BY v.version
    """,
}


def snapshot(url: str) -> Snapshot:
    """The catalog snapshot of schema pgcoord in the database of `url`."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            name: [tuple(row) for row in conn.execute(query).fetchall()]
            for name, query in SNAPSHOT_QUERIES.items()
        }


def without_versions(snap: Snapshot) -> Snapshot:
    """A database installed release by release also lists the versions it went through."""
    return {name: rows for name, rows in snap.items() if name != "schema_version"}


def assert_same_schema(actual: Snapshot, expected: Snapshot) -> None:
    """Equal, section by section (so a difference names its section)."""
    assert actual.keys() == expected.keys()
    for section in expected:
        assert actual[section] == expected[section], f"section {section!r} differs"


def assert_complete(snap: Snapshot) -> None:
    """A snapshot of an actual install: not an empty schema compared with another."""
    functions = {row[0] for row in snap["functions"]}
    assert "pgcoord.lock_acquire(text,text,interval,interval)" in functions
    assert {row[0] for row in snap["views"]} >= {"lock_status"}
    assert {row[0] for row in snap["relations"]} >= {"locks", "schema_version", "lock_token"}
    assert snap["schema_version"] == [(releases.latest(),)]
