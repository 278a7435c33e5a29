"""Alembic revisions of clicktodial's schema, oldest first (see ``down_revision``)."""
