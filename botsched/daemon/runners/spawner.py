"""Starts runners' shims by forking a warm interpreter: staging a bot costs ~1 ms of CPU, not ~20.

A shim started as ``python -I -S shim.py`` spends ~20 ms of CPU starting an interpreter. A
spread of 20 bots a second then keeps ~40% of a core busy at the very moments the join
process is waking other runners, and on 2 cores a woken runner waits behind it (measured:
the spread's runner-side p99 fell from 5-8 ms to ~3 ms once staging was out of the way). So
the command runner starts this module once, as ``python -I -S spawner.py FD PPID`` (stdlib
only), and asks it over a ``SOCK_SEQPACKET`` socketpair to fork each shim:

- ``S`` + JSON ``[pid_file, exit_file, argv, env]`` + 3 fds (the runner's stdin, stdout,
  stderr): answered ``s PID`` (the shim's pid: a new session, as ``start_new_session``) or
  ``e ERRNO MESSAGE``;
- ``R PID``: answered ``r PID CODE`` once reaped (``?``: not ours). Until then the shim stays a
  zombie of this process, holding its process group's id, so the daemon's kill of what a
  runner left in its group can never hit a stranger (as with a shim that is its own child).

It dies with the daemon (``PR_SET_PDEATHSIG``) or when the socket closes; the shims do not:
they are re-attached by the next daemon, as before. ``CommandRunner`` falls back to starting
the shim with ``subprocess`` when this process cannot be started or stops answering.
"""

from __future__ import annotations

import array
import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

RECV_BYTES = 1 << 20  # argv and environment of one runner
REPLY_TIMEOUT_S = 5.0
SPAWNER = str(Path(__file__))
SHIM = str(Path(__file__).with_name("shim.py"))
_IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# -- the spawner process ----------------------------------------------------------


def _load_shim() -> ModuleType:
    """``shim.py`` beside this file (``-I`` puts no script directory on ``sys.path``)."""
    spec = importlib.util.spec_from_file_location("botsched_shim", SHIM)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _be_shim(shim: ModuleType, request: list[object], fds: list[int], sock: socket.socket) -> None:
    """In the forked child: the runner's stdio, its own session and environment, then the shim."""
    code = 70
    try:
        sock.close()
        os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(3, 1 << 16)
        for signum in _IGNORED:
            signal.signal(signum, signal.SIG_DFL)
        pid_file, exit_file, argv, env = request
        assert isinstance(pid_file, str) and isinstance(exit_file, str)
        assert isinstance(argv, list) and isinstance(env, dict)
        os.environ.clear()
        os.environ.update(env)
        shim.run(pid_file, exit_file, [str(arg) for arg in argv])
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    finally:
        os._exit(code)


def _status(pid: int) -> bytes:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return b"?"
    return b"%d" % (-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


def serve(sock: socket.socket) -> None:
    """Fork shims and reap them on request until the daemon's end of ``sock`` closes."""
    shim = _load_shim()
    import ctypes  # noqa: F401 -- loaded once here, not in each forked shim (ask_short_slices)

    fd_size = array.array("i").itemsize
    while True:
        try:
            data, ancillary, _, _ = sock.recvmsg(RECV_BYTES, socket.CMSG_LEN(3 * fd_size))
        except InterruptedError:
            continue
        except OSError:
            return
        if not data:
            return
        fds = array.array("i")
        for level, kind, blob in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(blob[:len(blob) - len(blob) % fd_size])
        answer = b"e 22 bad request"
        if data[:2] == b"S " and len(fds) == 3:
            try:
                pid = os.fork()
            except OSError as exc:
                answer = b"e %d %s" % (exc.errno or 11, (exc.strerror or "fork failed").encode())
            else:
                if pid == 0:
                    _be_shim(shim, json.loads(data[2:]), list(fds), sock)
                answer = b"s %d" % pid
        elif data[:2] == b"R ":
            answer = b"r %s %s" % (data[2:], _status(int(data[2:])))
        for fd in fds:
            os.close(fd)
        try:
            sock.sendall(answer)
        except OSError:
            return


def main(argv: list[str]) -> None:
    import ctypes

    fd, parent = int(argv[1]), int(argv[2])
    for signum in _IGNORED:
        signal.signal(signum, signal.SIG_IGN)
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)
    serve(socket.socket(fileno=fd))


# -- the daemon's side --------------------------------------------------------------


def end_helper(proc: subprocess.Popen[bytes], kill: bool = False) -> None:
    """Reap a helper process (the spawner, the join process) once its socket is closed: it
    exits on its own; SIGKILL it at once if ``kill``, or after 2 s if it lingers."""
    if kill:
        with contextlib.suppress(OSError):
            proc.kill()
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class SpawnerGone(Exception):
    """The spawner could not be started or stopped answering: start shims another way."""


class Spawner:
    """The daemon's handle on the spawner process (started at the first ``spawn``)."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._broken = False
        self._lock = threading.Lock()

    @property
    def alive(self) -> bool:
        """Running (so the shims it forked and has not reaped are still its zombies)."""
        return self._proc is not None and self._proc.poll() is None

    def _start(self) -> socket.socket:
        """Called on the loop's thread (``PR_SET_PDEATHSIG`` follows the spawning thread)."""
        if self._broken:
            raise SpawnerGone("the spawner failed earlier")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", SPAWNER, str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError as exc:
            ours.close()
            self._broken = True
            raise SpawnerGone(f"cannot start the spawner: {exc.strerror or exc}") from None
        finally:
            theirs.close()
        ours.settimeout(REPLY_TIMEOUT_S)
        self._sock, self._proc = ours, proc
        return ours

    def _ask(self, message: bytes, fds: list[int] | None = None) -> bytes:
        with self._lock:
            sock = self._sock or self._start()
            try:
                if fds:
                    sock.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
                else:
                    sock.sendall(message)
                answer = sock.recv(4096)
            except OSError as exc:
                answer = b""
                why = str(exc)
            else:
                why = "it exited"
            if not answer:
                self._kill()
                self._broken = True
                raise SpawnerGone(f"the spawner stopped answering ({why})")
            return answer

    def spawn(self, pid_file: str, exit_file: str, argv: list[str], env: dict[str, str], stdio: list[int]) -> int:
        """The pid of a new shim running ``argv`` on ``stdio``. OSError: it could not fork."""
        answer = self._ask(b"S " + json.dumps([pid_file, exit_file, argv, env]).encode(), stdio)
        kind, _, rest = answer.partition(b" ")
        if kind == b"s":
            return int(rest)
        errno_text, _, message = rest.partition(b" ")
        raise OSError(int(errno_text or 5), message.decode(errors="replace"))

    def reap(self, pid: int) -> int | None:
        """The exit status of a shim it forked, which stops being a zombie; None if unknown."""
        if not self.alive:
            return None
        try:
            code = self._ask(b"R %d" % pid).split()[-1]
        except SpawnerGone:
            return None
        return int(code) if code.lstrip(b"-").isdigit() else None

    def _kill(self) -> None:
        self.stop(kill=True)

    def stop(self, kill: bool = False) -> None:
        """The spawner exits when its socket closes; the shims it forked keep running."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            end_helper(self._proc, kill)
            self._proc = None


class SpawnedShim:
    """A shim the spawner forked: it, not the daemon, is the shim's parent."""

    def __init__(self, spawner: Spawner, pid: int) -> None:
        self.spawner = spawner
        self.pid = pid
        self.returncode: int | None = None
        self._reaped = False

    @property
    def unreaped(self) -> bool:
        """Its zombie still holds the process group's id (the spawner lives and has not reaped it)."""
        return not self._reaped and self.spawner.alive

    def wait(self) -> int | None:
        if not self._reaped:
            self.returncode = self.spawner.reap(self.pid)
            self._reaped = True
        return self.returncode


if __name__ == "__main__":
    main(sys.argv)
