"""
A scratch PostgreSQL schema per test.

The server comes from ``$CLICKTODIAL_TEST_PG_URL`` (default: the local server over its unix
socket, database ``clicktodial_test``). Setting the variable to the empty string skips
PostgreSQL tests; otherwise a server that cannot be reached is a test failure, not a skip.
The database is created if missing; each test gets its own schema (through the connection's
``search_path``), dropped afterwards, so tests never see each other's tables.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import URL, create_engine, make_url, text

ENVIRONMENT_VARIABLE = "CLICKTODIAL_TEST_PG_URL"
DEFAULT_URL = "postgresql+psycopg://postgres@/clicktodial_test?host=/var/run/postgresql"


def test_database_url() -> URL | None:
    """The configured test database, or None when PostgreSQL tests are switched off."""
    configured = os.environ.get(ENVIRONMENT_VARIABLE, DEFAULT_URL)
    if not configured:
        return None
    return make_url(configured)


# Not a test, whatever its name says.
test_database_url.__test__ = False  # type: ignore[attr-defined]


def create_database_if_missing(url: URL) -> None:
    """Create ``url``'s database, connecting to the server's ``postgres`` database to do so."""
    server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            exists = connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            )
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{url.database}"'))
    finally:
        server.dispose()


@contextmanager
def scratch_schema(url: URL) -> Iterator[URL]:
    """
    Create a uniquely named schema, yield a URL whose connections use it (and only it), and
    drop it with everything in it afterwards.
    """
    create_database_if_missing(url)
    schema = "test_" + secrets.token_hex(6)
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            yield url.update_query_dict({"options": f"-csearch_path={schema}"})
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()
