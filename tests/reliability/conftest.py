"""The ``soak`` marker of the reliability tests and their figures summary (the home
fixtures are shared: ``tests/conftest.py``).

The long variants run with ``BOTSCHED_SOAK=1`` (more kill cycles, a 30 s load, more fuzz
cases); ``-m soak`` selects only the tests that have a long variant.
"""

from __future__ import annotations

import json
import os

import pytest
from _pytest.terminal import TerminalReporter

from .relhelpers import FIGURES


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "soak: has a long variant that runs with BOTSCHED_SOAK=1 (tests/reliability)"
    )


def pytest_terminal_summary(terminalreporter: TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    if not FIGURES:
        return
    terminalreporter.section("botsched reliability figures")
    for section, values in FIGURES.items():
        terminalreporter.write_line(f"{section}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    target = os.environ.get("BOTSCHED_FIGURES")
    if target:
        with open(target, "w") as handle:
            json.dump(FIGURES, handle, indent=2, default=str)
