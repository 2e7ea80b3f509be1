"""Fixtures of the calendar sync tests (helpers live in ``calsync_helpers``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from calsync_helpers import EMAIL, Home  # noqa: E402

CONFIG = f"""\
[calendar]
email = "{EMAIL}"

[defaults]
timezone = "Europe/Berlin"
"""


@pytest.fixture
def make_home() -> Iterator[Callable[[str], Home]]:
    """Factory for fresh homes (each with its own daemon, stopped at teardown)."""
    homes: list[Home] = []

    def factory(extra_config: str = "") -> Home:
        home = Home(CONFIG + extra_config)
        homes.append(home)
        return home

    yield factory
    for home in homes:
        home.close()


@pytest.fixture
def home(make_home: Callable[[str], Home]) -> Home:
    return make_home()
