"""Build one release's install file from db/src (used by freeze-release and the tests).

The order is fixed: schema and tables (db/src/*.sql, by name), functions
(db/src/functions/*.sql), views (db/src/views/*.sql), then db/src/grants.sql.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "driver"))

from pgcoord.migrations import INSTALL_LOCK  # noqa: E402  (the key migrate also takes)

SRC = ROOT / "db" / "src"
RELEASES = ROOT / "db" / "releases"

HEADER = """\
-- pgcoord {version}: install file, generated from db/src by scripts/freeze-release.
-- Apply with: psql -v ON_ERROR_STOP=1 -f install.sql "$DATABASE_URL"
-- One transaction: all or nothing. Safe to run again, and from several sessions at once.

BEGIN;

SELECT pg_advisory_xact_lock({lock});

DO $$
DECLARE
    v_installed text;
BEGIN
    IF to_regclass('pgcoord.schema_version') IS NOT NULL THEN
        SELECT v.version INTO v_installed
        FROM pgcoord.schema_version AS v
        ORDER BY v.installed_at DESC, v.version DESC
        LIMIT 1;
        IF v_installed IS DISTINCT FROM '{version}' THEN
            RAISE EXCEPTION 'pgcoord % is installed here; this file installs {version} afresh',
                v_installed
                USING ERRCODE = '55000',
                HINT = 'Upgrade with pgcoord migrate or alembic upgrade head instead.';
        END IF;
    END IF;
END;
$$;
"""

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


def build(version: str) -> str:
    parts = [HEADER.format(version=version, lock=INSTALL_LOCK)]
    for path in ordered_sources():
        rel = path.relative_to(ROOT)
        parts.append(f"\n-- {rel}\n{path.read_text().strip()}\n")
    parts.append(FOOTER.format(version=version))
    return "".join(parts)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: freeze-release VERSION", file=sys.stderr)
        return 2
    version = argv[0]
    target = RELEASES / version / "install.sql"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(build(version))
    print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
