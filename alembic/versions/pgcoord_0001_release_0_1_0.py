"""pgcoord 0.1.0: install the frozen release db/releases/0.1.0/ (its install.sql).

Revision ID: pgcoord_0001
Revises:
Create Date: 2025-11-22
"""

from __future__ import annotations

from alembic import op

import pgcoord.alembic

revision = "pgcoord_0001"
down_revision = None
branch_labels = ("pgcoord",)
depends_on = None

RELEASE = "0.1.0"


def upgrade() -> None:
    pgcoord.alembic.upgrade(op, to=RELEASE)


def downgrade() -> None:
    pgcoord.alembic.downgrade(op)
