"""Fixtures: a live HTTP API per test (its own BOTSCHED_HOME in a temp dir)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from http_helpers import LiveApi


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LiveApi]:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    with LiveApi(home) as live:
        yield live
