"""Talking to the daemon: connect (autostarting it if allowed), requests, streams.

Stdlib only, so ``botsched create -q`` stays quick to start.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator

#: ``typing`` costs ~5 ms of start-up; type checkers read these imports, Python skips them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

from botsched import protocol
from botsched.errors import BotschedError, DaemonUnavailable, from_code
from botsched.paths import Paths, check_socket_path, ensure_private_dir, resolve_paths, socket_path

#: How long a plain request may take before we call the daemon unresponsive.
REPLY_TIMEOUT_S = 120.0
START_TIMEOUT_S = 15.0


class Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = sock.makefile("rb")

    def close(self) -> None:
        self._reader.close()
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise DaemonUnavailable(f"lost the daemon while sending: {exc.strerror or exc}") from None

    def receive(self) -> dict[str, Any]:
        try:
            line = self._reader.readline(protocol.MAX_LINE * 64)
        except TimeoutError:
            raise DaemonUnavailable("the daemon did not answer in time") from None
        except OSError as exc:
            raise DaemonUnavailable(f"lost the daemon: {exc.strerror or exc}") from None
        if not line:
            raise DaemonUnavailable("the daemon closed the connection without answering")
        return protocol.decode(line)

    def _result(self, message: dict[str, Any]) -> tuple[Any, list[str]]:
        if message.get("ok"):
            return message.get("result"), list(message.get("warnings") or [])
        error = message.get("error") or {}
        raise from_code(str(error.get("code")), str(error.get("message", "the daemon refused the request")))

    def call(self, op: str, **args: Any) -> tuple[Any, list[str]]:
        """One request, one reply: ``(result, warnings)``; an error reply raises."""
        if isinstance(args.get("id"), str):
            from botsched.validation import validate_bot_id

            validate_bot_id(args["id"])  # a malformed id names no bot: exit 3 before any I/O
        self.sock.settimeout(REPLY_TIMEOUT_S)
        self.send(protocol.request(op, **args))
        return self._result(self.receive())

    def stream(self, op: str, **args: Any) -> Iterator[dict[str, Any]]:
        """Yield each streamed event; the final reply ends the stream (or raises)."""
        self.sock.settimeout(None)
        self.send(protocol.request(op, **args))
        while True:
            message = self.receive()
            if "event" in message:
                yield message["event"]
                continue
            result, _ = self._result(message)
            if result is not None:
                yield {"result": result}
            return

    def send_bulk(self, op: str, chunk_lines: Iterable[bytes], commit: Callable[[], bool] = lambda: True,
                  **args: Any) -> dict[str, Any]:
        """A streamed request (``create_many``): the request, its chunk lines as they are
        produced, then the end line (``commit()`` asked last); returns the raw reply."""
        self.sock.settimeout(None)
        self.send(protocol.request(op, **args))
        for line in chunk_lines:
            self.send(line)
        self.send(protocol.encode({"end": True, "commit": commit()}))
        return self.receive()

    def call_bulk(self, op: str, chunk_lines: Iterable[bytes], **args: Any) -> tuple[Any, list[str]]:
        return self._result(self.send_bulk(op, chunk_lines, **args))


def _try_connect(path: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    except OSError as exc:
        sock.close()
        raise DaemonUnavailable(f"cannot reach the daemon at {path}: {exc.strerror or exc}") from None
    return sock


def autostart_allowed(paths: Paths) -> bool:
    if os.environ.get("BOTSCHED_NO_AUTOSTART", "") not in ("", "0"):
        return False
    from botsched import config

    return config.load(paths.config).autostart


def connect(paths: Paths | None = None, autostart: bool = True) -> Connection:
    """A connection to the daemon, starting it first when allowed (SPEC §5)."""
    path = str(paths.socket) if paths is not None else socket_path()
    check_socket_path(path)
    sock = _try_connect(path)
    if sock is None:
        paths = paths or resolve_paths()
        if not autostart or not autostart_allowed(paths):
            raise DaemonUnavailable("the daemon is not running (start it with: botsched daemon start)")
        start_daemon(paths)
        sock = _try_connect(str(paths.socket))
        if sock is None:
            raise DaemonUnavailable("the daemon started but its socket does not answer")
    return Connection(sock)


def is_running(paths: Paths) -> bool:
    sock = _try_connect(str(paths.socket))
    if sock is None:
        return False
    sock.close()
    return True


def start_daemon(paths: Paths, timeout: float = START_TIMEOUT_S) -> int:
    """Start ``botsched daemon run`` detached; return once its socket answers.

    The child's stdout/stderr are a pipe: it closes them when ready, and whatever it
    printed before dying is the error we show.
    """
    import select
    import subprocess

    ensure_private_dir(paths.socket.parent)
    child = subprocess.Popen(
        [sys.executable, "-m", "botsched", "daemon", "run", "--background"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
    )
    assert child.stdout is not None
    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([child.stdout], [], [], 0.05)
        if ready:
            chunk = os.read(child.stdout.fileno(), 65536)
            if chunk:
                output += chunk
                continue
            break  # EOF: ready, or dead
    child.stdout.close()
    while time.monotonic() < deadline:
        if is_running(paths):
            return child.pid
        if child.poll() is not None and child.returncode != 0:
            if is_running(paths):  # another client's daemon won the race: fine
                return child.pid
            lines = output.decode(errors="replace").strip().splitlines()
            reason = lines[-1].removeprefix("error: ") if lines else f"exit code {child.returncode}"
            if "already running" in reason:
                time.sleep(0.05)
                continue
            raise DaemonUnavailable(f"the daemon could not be started: {reason}")
        time.sleep(0.02)
    raise DaemonUnavailable(f"the daemon did not answer within {timeout:.0f}s (see {paths.log})")


def stop_daemon(paths: Paths, timeout: float = 15.0) -> bool:
    """Ask the daemon to stop and wait until it has released its socket; False if none ran."""
    sock = _try_connect(str(paths.socket))
    if sock is None:
        return False
    with Connection(sock) as conn:
        try:  # (not contextlib.suppress: contextlib costs the fast path ~5 ms to import)
            conn.call("stop")
        except BotschedError:
            pass  # it may close before answering
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(paths) and not _pid_locked(paths):
            return True
        time.sleep(0.02)
    raise DaemonUnavailable(f"the daemon did not stop within {timeout:.0f}s")


def _pid_locked(paths: Paths) -> bool:
    import fcntl

    try:
        fd = os.open(paths.pid, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
