"""Helpers for the end-to-end tests: the real ``botsched`` command against a real daemon.

Every test that needs a daemon gets its own short ``BOTSCHED_HOME`` under /tmp (AF_UNIX
socket paths are limited to 107 bytes, pytest's tmp_path is often longer) with a
``config.toml`` of short timings. Teardown stops the daemon gracefully and kills it if it
is still alive, so no daemon outlives its test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

UTC = timezone.utc

ID_RE = re.compile(r"^bot_[A-Za-z0-9]{16}$")
MICRO_Z_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
ALL_STATES = (
    "scheduled",
    "ready",
    "staged",
    "joining",
    "waiting_room",
    "joined_not_recording",
    "joined_recording",
    "leaving",
    "post_processing",
    "ended",
    "fatal_error",
)
BOT_KEYS = {
    "id",
    "meeting_url",
    "bot_name",
    "state",
    "join_at",
    "created_at",
    "updated_at",
    "metadata",
    "deduplication_key",
    "events",
}

#: Short timings: a scheduled bot is staged 1 s ahead, "joins" in 0.2 s, "ends" 0.5 s later.
DEFAULT_CONFIG: dict[str, dict[str, Any]] = {
    "scheduler": {"stage_lead_seconds": 1},
    "runner": {"simulate_join_seconds": 0.2, "simulate_duration_seconds": 0.5},
}

#: No single CLI call may take longer than this (a hang is a failure, not a stuck suite).
CALL_TIMEOUT_S = 30.0


def _find_botsched() -> str:
    beside = Path(sys.executable).parent / "botsched"
    if beside.exists():
        return str(beside)
    found = shutil.which("botsched")
    if found:
        return found
    pytest.fail("the botsched command is not installed (neither beside sys.executable nor on PATH)")


BOTSCHED = _find_botsched()


# -- small helpers used by the tests -------------------------------------------------


def iso_ms(moment: datetime) -> str:
    """UTC ISO 8601 with milliseconds and Z: 2025-06-16T16:55:00.123Z."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def in_ms(seconds: float) -> str:
    """An absolute join time ``seconds`` from now, with milliseconds, in Z."""
    return iso_ms(datetime.now(UTC) + timedelta(seconds=seconds))


def parse_z(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text[:-1] + "+00:00")


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie counts as dead: the daemon is reparented away from us)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def toml_dump(config: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines)


def merge_config(extra: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    merged = {section: dict(values) for section, values in DEFAULT_CONFIG.items()}
    for section, values in (extra or {}).items():
        merged.setdefault(section, {}).update(values)
    return merged


def assert_clean_error(result: subprocess.CompletedProcess[str], code: int | None = None, lines: int | None = 1) -> str:
    """Exit ``code``; stderr is ``lines`` lines each starting ``error:``; no traceback, no box."""
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything, everything
    assert "╭" not in everything and "╰" not in everything, f"Typer's framed box:\n{everything}"
    if code is not None:
        assert result.returncode == code, f"exit {result.returncode}, expected {code}\n{everything}"
    else:
        assert result.returncode != 0, everything
    err_lines = result.stderr.splitlines()
    assert err_lines, f"nothing on stderr (exit {result.returncode})"
    if lines is not None:
        assert len(err_lines) == lines, f"expected {lines} stderr line(s), got:\n{result.stderr}"
    for line in err_lines:
        assert line.startswith("error:"), f"stderr line does not start with 'error:': {line!r}"
    return result.stderr


class Home:
    """One ``BOTSCHED_HOME`` and the ``botsched`` command pointed at it."""

    def __init__(self, path: Path, config: dict[str, dict[str, Any]] | None = None) -> None:
        self.path = path
        self.pids: set[int] = set()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BOTSCHED_")}
        self.env["BOTSCHED_HOME"] = str(path)
        self.env["COLUMNS"] = "250"  # human tables wide enough to read
        self.env["NO_COLOR"] = "1"
        self.env.pop("PYTHONUNBUFFERED", None)  # the product must flush by itself
        # let Python cache botsched's bytecode: hundreds of CLI calls need not each recompile it
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        bindir = str(Path(BOTSCHED).parent)
        self.env["PATH"] = bindir + os.pathsep + self.env.get("PATH", "")
        if config is not None:
            self.write_config(config)

    # -- files -------------------------------------------------------------------

    @property
    def socket(self) -> Path:
        return self.path / "botsched.sock"

    @property
    def pid_file(self) -> Path:
        return self.path / "daemon.pid"

    def write_config(self, config: dict[str, dict[str, Any]]) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.path / "config.toml").write_text(toml_dump(config))

    def daemon_pid(self) -> int | None:
        try:
            text = self.pid_file.read_text().strip()
        except OSError:
            return None
        if not text.isdigit():
            return None
        pid = int(text)
        self.pids.add(pid)
        return pid

    # -- running the command -------------------------------------------------------

    def run(
        self,
        *args: str,
        input: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = CALL_TIMEOUT_S,
        umask: int = -1,
    ) -> subprocess.CompletedProcess[str]:
        full_env = dict(self.env)
        full_env.update(env or {})
        result = subprocess.run(
            [BOTSCHED, *args],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            umask=umask,
        )
        self.daemon_pid()  # remember every daemon we ever saw, to reap it at teardown
        return result

    def run_many(self, calls: list[list[str]], **kwargs: Any) -> list[subprocess.CompletedProcess[str]]:
        """Independent commands, run two at a time (the suite must stay quick on 2 cores)."""
        with ThreadPoolExecutor(max_workers=2) as pool:
            return list(pool.map(lambda args: self.run(*args, **kwargs), calls))

    def ok(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, **kwargs)
        assert result.returncode == 0, (
            f"botsched {' '.join(args)} exited {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.ok(*args, "--json", **kwargs).stdout)

    def popen(self, *args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[bytes]:
        full_env = dict(self.env)
        full_env.update(env or {})
        return subprocess.Popen([BOTSCHED, *args], env=full_env, **kwargs)

    # -- conveniences ------------------------------------------------------------------

    def create(self, *args: str) -> str:
        out = self.ok("create", "-q", *args).stdout
        bot_id = out.strip()
        assert ID_RE.match(bot_id), out
        return bot_id

    def show(self, bot_id: str) -> dict[str, Any]:
        return self.json("show", bot_id)

    def list_all(self) -> list[dict[str, Any]]:
        return self.json("list", "--limit", "0")

    def start(self) -> int:
        self.ok("daemon", "start")
        pid = self.daemon_pid()
        assert pid is not None and pid_alive(pid)
        return pid

    def stop(self) -> None:
        """Graceful stop, then SIGKILL every daemon this home ever had that still lives."""
        self.daemon_pid()
        if len(str(self.socket)) <= 107:
            try:
                self.run("daemon", "stop", timeout=20)
            except subprocess.TimeoutExpired:
                pass
        for pid in list(self.pids):
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                wait_until(lambda pid=pid: not pid_alive(pid), 5, what=f"pid {pid} to die")


def make_short_dir() -> Path:
    """A fresh, short directory under /tmp (AF_UNIX paths must stay under 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix="bs", dir="/tmp"))
