"""A private temporary directory on tmpfs when there is one.

The store commits with ``synchronous=FULL`` (an fsync per transaction); on a disk busy with
other test suites that alone can take seconds. tmpfs keeps store-backed tests fast and their
timing independent of the machine's disk load.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["fast_dir"]


@contextmanager
def fast_dir(fallback: Path, prefix: str = "botsched-test-") -> Iterator[Path]:
    """A fresh directory under /dev/shm (removed afterwards), else ``fallback``."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield fallback
        return
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
