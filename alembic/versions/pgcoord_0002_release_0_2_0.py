"""pgcoord 0.2.0: the inbox (message_ingest, buffer_*): db/releases/0.2.0/.

Revision ID: pgcoord_0002
Revises: pgcoord_0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

import pgcoord.alembic

revision = "pgcoord_0002"
down_revision = "pgcoord_0001"
branch_labels = None
depends_on = None

RELEASE = "0.2.0"


def upgrade() -> None:
    pgcoord.alembic.upgrade(op, to=RELEASE)


def downgrade() -> None:
    pgcoord.alembic.downgrade(op)
