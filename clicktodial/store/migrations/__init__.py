"""
Schema migrations (Alembic), shipped inside the package.

The Alembic configuration is built in code (:func:`alembic_config`): no alembic.ini is needed
at run time. Revisions live in ``versions/``; write a new one with::

    python3 -m clicktodial.store.migrations revision "add foo to users"

which autogenerates it from the difference between :mod:`clicktodial.store.schema` and a
scratch SQLite database at head; review and edit the result (SQLite needs batch operations,
which autogenerate renders).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

SCRIPT_LOCATION = "clicktodial.store:migrations"

# An arbitrary constant: the PostgreSQL advisory lock key that serialises concurrent
# upgrades of one database by several daemons or admin commands.
_UPGRADE_LOCK_KEY = 0x636C6B74  # "clkt"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for our migrations, optionally bound to ``connection``."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def script_directory() -> ScriptDirectory:
    """The revisions shipped with this version of clicktodial."""
    return ScriptDirectory.from_config(alembic_config())


def head_revisions() -> frozenset[str]:
    """The revision(s) the code expects the database to be at."""
    return frozenset(script_directory().get_heads())


def current_revisions(connection: Connection) -> frozenset[str]:
    """The revision(s) the database is at (empty for a database without our schema)."""
    return frozenset(MigrationContext.configure(connection).get_current_heads())


def upgrade(connection: Connection, revision: str = "head") -> None:
    """
    Apply migrations up to ``revision`` on ``connection``, inside its transaction.

    The caller commits: ``with engine.begin() as connection: upgrade(connection)``. On
    PostgreSQL an advisory lock makes concurrent upgrades wait for each other.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK_KEY})
    command.upgrade(alembic_config(connection), revision)


def _new_revision(message: str) -> None:
    # Autogenerate against a scratch SQLite database upgraded to head.
    from sqlalchemy import create_engine

    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite:///{Path(scratch) / 'scratch.sqlite'}")
        with engine.begin() as connection:
            upgrade(connection)
            command.revision(alembic_config(connection), message=message, autogenerate=True)
        engine.dispose()


if __name__ == "__main__":  # pragma: no cover - a developer tool
    if len(sys.argv) != 3 or sys.argv[1] != "revision":
        sys.exit("usage: python3 -m clicktodial.store.migrations revision MESSAGE")
    _new_revision(sys.argv[2])
