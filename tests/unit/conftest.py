"""Shared fixtures of the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.tmpfs import fast_dir


@pytest.fixture
def tmp_path(tmp_path: Path) -> Iterator[Path]:
    """A private temporary directory, on tmpfs when there is one (the store fsyncs every
    transaction; a disk busy with other suites would make these tests slow and flaky)."""
    with fast_dir(tmp_path, "botsched-unit-") as path:
        yield path
