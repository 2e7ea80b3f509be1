"""Fixtures of the reliability tests, the ``soak`` marker, and the figures summary.

The long variants run with ``BOTSCHED_SOAK=1`` (more kill cycles, a 30 s load, more fuzz
cases); ``-m soak`` selects only the tests that have a long variant.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator

import pytest

from .relhelpers import FIGURES, Homes, RelHome


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "soak: has a long variant that runs with BOTSCHED_SOAK=1 (tests/reliability)"
    )


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    if not FIGURES:
        return
    terminalreporter.section("botsched reliability figures")
    for section, values in FIGURES.items():
        terminalreporter.write_line(f"{section}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    target = os.environ.get("BOTSCHED_FIGURES")
    if target:
        with open(target, "w") as handle:
            json.dump(FIGURES, handle, indent=2, default=str)


@pytest.fixture
def make_home() -> Iterator[Homes]:
    """Factory: ``make_home(config_overrides)`` -> a fresh RelHome; everything it started is
    killed at teardown (daemons, runners), mounts undone, the directory removed."""
    homes = Homes()
    yield homes
    homes.close()


@pytest.fixture(scope="module")
def module_homes() -> Iterator[Homes]:
    homes = Homes()
    yield homes
    homes.close()


@pytest.fixture
def home(make_home: Callable[..., RelHome]) -> RelHome:
    return make_home()
