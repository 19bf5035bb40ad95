"""pgcoord's migration step for an application's own Alembic project: a revision of the
application calls it, and the database gets pgcoord up to the release it names.

    # migrations/versions/20261201_pgcoord.py, in the application's Alembic project
    from alembic import op

    import pgcoord.alembic

    revision = "20261201_pgcoord"
    down_revision = "..."


    def upgrade() -> None:
        pgcoord.alembic.upgrade(op, to="0.3.0")


    def downgrade() -> None:
        pgcoord.alembic.downgrade(op)

After upgrading the pgcoord package, a new revision names the new release (`to="0.4.0"`).
A revision keeps naming its release, so it always builds the same schema.

The step applies the frozen release files shipped in the package, never anything else:
the release's install.sql on a database without pgcoord, else the upgrade.sql of each
release after the installed one, up to `to`. It is idempotent: a database that already
has `to`, or a newer release (installed by `pgcoord migrate` or `psql -f`), is left as
it is. A release the package does not have is refused, naming the releases it has.

It runs on the psycopg 3 connection under alembic's bind (sqlalchemy.url
`postgresql+psycopg://...`; in an async environment, `alembic init -t async`, on a
connection of its own made from the engine's URL), outside alembic's transaction: each
release file is one transaction of its own (BEGIN ... COMMIT) under pgcoord's install
lock, so concurrent installers take turns. Like every Alembic `autocommit_block`, it
first commits the revisions run before it in the same `alembic upgrade`. There is no
offline (--sql) mode: the SQL is the release's own file
(`pgcoord.releases.install_sql(version)`, for psql -f).
The checkout's own alembic/ revisions are made of this step, one release each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

import psycopg
from alembic import util

from . import migrations, releases
from .errors import PgcoordError

if TYPE_CHECKING:
    from alembic.operations import Operations


def upgrade(op: Operations, *, to: str) -> None:
    """Bring schema pgcoord to release `to`, or leave a newer one as it is. Raises
    alembic's CommandError (one line, "FAILED: ..." from the alembic command) when that
    cannot be done."""
    _check_release(to)
    context = op.get_context()
    if context.as_sql:
        raise util.CommandError(
            "pgcoord has no offline (--sql) mode: its SQL is the release's own file, "
            f"db/releases/{to}/install.sql (pgcoord.releases.install_sql), for psql -f"
        )
    with context.autocommit_block():
        bind = op.get_bind()
        conn = bind.connection.driver_connection
        try:
            if isinstance(conn, psycopg.Connection):
                migrations.apply_release(conn, to)
            elif isinstance(conn, psycopg.AsyncConnection):
                # an async environment (alembic init -t async): a connection of its own,
                # made as the engine makes its own, for the release files
                args, kwargs = bind.dialect.create_connect_args(bind.engine.url)
                try:
                    own = psycopg.connect(*args, **kwargs)
                except psycopg.OperationalError as exc:
                    raise util.CommandError(f"pgcoord could not connect: {exc}") from exc
                with own:
                    migrations.apply_release(own, to)
            else:
                raise util.CommandError(
                    "pgcoord's migrations run on psycopg 3: use a postgresql+psycopg:// URL "
                    f"(the connection is {type(conn).__module__}.{type(conn).__name__})"
                )
        except PgcoordError as exc:
            raise util.CommandError(f"{exc} ({exc.hint})" if exc.hint else str(exc)) from exc


def downgrade(op: Operations) -> NoReturn:
    """Refuse: a pgcoord release is never downgraded."""
    raise util.CommandError(
        "pgcoord cannot be downgraded; to remove it: DROP SCHEMA pgcoord CASCADE, then "
        "alembic stamp the revision before this one"
    )


def _check_release(to: str) -> None:
    known = releases.versions()
    if to in known:
        return
    said = f"no pgcoord release {to!r} in this package, which has {', '.join(known)}"
    try:
        newer = releases.version_key(to) > releases.version_key(known[-1])
    except ValueError:
        newer = False
    raise util.CommandError(said + ("; upgrade the pgcoord package" if newer else ""))
