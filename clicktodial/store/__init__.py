"""
Storage: users, registrations (bindings) and call records.

- :mod:`clicktodial.interfaces` defines ``IUserStore``, ``ILocationStore``,
  ``ICallRecordStore``, ``ILocationBackend``, ``IStoreBackend`` and the optional capabilities;
  :mod:`.values` the plain values crossing them; :mod:`.errors` their documented failures;
  :mod:`.environment` what a backend factory gets besides its options.
- Backends: :mod:`.memory` and :mod:`.sql` (SQLAlchemy Core on SQLite or PostgreSQL, schema in
  :mod:`.schema`, Alembic migrations in :mod:`.migrations`, the cluster's nodes table in
  :mod:`.nodes`); others are plugins found by name (:mod:`.plugins`), for the ``[store]`` or
  for the registrations alone (``[location]``).
- :mod:`.admin` and :mod:`.commands`: the ``clicktodial user/token/db`` commands.

Importing this package imports nothing else: importing a module of it does not pull in
SQLAlchemy unless that module needs it. See docs/storage.md.
"""
