"""pgcoord 0.1.0: install the frozen release db/releases/0.1.0/ (its install.sql).

Revision ID: pgcoord_0001
Revises:
Create Date: 2025-11-22
"""

from __future__ import annotations

from alembic import op, util

from pgcoord.migrations import apply_release

revision = "pgcoord_0001"
down_revision = None
branch_labels = ("pgcoord",)
depends_on = None

RELEASE = "0.1.0"


def upgrade() -> None:
    # The release file is one transaction of its own (BEGIN ... COMMIT): run it as-is on
    # the raw psycopg connection, outside alembic's transaction.
    with op.get_context().autocommit_block():
        apply_release(op.get_bind().connection.driver_connection, RELEASE)


def downgrade() -> None:
    raise util.CommandError(
        f"pgcoord {RELEASE} cannot be downgraded; to remove pgcoord: DROP SCHEMA pgcoord CASCADE"
    )
