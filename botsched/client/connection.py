"""Talking to the daemon: connect (autostarting it if allowed), requests, streams.

Stdlib only, so ``botsched create -q`` stays quick to start.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator

from botsched.core import protocol
from botsched.core.errors import BotschedError, Conflict, DaemonUnavailable, ExitStatus, from_code
from botsched.core.paths import (
    Paths,
    check_socket_path,
    ensure_private_dir,
    resolve_paths,
    socket_path,
)
from botsched.core.protocol import Op

#: ``typing`` costs ~5 ms of start-up; type checkers read these imports, Python skips them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Self

#: How long a plain request may take before we call the daemon unresponsive.
REPLY_TIMEOUT_S = 120.0
START_TIMEOUT_S = 15.0


#: Bytes asked of the socket at once (bulk replies can be many MiB).
_RECV_SIZE = 1 << 20


class Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self._pos = 0  # where the next line starts in _buffer
        self._watch: int | None = None  # our stdout, while a stream runs: a closed reader ends it

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            # A daemon that refuses us (another user's, too many connections) answers and
            # closes, maybe before reading our request: its reason is what to show.
            refusal = self._refusal()
            if refusal is not None:
                raise refusal from None
            raise DaemonUnavailable(f"lost the daemon while sending: {exc.strerror or exc}") from None

    def _refusal(self) -> BotschedError | None:
        """The error line the daemon sent before closing, if there is one."""
        try:
            self.sock.settimeout(0.5)
            line = self._readline()
            message = protocol.decode(line) if line else {}
        except (OSError, BotschedError):
            return None
        if message.get("ok") is False:
            return _error_of(message)
        return None

    def _readline(self) -> bytes:
        """One line (with its newline), or what was left at EOF (``b""`` if nothing)."""
        buffer = self._buffer
        scan = self._pos
        while True:
            end = buffer.find(b"\n", scan)
            if end >= 0:
                line = bytes(buffer[self._pos : end + 1])
                self._pos = end + 1
                if self._pos == len(buffer):
                    buffer.clear()
                    self._pos = 0
                return line
            if self._pos:
                del buffer[: self._pos]
                self._pos = 0
            if len(buffer) > protocol.MAX_LINE * 64:
                raise DaemonUnavailable(f"the daemon sent a line over {protocol.MAX_LINE * 64} bytes")
            scan = len(buffer)
            if self._watch is not None:
                self._wait_readable()
            chunk = self.sock.recv(_RECV_SIZE)
            if not chunk:
                line = bytes(buffer)
                buffer.clear()
                return line
            buffer += chunk

    def _wait_readable(self) -> None:
        """Block until the socket has data, or raise ``BrokenPipeError`` once whoever reads
        our stdout has gone (``events --follow | head -1``: no event may ever come to
        write, so the closed pipe must be noticed while we wait)."""
        import select

        assert self._watch is not None
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        poller.register(self._watch, 0)  # POLLERR / POLLHUP are always reported
        while True:
            for fd, flags in poller.poll():
                if fd != self._watch:
                    return
                if flags & (select.POLLERR | select.POLLHUP):
                    raise BrokenPipeError(32, "the reader of standard output has gone")
                poller.unregister(fd)  # POLLNVAL: nothing to watch there after all

    def receive(self) -> dict[str, Any]:
        try:
            line = self._readline()
        except TimeoutError:
            raise DaemonUnavailable("the daemon did not answer in time") from None
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise DaemonUnavailable(f"lost the daemon: {exc.strerror or exc}") from None
        if not line:
            raise DaemonUnavailable("the daemon closed the connection without answering")
        return protocol.decode(line)

    def _result(self, message: dict[str, Any]) -> tuple[Any, list[str]]:
        if message.get("ok"):
            return message.get("result"), list(message.get("warnings") or [])
        raise _error_of(message)

    def call(self, op: Op, **args: Any) -> tuple[Any, list[str]]:
        """One request, one reply: ``(result, warnings)``; an error reply raises."""
        if isinstance(args.get("id"), str):
            from botsched.core.validation import validate_bot_id

            validate_bot_id(args["id"])  # a malformed id names no bot: exit 3 before any I/O
        self.sock.settimeout(REPLY_TIMEOUT_S)
        self.send(protocol.request(op, **args))
        return self._result(self.receive())

    def stream(self, op: Op, **args: Any) -> Iterator[dict[str, Any]]:
        """Yield each streamed event; the final reply ends the stream (or raises).

        While waiting for the next line, our stdout is watched too when it is a pipe or a
        socket: once its reader has gone, ``BrokenPipeError`` ends the stream at once (and
        the closed connection tells the daemon to release it)."""
        self.sock.settimeout(None)
        self.send(protocol.request(op, **args))
        self._watch = _watchable_stdout()
        try:
            while True:
                message = self.receive()
                if "event" in message:
                    yield message["event"]
                    continue
                result, _ = self._result(message)
                if result is not None:
                    yield {"result": result}
                return
        finally:
            self._watch = None

    def send_bulk(self, op: Op, chunk_lines: Iterable[bytes], commit: Callable[[], bool] = lambda: True,
                  **args: Any) -> dict[str, Any]:
        """A streamed request (``create_many``): the request, its chunk lines as they are
        produced, then the end line (``commit()`` asked last); returns the raw reply."""
        self.sock.settimeout(None)
        self.send(protocol.request(op, **args))
        for line in chunk_lines:
            self.send(line)
        self.send(protocol.encode({"end": True, "commit": commit()}))
        return self.receive()

    def call_bulk(self, op: Op, chunk_lines: Iterable[bytes], **args: Any) -> tuple[Any, list[str]]:
        return self._result(self.send_bulk(op, chunk_lines, **args))


def _error_of(message: dict[str, Any]) -> BotschedError:
    error = message.get("error") or {}
    code = str(error.get("code"))
    text = str(error.get("message", "the daemon refused the request"))
    if code == protocol.Refused.code:
        return protocol.Refused(text)
    return from_code(code, text)


def _watchable_stdout() -> int | None:
    """Our stdout's descriptor if it is a pipe or a socket (whose reader can go away)."""
    import stat

    try:
        fd = sys.stdout.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, ValueError, OSError):
        return None
    return fd if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else None


def _try_connect(path: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    except PermissionError:
        sock.close()
        raise protocol.Refused(f"cannot reach the daemon at {path}: permission denied{_whose(path)}") from None
    except OSError as exc:
        sock.close()
        raise DaemonUnavailable(f"cannot reach the daemon at {path}: {exc.strerror or exc}") from None
    return sock


def _whose(path: str) -> str:
    """ "; it belongs to another user (uid N)" for the socket or the first directory above it
    that is not ours, else ""."""
    probe = path
    while True:
        try:
            owner = os.stat(probe).st_uid
        except OSError:
            owner = None
        if owner is not None and owner != os.getuid():
            return f" ({probe} belongs to another user, uid {owner}: a daemon serves only its own user)"
        parent = os.path.dirname(probe)
        if parent == probe:
            return ""
        probe = parent


def autostart_allowed(paths: Paths) -> bool:
    if os.environ.get("BOTSCHED_NO_AUTOSTART", "") not in ("", "0"):
        return False
    from botsched.core import config

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


def running_pid(paths: Paths) -> int | None:
    """The pid of the daemon answering on the socket (it says so itself), or ``None``."""
    sock = _try_connect(str(paths.socket))
    if sock is None:
        return None
    with Connection(sock) as conn:
        try:
            result, _ = conn.call(Op.PING)
        except DaemonUnavailable:  # e.g. stopping: closed without answering
            return None
    return int(result["pid"])


def start_daemon(paths: Paths, timeout: float = START_TIMEOUT_S) -> int:
    """Start ``botsched daemon run`` detached; return once a daemon answers, with its pid
    (ours, or the one another client started meanwhile)."""
    return _start(paths, timeout)[0]


def ensure_started(paths: Paths, timeout: float = START_TIMEOUT_S) -> tuple[int, bool]:
    """``daemon start``: ``(pid, True)`` if we started the daemon, ``(pid, False)`` if one
    was running already, or another start won the race (ten at once: one starts it, the
    other nine report its pid, not the pid of their own child that gave up)."""
    pid = running_pid(paths)
    if pid is not None:
        return pid, False
    return _start(paths, timeout, conflicts=True)


def _start(paths: Paths, timeout: float, conflicts: bool = False) -> tuple[int, bool]:
    """Start a daemon; return ``(pid of the daemon that answers, whether it is ours)``.
    With ``conflicts`` (``daemon start``), a daemon that refused to start for a conflict (exit
    4: its agent name is another live agent's) is exit 4 too; otherwise exit 5 (SPEC §5).

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
        pid = running_pid(paths)
        if pid is not None:  # ours, or another client's daemon won the race: fine
            return pid, pid == child.pid
        if child.poll() is not None and child.returncode != 0:
            lines = output.decode(errors="replace").strip().splitlines()
            reason = lines[-1].removeprefix("error: ") if lines else f"exit code {child.returncode}"
            if "already running" in reason:  # the winner is not answering yet
                time.sleep(0.05)
                continue
            if conflicts and child.returncode == ExitStatus.CONFLICT:
                raise Conflict(f"the daemon could not be started: {reason}")
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
            conn.call(Op.STOP)
        except DaemonUnavailable:
            pass  # it may close before answering (a refusal raises: nothing will stop)
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
