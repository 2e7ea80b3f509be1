"""Fixtures for the end-to-end tests: the real ``botsched`` command against a real daemon.

Every test that needs a daemon gets its own short ``BOTSCHED_HOME`` under /tmp (AF_UNIX
socket paths are limited to 107 bytes, pytest's tmp_path is often longer) with a
``config.toml`` of short timings. Teardown stops the daemon gracefully and kills it if it
is still alive, so no daemon outlives its test.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from .helpers import Home, make_short_dir, merge_config


class _Homes:
    """Creates homes and, at teardown, stops their daemons and removes them."""

    def __init__(self) -> None:
        self.homes: list[tuple[Home, Path]] = []

    def __call__(self, config: dict[str, dict[str, Any]] | None = None, write_config: bool = True,
                 subdir: str | None = None) -> Home:
        root = make_short_dir()
        path = root / subdir if subdir else root
        home = Home(path, merge_config(config) if write_config else None)
        self.homes.append((home, root))
        return home

    def close(self) -> None:
        for home, root in self.homes:
            try:
                home.stop()
            finally:
                shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def make_home() -> Iterator[Callable[..., Home]]:
    """Factory: ``make_home(config_overrides)`` -> a fresh Home; all stopped and removed at teardown."""
    homes = _Homes()
    yield homes
    homes.close()


@pytest.fixture(scope="module")
def module_make_home() -> Iterator[Callable[..., Home]]:
    """The same factory, for homes shared by a module's tests."""
    homes = _Homes()
    yield homes
    homes.close()


@pytest.fixture
def home(make_home: Callable[..., Home]) -> Home:
    """A fresh home with the default short timings (the daemon autostarts on first use)."""
    return make_home()


@pytest.fixture(scope="module")
def module_home(module_make_home: Callable[..., Home]) -> Home:
    """One home (and daemon) shared by a module's tests: they must not assume an empty store."""
    home = module_make_home()
    home.start()
    return home
