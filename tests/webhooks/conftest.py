"""Fixtures: a real outbox per test, on each store (a SQLite file, a PostgreSQL schema)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from webhook_helpers import Backend, Bots, make_db


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return make_db(tmp_path / "botsched.db")


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The outbox's database: the SQLite file, then (cluster mode) a PostgreSQL schema."""
    if request.param == "postgres":
        return Backend("postgres", url=request.getfixturevalue("postgres_url"))
    return Backend("sqlite", path=tmp_path / "botsched.db")


@pytest.fixture
def conn(backend: Backend) -> Iterator[Any]:
    c = backend.connect()
    yield c
    c.close()


@pytest.fixture
def bots(conn: Any) -> Bots:
    return Bots(conn)
