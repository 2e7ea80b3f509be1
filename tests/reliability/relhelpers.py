"""Helpers only the reliability tests need (issue 5), beside the shared ones in
``tests.support``: what the sandbox allows (mounts, ``chattr``), a read-only look at the
SQLite file, process figures, retrying, and the figures the tests report at the end of the run.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.home import Lost, make_short_dir

#: ``BOTSCHED_SOAK=1``: the long variants (more kill cycles, longer load, more fuzz cases).
SOAK = os.environ.get("BOTSCHED_SOAK", "") not in ("", "0")

#: Figures the tests measured, printed in pytest's terminal summary (see conftest.py) and,
#: with ``BOTSCHED_FIGURES=path``, written there as JSON.
FIGURES: dict[str, dict[str, Any]] = {}


def record_figures(section: str, **values: Any) -> None:
    FIGURES.setdefault(section, {}).update(values)
    print(f"[{section}] " + ", ".join(f"{k}={v}" for k, v in values.items()))


# -- figures ---------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


# -- processes ---------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def is_root() -> bool:
    return os.geteuid() == 0


def can_mount() -> bool:
    """Whether this sandbox lets us mount a tmpfs (root with CAP_SYS_ADMIN)."""
    if not is_root() or shutil.which("mount") is None:
        return False
    probe = make_short_dir()
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                            capture_output=True, timeout=10).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], capture_output=True, timeout=10)
        return ok
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def can_chattr(directory: Path) -> bool:
    if not is_root() or shutil.which("chattr") is None:
        return False
    probe = directory / ".chattr-probe"
    probe.write_text("x")
    try:
        if subprocess.run(["chattr", "+i", str(probe)], capture_output=True, timeout=10).returncode != 0:
            return False
        subprocess.run(["chattr", "-i", str(probe)], capture_output=True, timeout=10)
        return True
    finally:
        probe.unlink(missing_ok=True)


# -- the database, read-only --------------------------------------------------------------


def open_ro(db: Path) -> sqlite3.Connection:
    """A read-only connection (safe while the daemon writes: WAL readers never block it)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def integrity(db: Path) -> str:
    conn = open_ro(db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def retry(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call ``fn`` until it returns without raising (``Lost`` or AssertionError) or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (Lost, AssertionError):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s: {what}") from None
            time.sleep(0.05)
