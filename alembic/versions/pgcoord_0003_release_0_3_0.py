"""pgcoord 0.3.0: the campaign send queue (campaign_*), shared rate limits (rate_*) and
the documented argument ranges: db/releases/0.3.0/.

Revision ID: pgcoord_0003
Revises: pgcoord_0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op, util

from pgcoord.migrations import apply_release

revision = "pgcoord_0003"
down_revision = "pgcoord_0002"
branch_labels = None
depends_on = None

RELEASE = "0.3.0"


def upgrade() -> None:
    # The release file is one transaction of its own (BEGIN ... COMMIT): run it as-is on
    # the raw psycopg connection, outside alembic's transaction.
    with op.get_context().autocommit_block():
        apply_release(op.get_bind().connection.driver_connection, RELEASE)


def downgrade() -> None:
    raise util.CommandError(
        f"pgcoord {RELEASE} cannot be downgraded; to remove pgcoord: DROP SCHEMA pgcoord CASCADE"
    )
