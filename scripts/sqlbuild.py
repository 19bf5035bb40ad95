"""Build a release's files from db/src (used by freeze-release and the tests).

install.sql: db/src in a fixed order: schema and tables (db/src/*.sql, by name),
functions (db/src/functions/*.sql), views (db/src/views/*.sql), then db/src/grants.sql.

upgrade.sql (every release after the first): from the previous release, the hand-written
steps of db/src/upgrades/<version>.sql when there is one (what re-running db/src cannot
do: ALTER TABLE, DROP FUNCTION for a changed signature or result), then the same db/src
as install.sql. Every statement in db/src is idempotent (IF NOT EXISTS, OR REPLACE), so
re-running it on the previous release yields the fresh install's schema.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "driver"))

from pgcoord.migrations import INSTALL_LOCK  # noqa: E402  (the key migrate also takes)

SRC = ROOT / "db" / "src"
RELEASES = ROOT / "db" / "releases"

# Every release file: one transaction under the install lock, after a guard that the
# database holds what the file expects (v_installed is NULL where pgcoord is missing).
HEADER = """\
-- pgcoord {version}: {what}, generated from db/src by scripts/freeze-release.
-- Apply with: psql -v ON_ERROR_STOP=1 -f {file} "$DATABASE_URL"
-- One transaction: all or nothing. Safe to run again, and from several sessions at once.

BEGIN;

-- a run again says nothing of what already exists (CREATE ... IF NOT EXISTS notices)
SET LOCAL client_min_messages = warning;

DO $$
DECLARE
    v_installed text;
    v_owner text;
BEGIN
    -- the install lock, until the transaction ends (PERFORM: psql prints no row)
    PERFORM pg_advisory_xact_lock({lock});

    -- one role owns all of pgcoord: objects made by another would be that role's, and
    -- the owner of a schema made by another could replace pgcoord's functions
    SELECT pg_catalog.pg_get_userbyid(n.nspowner) INTO v_owner
    FROM pg_catalog.pg_namespace AS n
    WHERE n.nspname = 'pgcoord';
    IF v_owner <> current_user THEN
        RAISE EXCEPTION 'schema pgcoord belongs to %, and % is another role', v_owner, current_user
            USING ERRCODE = '42501',
            HINT = 'Install and upgrade pgcoord as the role that owns schema pgcoord (SET ROLE '
            || quote_ident(v_owner) || '), or drop a schema pgcoord that is not pgcoord''s.';
    END IF;
    IF to_regclass('pgcoord.schema_version') IS NOT NULL THEN
        SELECT v.version INTO v_installed
        FROM pgcoord.schema_version AS v
        ORDER BY v.installed_at DESC, v.version DESC
        LIMIT 1;
    END IF;
    IF {refuse} THEN
        RAISE EXCEPTION '{message}', coalesce(v_installed, 'none')
            USING ERRCODE = '55000', HINT = '{hint}';
    END IF;
END;
$$;
"""

INSTALL_GUARD = {
    "what": "install file",
    "file": "install.sql",
    "refuse": "v_installed <> '{version}'",
    "message": "pgcoord % is installed here; this file installs {version} afresh",
    "hint": "An older release upgrades with pgcoord migrate, alembic upgrade head, or the "
    "upgrade.sql of each later release in turn (psql -f); a release is never downgraded.",
}

UPGRADE_GUARD = {
    "what": "upgrade from {previous}",
    "file": "upgrade.sql",
    "refuse": "v_installed IS NULL OR v_installed NOT IN ('{previous}', '{version}')",
    "message": "this file upgrades pgcoord {previous} to {version}; found %",
    "hint": "pgcoord migrate and alembic upgrade head apply every step in turn; with psql, "
    "run the upgrade.sql of each release after the installed one, in order.",
}

FOOTER = """
INSERT INTO pgcoord.schema_version (version) VALUES ('{version}')
ON CONFLICT (version) DO NOTHING;

COMMIT;
"""


def sources() -> list[Path]:
    return [
        *sorted(SRC.glob("*.sql")),
        *sorted((SRC / "functions").glob("*.sql")),
        *sorted((SRC / "views").glob("*.sql")),
    ]


def ordered_sources() -> list[Path]:
    grants = SRC / "grants.sql"
    return [p for p in sources() if p != grants] + [grants]


def header(guard: dict[str, str], version: str, previous: str = "") -> str:
    fields = {k: v.format(version=version, previous=previous) for k, v in guard.items()}
    return HEADER.format(version=version, lock=INSTALL_LOCK, **fields)


def body() -> str:
    parts = []
    for path in ordered_sources():
        parts.append(f"\n-- {path.relative_to(ROOT)}\n{path.read_text().strip()}\n")
    return "".join(parts)


def build(version: str) -> str:
    """The install file of `version`: db/src as it is now."""
    return header(INSTALL_GUARD, version) + body() + FOOTER.format(version=version)


def build_upgrade(version: str, previous: str) -> str:
    """The upgrade file from `previous` to `version`."""
    steps = SRC / "upgrades" / f"{version}.sql"
    prelude = (
        f"\n-- {steps.relative_to(ROOT)}\n{steps.read_text().strip()}\n" if steps.exists() else ""
    )
    guarded = header(UPGRADE_GUARD, version, previous)
    return guarded + prelude + body() + FOOTER.format(version=version)


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def released() -> list[str]:
    found = [p.name for p in RELEASES.iterdir() if (p / "install.sql").is_file()]
    return sorted(found, key=version_key)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not re.fullmatch(r"\d+\.\d+\.\d+", argv[0]):
        print(
            "usage: sqlbuild.py VERSION (such as 0.3.0): writes db/releases/VERSION",
            file=sys.stderr,
        )
        return 2
    version = argv[0]
    folder = RELEASES / version
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "install.sql").write_text(build(version))
    print(f"wrote {(folder / 'install.sql').relative_to(ROOT)}")
    earlier = [v for v in released() if version_key(v) < version_key(version)]
    if earlier:
        (folder / "upgrade.sql").write_text(build_upgrade(version, earlier[-1]))
        print(f"wrote {(folder / 'upgrade.sql').relative_to(ROOT)} (from {earlier[-1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
