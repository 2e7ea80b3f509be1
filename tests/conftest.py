"""Fixtures every test directory shares: fresh homes with a real daemon (``tests.support``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.home import Home, Homes
from tests.support.postgres import postgres_server, postgres_url, private_postgres  # noqa: F401  (fixtures)


@pytest.fixture
def make_home() -> Iterator[Homes]:
    """Factory: ``make_home(config_overrides)`` -> a fresh Home; everything it started is
    killed at teardown (daemons, runners), mounts undone, the directory removed."""
    homes = Homes()
    yield homes
    homes.close()


@pytest.fixture(scope="module")
def module_make_home() -> Iterator[Homes]:
    """The same factory, for homes shared by a module's tests."""
    homes = Homes()
    yield homes
    homes.close()


@pytest.fixture
def home(make_home: Homes) -> Home:
    """A fresh home with the default short timings (the daemon autostarts on first use)."""
    return make_home()


@pytest.fixture(scope="module")
def module_home(module_make_home: Homes) -> Home:
    """One home (and daemon) shared by a module's tests: they must not assume an empty store."""
    home = module_make_home()
    home.start()
    return home
