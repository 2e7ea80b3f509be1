"""Fixtures: a real SQLite outbox file per test."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from webhook_helpers import Bots, connect, make_db


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return make_db(tmp_path / "botsched.db")


@pytest.fixture
def conn(db_path: Path) -> Iterator[sqlite3.Connection]:
    c = connect(db_path)
    yield c
    c.close()


@pytest.fixture
def bots(conn: sqlite3.Connection) -> Bots:
    return Bots(conn)
