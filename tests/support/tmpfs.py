"""A private temporary directory on tmpfs when there is one.

The store commits with ``synchronous=FULL`` (an fsync per transaction); on a disk busy with
other test suites that alone can take seconds. tmpfs keeps store-backed tests fast and their
timing independent of the machine's disk load.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["fast_dir", "fill_disk", "mount_small_tmpfs"]


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


def mount_small_tmpfs(path: Path, size: str = "4m") -> None:
    """Mount a private tmpfs of ``size`` at ``path`` (root only): a disk the test can fill."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True,
                   timeout=10)


def fill_disk(directory: Path) -> Path:
    """Fill the file system of ``directory`` to its last byte; returns the filler file (unlink it
    to free the space)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 1 << 10, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler
