"""pgcoord 0.3.0: the campaign send queue (campaign_*), shared rate limits (rate_*) and
the documented argument ranges: db/releases/0.3.0/.

Revision ID: pgcoord_0003
Revises: pgcoord_0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

import pgcoord.alembic

revision = "pgcoord_0003"
down_revision = "pgcoord_0002"
branch_labels = None
depends_on = None

RELEASE = "0.3.0"


def upgrade() -> None:
    pgcoord.alembic.upgrade(op, to=RELEASE)


def downgrade() -> None:
    pgcoord.alembic.downgrade(op)
