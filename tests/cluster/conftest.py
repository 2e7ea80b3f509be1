"""Cluster tests' shared fixture: several agents' stores on one test's PostgreSQL schema."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from botsched.daemon.store.postgres import PostgresStore


@pytest.fixture
def agents(postgres_url: str) -> Iterator[Callable[[], PostgresStore]]:
    """Each call: another handle on this test's database (like another agent); all closed after."""
    opened: list[PostgresStore] = []

    def make() -> PostgresStore:
        store = PostgresStore(postgres_url)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
