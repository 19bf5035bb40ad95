"""pgcoord ${message}: install or upgrade to the frozen release db/releases/${message}/.

Made with: alembic revision -m VERSION --rev-id pgcoord_NNNN (after freezing the release)
Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

from alembic import op

import pgcoord.alembic

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}

RELEASE = ${repr(message)}


def upgrade() -> None:
    pgcoord.alembic.upgrade(op, to=RELEASE)


def downgrade() -> None:
    pgcoord.alembic.downgrade(op)
