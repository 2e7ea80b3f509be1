"""A temporary ``BOTSCHED_HOME`` with the real daemon on a real socket, driven through the
installed ``botsched`` command (or, for fault injection, the daemon started directly).

Homes live in short directories under /tmp: AF_UNIX socket paths are limited to 107 bytes
and pytest's ``tmp_path`` is often longer. Teardown kills every process that carries the
home in its environment (its daemons and, since runners inherit it, their runners), so
nothing outlives its test.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import tomli_w

Config = dict[str, dict[str, Any]]

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
DEFAULT_CONFIG: Config = {
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


# -- processes and waiting -----------------------------------------------------------------


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
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


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


# -- configuration and results ---------------------------------------------------------------


def merge_config(extra: Config | None) -> Config:
    """The short test timings with ``extra`` laid over them, section by section."""
    merged = {section: dict(values) for section, values in DEFAULT_CONFIG.items()}
    for section, values in (extra or {}).items():
        merged.setdefault(section, {}).update(values)
    return merged


def make_short_dir() -> Path:
    """A fresh, short directory under /tmp (AF_UNIX paths must stay under 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix="bs", dir="/tmp"))


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


# -- a raw protocol client ---------------------------------------------------------------------


class Lost(Exception):
    """The connection failed or closed before a whole reply line arrived."""


class Client:
    """One connection speaking the JSON-lines protocol by hand (no botsched code on the
    test side, so the wire format itself is under test); ``call`` returns the raw reply."""

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
        reply: dict[str, Any] = json.loads(self.read_line())
        return reply

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


# -- the home ---------------------------------------------------------------------------------


class Home:
    """One ``BOTSCHED_HOME`` and the ``botsched`` command pointed at it.

    ``config`` is a table (written as TOML) or TOML text; ``env`` adds to (or overrides) the
    environment every command runs with.
    """

    #: What ``botsched daemon run`` calls, started without the CLI's start-up cost.
    LAUNCH = "from botsched.daemon import main; main.run(foreground=False)"

    def __init__(self, path: Path, config: Config | str | None = None, env: dict[str, str] | None = None) -> None:
        self.path = path
        self.pids: set[int] = set()
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BOTSCHED_")}
        self.env["BOTSCHED_HOME"] = str(path)
        self.env["COLUMNS"] = "250"  # human tables wide enough to read
        self.env["NO_COLOR"] = "1"
        self.env.pop("PYTHONUNBUFFERED", None)  # the product must flush by itself
        # let Python cache botsched's bytecode: hundreds of CLI calls need not each recompile it
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env["PATH"] = str(Path(BOTSCHED).parent) + os.pathsep + self.env.get("PATH", "")
        self.env.update(env or {})
        if config is not None:
            self.write_config(config)

    # -- files -------------------------------------------------------------------

    @property
    def socket(self) -> Path:
        return self.path / "botsched.sock"

    @property
    def pid_file(self) -> Path:
        return self.path / "daemon.pid"

    @property
    def db(self) -> Path:
        return self.path / "botsched.db"

    @property
    def log(self) -> Path:
        return self.path / "botsched.log"

    def write_config(self, config: Config | str) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = config if isinstance(config, str) else tomli_w.dumps(config)
        (self.path / "config.toml").write_text(text)

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
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """``botsched *args``; never a traceback on stderr; with ``check``, exit 0 too."""
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
        assert "Traceback" not in result.stderr, result.stderr
        if check:
            assert result.returncode == 0, (
                f"botsched {' '.join(args)} exited {result.returncode}\nstdout: {result.stdout}\n"
                f"stderr: {result.stderr}"
            )
        return result

    def run_many(self, calls: list[list[str]], **kwargs: Any) -> list[subprocess.CompletedProcess[str]]:
        """Independent commands, run two at a time (the suite must stay quick on 2 cores)."""
        with ThreadPoolExecutor(max_workers=2) as pool:
            return list(pool.map(lambda args: self.run(*args, **kwargs), calls))

    def ok(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run(*args, check=True, **kwargs)

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
        shown: dict[str, Any] = self.json("show", bot_id)
        return shown

    def list_all(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = self.json("list", "--limit", "0")
        return listed

    def client(self, timeout: float = 30.0) -> Client:
        return Client(self.socket, timeout)

    def bots(self) -> list[dict[str, Any]]:
        """Every bot, straight from the daemon's socket (a process per check would be slow)."""
        with self.client() as conn:
            found: list[dict[str, Any]] = conn.ok("list", states=[], limit=0)["bots"]
        return found

    def by_key(self) -> dict[str, dict[str, Any]]:
        """Every bot by its deduplication key (what calendar sync keys its bots by)."""
        return {bot["deduplication_key"]: bot for bot in self.bots()}

    def sync(self, ics: str, *options: str, expect: int = 0) -> dict[str, Any]:
        """``calendar sync - --json`` with the text on stdin; the parsed report."""
        result = self.run("calendar", "sync", "-", "--json", "--days", "60", *options, input=ics)
        assert result.returncode == expect, (result.returncode, result.stdout, result.stderr)
        report: dict[str, Any] = json.loads(result.stdout)
        return report

    # -- the daemon ----------------------------------------------------------------------

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
    """The factory behind the ``make_home`` fixtures: fresh homes; at teardown their daemons
    and runners are killed, mounts undone, immutable flags cleared, directories removed.

    ``config`` (a table) is laid over the short test timings unless ``write_config`` is
    false; TOML text is written as it is.
    """

    def __init__(self) -> None:
        self.items: list[tuple[Home, Path]] = []
        self.mounts: list[Path] = []
        self.immutable: list[Path] = []

    def __call__(self, config: Config | str | None = None, write_config: bool = True, subdir: str | None = None,
                 env: dict[str, str] | None = None) -> Home:
        root = make_short_dir()
        path = root / subdir if subdir else root
        written = (config if isinstance(config, str) else merge_config(config)) if write_config else None
        home = Home(path, written, env)
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
            if not os.environ.get("BOTSCHED_TEST_KEEP"):  # =1: keep the homes (logs) for a post-mortem
                shutil.rmtree(root, ignore_errors=True)
