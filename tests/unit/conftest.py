"""Shared fixtures of the unit tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def tmp_path(tmp_path: Path) -> Iterator[Path]:
    """A private temporary directory, on tmpfs when there is one.

    The store commits with ``synchronous=FULL`` (an fsync per transaction); on a disk busy
    with other test suites that alone can take seconds. tmpfs keeps these tests fast and
    their timing independent of the machine's disk load."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="botsched-unit-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
