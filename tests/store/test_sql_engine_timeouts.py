"""create_sql_engine bounds how long a PostgreSQL connection attempt may take."""

from __future__ import annotations

from typing import Any

import pytest

from clicktodial.store import sql


def engine_kwargs(monkeypatch: pytest.MonkeyPatch, url: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def create_engine(url: object, **kwargs: Any) -> object:
        seen.update(kwargs)
        return object()

    monkeypatch.setattr(sql, "create_engine", create_engine)
    sql.create_sql_engine(url)
    return seen


def test_postgresql_connections_get_a_connect_timeout_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that accepts and never answers must not hang start-up (or a stop during
    it) for ever: libpq's connect_timeout, 10 s."""
    kwargs = engine_kwargs(monkeypatch, "postgresql+psycopg://u@127.0.0.1:5432/db")
    assert kwargs["connect_args"] == {"connect_timeout": sql.POSTGRESQL_CONNECT_TIMEOUT}
    assert sql.POSTGRESQL_CONNECT_TIMEOUT == 10


def test_a_connect_timeout_in_the_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = engine_kwargs(monkeypatch, "postgresql+psycopg://u@h/db?connect_timeout=3")
    assert kwargs["connect_args"] == {}
