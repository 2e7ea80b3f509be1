"""Shared helpers of the reliability tests (issue 5).

They build on the end-to-end helpers (``tests.e2e.helpers``: ``Home``, ``make_short_dir``,
``merge_config``...) and add what fault injection needs: a daemon started directly (so a
kill-and-restart cycle costs ~0.1 s instead of a CLI start-up), a raw protocol client that
reports "no reply" instead of raising, a read-only look at the SQLite file, process
clean-up by environment (runners outlive their daemon by design), and the figures that the
tests report at the end of the run.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # ``pytest`` (not ``python -m pytest``) leaves the repo root out
    sys.path.insert(0, str(_ROOT))

from tests.e2e.helpers import (  # noqa: E402
    CALL_TIMEOUT_S,
    ID_RE,
    Home,
    assert_clean_error,
    make_short_dir,
    merge_config,
    pid_alive,
    wait_until,
)

__all__ = [
    "CALL_TIMEOUT_S", "ID_RE", "Home", "assert_clean_error", "make_short_dir", "merge_config", "pid_alive",
    "wait_until",
]

UTC = timezone.utc

#: ``BOTSCHED_SOAK=1``: the long variants (more kill cycles, longer load, more fuzz cases).
SOAK = os.environ.get("BOTSCHED_SOAK", "") not in ("", "0")

#: Figures the tests measured, printed in pytest's terminal summary (see conftest.py) and,
#: with ``BOTSCHED_FIGURES=path``, written there as JSON.
FIGURES: dict[str, dict[str, Any]] = {}


def record_figures(section: str, **values: Any) -> None:
    FIGURES.setdefault(section, {}).update(values)
    print(f"[{section}] " + ", ".join(f"{k}={v}" for k, v in values.items()))


# -- time ------------------------------------------------------------------------------


def iso_ms(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def in_s(seconds: float) -> str:
    """An absolute UTC join time ``seconds`` from now, with milliseconds."""
    return iso_ms(datetime.now(UTC) + timedelta(seconds=seconds))


def parse_z(text: str) -> float:
    """``2025-06-16T16:55:00.123Z`` -> POSIX seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


# -- processes ---------------------------------------------------------------------------


def processes_of_home(home: Path) -> list[int]:
    """Pids whose environment has ``BOTSCHED_HOME=home``: its daemons and, since runners
    inherit the daemon's environment, its runners and their children."""
    needle = f"BOTSCHED_HOME={home}".encode() + b"\0"
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read() + b"\0"
        except OSError:
            continue
        if b"\0" + needle in b"\0" + environ:
            found.append(int(entry))
    return found


def kill_home_processes(home: Path) -> int:
    """SIGKILL every process of this home (by pid, found by environment); returns how many."""
    pids = processes_of_home(home)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in pids):
        time.sleep(0.02)
    return len(pids)


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


# -- homes -------------------------------------------------------------------------------


class RelHome(Home):
    """An e2e ``Home`` that also starts its daemon directly and cleans up runners."""

    LAUNCH = "from botsched.daemon import main; main.run(foreground=False)"

    def __init__(self, path: Path, config: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__(path, config)
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, config: dict[str, dict[str, Any]]) -> None:
        """Written with tomli_w (the e2e writer has no nested tables, e.g. ``[runner.env]``)."""
        import tomli_w

        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.path / "config.toml").write_text(tomli_w.dumps(config))

    @property
    def db(self) -> Path:
        return self.path / "botsched.db"

    @property
    def log(self) -> Path:
        return self.path / "botsched.log"

    def launch(self, timeout: float = 30.0) -> int:
        """Start ``daemon.run()`` (what ``botsched daemon run`` calls) as our child, without
        the CLI's start-up cost; returns once it is listening (it closes its stdout then)."""
        proc = subprocess.Popen(
            [sys.executable, "-c", self.LAUNCH],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert proc.stdout is not None
        output = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.05)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                output += chunk
        proc.stdout.close()
        if proc.poll() is not None:
            text = output.decode(errors="replace")
            raise AssertionError(f"the daemon died at start-up (exit {proc.returncode}): {text}")
        if time.monotonic() >= deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"the daemon was not ready within {timeout}s")
        self.proc = proc
        self.pids.add(proc.pid)
        return proc.pid

    def sigkill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.proc = None

    def terminate(self) -> None:
        """Graceful stop of a launched daemon (SIGTERM), SIGKILL if it hangs."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def client(self, timeout: float = 30.0) -> Client:
        return Client(self.socket, timeout)

    def cleanup(self) -> None:
        """Teardown without a CLI call: SIGTERM the daemon(s) this home had, then SIGKILL
        everything still running with this BOTSCHED_HOME (daemons, runners, their children)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
        self.daemon_pid()
        alive = [pid for pid in self.pids if pid_alive(pid)]
        for pid in alive:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(pid_alive(pid) for pid in alive):
            time.sleep(0.02)
        kill_home_processes(self.path)


class Homes:
    """Factory fixture object: fresh homes; at teardown their daemons and runners are
    killed, mounts undone, immutable flags cleared, directories removed."""

    def __init__(self) -> None:
        self.items: list[tuple[RelHome, Path]] = []
        self.mounts: list[Path] = []
        self.immutable: list[Path] = []

    def __call__(self, config: dict[str, dict[str, Any]] | None = None, write_config: bool = True,
                 subdir: str | None = None) -> RelHome:
        root = make_short_dir()
        path = root / subdir if subdir else root
        home = RelHome(path, merge_config(config) if write_config else None)
        self.items.append((home, root))
        return home

    def close(self) -> None:
        for home, _ in self.items:
            home.cleanup()
        for path in reversed(self.immutable):
            subprocess.run(["chattr", "-i", str(path)], capture_output=True, timeout=10)
        for mount in reversed(self.mounts):
            if subprocess.run(["umount", str(mount)], capture_output=True, timeout=10).returncode != 0:
                subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=10)
        for _, root in self.items:
            shutil.rmtree(root, ignore_errors=True)


# -- a raw protocol client ---------------------------------------------------------------


class Lost(Exception):
    """The connection failed or closed before a whole reply line arrived."""


class Client:
    """One connection speaking the JSON-lines protocol; ``call`` returns the raw reply."""

    def __init__(self, path: Path | str, timeout: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except OSError as exc:
            self.sock.close()
            raise Lost(f"connect: {exc}") from None
        self.buffer = b""

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise Lost(f"send: {exc}") from None

    def read_line(self, limit: int = 64 << 20) -> bytes:
        while b"\n" not in self.buffer:
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError as exc:  # timeouts included
                raise Lost(f"recv: {exc}") from None
            if not chunk:
                raise Lost("closed")
            self.buffer += chunk
            if len(self.buffer) > limit:
                raise Lost("reply too long")
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"

    def request(self, op: str, **args: Any) -> dict[str, Any]:
        self.send(json.dumps({"v": 1, "op": op, "args": args}).encode() + b"\n")
        return json.loads(self.read_line())

    def ok(self, op: str, **args: Any) -> Any:
        reply = self.request(op, **args)
        assert reply.get("ok") is True, f"{op} {args}: {reply}"
        return reply["result"]

    def events(self, bot_id: str | None = None) -> list[dict[str, Any]]:
        """All past events (of one bot or all): the non-following ``events`` stream."""
        args: dict[str, Any] = {"follow": False}
        if bot_id is not None:
            args["id"] = bot_id
        self.send(json.dumps({"v": 1, "op": "events", "args": args}).encode() + b"\n")
        found = []
        while True:
            message = json.loads(self.read_line())
            if "event" in message:
                found.append(message["event"])
                continue
            assert message.get("ok") is True, message
            return found


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
