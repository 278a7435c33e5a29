"""
Alembic environment for clicktodial's schema.

Run through :mod:`clicktodial.store.migrations` (``clicktodial db upgrade``), which passes an
open connection in ``config.attributes["connection"]``; there is no alembic.ini. SQLite gets
batch mode: it cannot ALTER most things in place, so batch operations copy the table.
"""

from alembic import context

from clicktodial.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run clicktodial's migrations through clicktodial.store.migrations"
        " (clicktodial --config FILE db upgrade), not the alembic command"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    compare_server_default=True,
)
with context.begin_transaction():
    context.run_migrations()
