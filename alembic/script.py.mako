"""pgcoord ${message}: install or upgrade to the frozen release db/releases/${message}/.

Made with: alembic revision -m VERSION --rev-id pgcoord_NNNN (after freezing the release)
Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

from alembic import op, util
from pgcoord.migrations import apply_release

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}

RELEASE = ${repr(message)}


def upgrade() -> None:
    # The release file is one transaction of its own (BEGIN ... COMMIT): run it as-is on
    # the raw psycopg connection, outside alembic's transaction.
    with op.get_context().autocommit_block():
        apply_release(op.get_bind().connection.driver_connection, RELEASE)


def downgrade() -> None:
    raise util.CommandError(f"pgcoord {RELEASE} cannot be downgraded")
