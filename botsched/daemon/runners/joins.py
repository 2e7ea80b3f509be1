"""The daemon's side of the join path: arms joins in the join process, hears what it fired.

The join instants belong to a process of their own (``joiner.py``: why, and the protocol):
the daemon starts it at start-up and arms each staged bot's join ahead of time, handing it
the runner's stdin fd. The loop learns what was written from the socket (``on_fired``) and
records ``joining`` afterwards, as before. What this side guarantees:

- ``disarm`` and the fire are exclusive: once ``disarm`` returns True the join will not be
  written; False means it was written (its report is taken first) or never armed.
- **Never twice, never lost, if the joiner dies** (killed, crashed, or silent for
  ``REPLY_TIMEOUT_S``): it is SIGKILLed and reaped, then each join it held counts as sent if
  its instant is in the journal (the joiner appends the instant before it writes any of
  its joins: maybe sent, so sent), and is armed again otherwise (never reached: not sent;
  an instant already past is fired at once, within the misfire grace). A fresh joiner is
  started; after ``MAX_DEATHS`` deaths within ``DEATH_WINDOW_S``, or when none can be started,
  ``joiner.serve`` runs in a thread of the daemon instead (with the switch interval lowered,
  as that thread needs the GIL at its instants).
- **The journal** (``open_journal``) is preallocated, so a full disk cannot refuse an
  instant's line, and ``flock``-ed by the daemon and its joiner (one open file description):
  a restarted daemon reads it only once the previous daemon and joiner are both gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from botsched.daemon.runners import joiner
from botsched.daemon.runners.spawner import end_helper

log = logging.getLogger("botsched.runner.joins")

JOINER = str(Path(joiner.__file__))
#: A disarm or ping unanswered this long: the joiner is hung, and treated as dead.
REPLY_TIMEOUT_S = 2.0
MAX_DEATHS = 3
DEATH_WINDOW_S = 60.0
#: The thread fallback needs the GIL at its instants: handed over at most this often.
SWITCH_INTERVAL_S = 0.0005
#: Room preallocated for the journal's lines (~60,000 instants per daemon run).
JOURNAL_BYTES = 1 << 20
LOCK_WAIT_S = 5.0


@dataclass(frozen=True)
class Fired:
    """One join the joiner wrote (``error`` None) or could not write."""

    bot_id: str
    due_us: int
    sent_us: int
    error: str | None


def _error(code: bytes) -> str:
    if code in (b"missed", b""):
        return "missed"
    if code == b"short":
        return "short write to the runner's stdin"
    return os.strerror(int(code))


def open_journal(path: Path) -> tuple[int, set[int]]:
    """The journal's fd (locked: waits for a previous daemon's joiner to be gone) and the
    instants it holds (those a previous daemon fired, or may have)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                log.error("the join journal %s is still locked (a previous joiner alive?); reading it anyway", path)
                break
            time.sleep(0.01)
    return fd, journal_instants(fd)


def journal_instants(fd: int) -> set[int]:
    data = os.pread(fd, max(os.fstat(fd).st_size, 1), 0)
    return {int(word) for word in data.replace(b"\0", b" ").split() if word.isdigit()}


def reset_journal(fd: int) -> None:
    """Empty, with its room preallocated (best effort: without it, a full disk can refuse a line)."""
    os.ftruncate(fd, 0)
    try:
        os.posix_fallocate(fd, 0, JOURNAL_BYTES)
    except OSError as exc:
        log.warning("cannot preallocate the join journal: %s", exc.strerror or exc)


class Joins:
    """Arms joins in the joiner (a process; a thread as the fallback) and collects its reports."""

    def __init__(self, on_fired: Callable[[], None], grace_us: Callable[[], int], thread: bool = False) -> None:
        #: Called on the loop when reports have arrived (then ``take_fired``).
        self._on_fired = on_fired
        self._grace_us = grace_us
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = -1  # the fd the loop's reader watches
        self._pending: dict[str, tuple[int, int]] = {}  # bot_id -> (due_us, fd)
        self._fired: list[Fired] = []
        self._journal = -1
        self._until_ns = -1
        self._deaths: list[float] = []
        self._use_thread = thread  # the fallback from the start (where no process may be started)
        self._stopped = False

    @property
    def mode(self) -> str:
        """``process``, ``thread``, or ``""`` (not started)."""
        return "process" if self._proc is not None else "thread" if self._thread is not None else ""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> None:
        """Start the joiner (at daemon start-up; else at the first arm)."""
        self._stopped = False
        if self._sock is None:
            self._spawn()
        self._watch()

    def _spawn(self) -> None:
        """Called on the loop's thread: ``PR_SET_PDEATHSIG`` fires when the spawning *thread*
        exits, so never from a worker thread."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if not self._use_thread:
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", JOINER, str(theirs.fileno()), str(os.getpid())],
                    # not the daemon's stdio: ``daemon start`` waits for those to close
                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            except OSError as exc:
                log.error("cannot start the join process (%s); joins go out from a thread", exc.strerror or exc)
                self._use_thread = True
            else:
                theirs.close()  # the joiner's now
        if self._use_thread:
            if sys.getswitchinterval() > SWITCH_INTERVAL_S:
                sys.setswitchinterval(SWITCH_INTERVAL_S)
            self._thread = threading.Thread(target=joiner.serve, args=(theirs,), name="botsched-joins", daemon=True)
            self._thread.start()
        self._sock = ours
        if self._journal >= 0:
            self._send_journal()
        if self._until_ns != -1:
            self._send(b"L %d" % self._until_ns)

    def _watch(self) -> None:
        """Hear reports on the loop (once a loop runs; re-done after a respawn)."""
        if self._sock is None or self._reading == self._sock.fileno():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._unwatch()
        self._loop = loop
        self._reading = self._sock.fileno()
        loop.add_reader(self._reading, self._readable)

    def _unwatch(self) -> None:
        if self._loop is not None and self._reading >= 0:
            with contextlib.suppress(ValueError, OSError, RuntimeError):
                self._loop.remove_reader(self._reading)
        self._reading = -1

    def stop(self) -> None:
        """Graceful stop: the joiner exits when its socket closes (joins still armed are not sent)."""
        self._stopped = True
        self._unwatch()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._reap(kill=False)
        self._pending.clear()

    def _reap(self, kill: bool) -> None:
        if self._proc is not None:
            end_helper(self._proc, kill)
            self._proc = None
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    # -- the daemon's requests ------------------------------------------------------

    def arm(self, due_us: int, joins: dict[str, int]) -> None:
        """Write ``join`` to each fd (-1: none) at ``due_us``; a bot armed again moves there.
        The caller keeps each fd open until the join is reported or disarmed."""
        if self._sock is None:
            self.start()
        self._watch()
        for bot_id, fd in joins.items():
            self._pending[bot_id] = (due_us, fd)
        self._send_arm(due_us, joins)

    def _send_arm(self, due_us: int, joins: dict[str, int]) -> None:
        items = list(joins.items())
        grace = self._grace_us()
        start = 0
        while start < len(items):
            chunk: list[bytes] = []
            fds: list[int] = []
            fd_count = 0
            while start < len(items) and fd_count < joiner.MAX_FDS and len(chunk) < joiner.REPORT_IDS:
                bot_id, fd = items[start]
                start += 1
                if fd >= 0:
                    fds.append(fd)
                    fd_count += 1
                    chunk.append(bot_id.encode())
                else:
                    chunk.append(b"-" + bot_id.encode())
            self._send(b"A %d %d " % (due_us, grace) + b" ".join(chunk), fds)

    def disarm(self, bot_id: str) -> bool:
        """True: the join was pending and will not be written now."""
        if bot_id not in self._pending:
            return False
        for _ in range(2):  # a second time on a fresh joiner if this one died holding it
            answer = self._ask(b"D " + bot_id.encode(), b"d ")
            if answer is not None:
                self._pending.pop(bot_id, None)
                return answer.endswith(b" 1")
            if bot_id not in self._pending:
                return False  # counted sent by the loss (its instant was in the journal)
        return False

    def armed(self, bot_id: str) -> bool:
        return bot_id in self._pending

    def armed_times(self) -> set[int]:
        return {due for due, _ in self._pending.values()}

    def take_fired(self) -> list[Fired]:
        """The reports in. Once an armed instant has come, asks the joiner first, so that a
        batch being written is reported whole (a runner's answer to its ``join`` never
        overtakes the record of the join)."""
        now = time.time_ns() // 1000
        if any(due <= now for due, _ in self._pending.values()):
            self._ask(b"P", b"p")
        else:
            self._drain()
        fired, self._fired = self._fired, []
        return fired

    def set_journal(self, fd: int) -> None:
        """The journal (see ``open_journal``): each instant goes in before its joins."""
        self._journal = fd
        if self._sock is None:
            self.start()
        self._send_journal()

    def _send_journal(self) -> None:
        data = os.pread(self._journal, max(os.fstat(self._journal).st_size, 1), 0)
        end = data.find(b"\0")
        self._send(b"J %d" % (len(data) if end < 0 else end), [self._journal])

    def send_until(self, monotonic_s: float | None) -> None:
        """Send joins only while ``time.monotonic()`` is below this (a cluster agent's leases)."""
        self._until_ns = -1 if monotonic_s is None else int(monotonic_s * 1e9)
        if self._sock is not None:  # else sent when it starts
            self._send(b"L %d" % self._until_ns)

    # -- the socket -----------------------------------------------------------------

    def _send(self, message: bytes, fds: list[int] | None = None) -> None:
        assert self._sock is not None
        try:
            if fds:
                socket.send_fds(self._sock, [message], fds)
            else:
                self._sock.send(message)
        except OSError as exc:
            self._lost(f"cannot reach it ({exc.strerror or exc})")

    def _readable(self) -> None:
        self._drain()
        if self._fired:
            self._on_fired()

    def _ask(self, message: bytes, answer: bytes) -> bytes | None:
        """Send and wait for the answer (reports read meanwhile). None: the joiner was lost."""
        sock = self._sock
        if sock is None:
            return None
        self._send(message)
        return self._drain(answer) if self._sock is sock else None

    def _drain(self, wait_for: bytes | None = None) -> bytes | None:
        """Take every message waiting; with ``wait_for``, wait for the answer that starts so."""
        sock = self._sock
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while sock is not None and sock is self._sock:
            try:
                data = sock.recv(joiner.RECV_BYTES, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if wait_for is None:
                    return None
                left = deadline - time.monotonic()
                if left > 0 and select.select([sock], [], [], left)[0]:
                    continue
                self._lost(f"no answer in {REPLY_TIMEOUT_S:g} s")
                return None
            except OSError:
                data = b""
            if not data:
                self._lost("it exited")
                return None
            if data.startswith(b"F "):
                self._take_report(data)
            elif wait_for is not None and data.startswith(wait_for):
                return data
        return None

    def _take_report(self, data: bytes) -> None:
        fields = data.split()
        due, sent = int(fields[1]), int(fields[2])
        for item in fields[3:]:
            raw, _, code = item.partition(b"=")
            bot_id = raw.decode()
            self._pending.pop(bot_id, None)
            self._fired.append(Fired(bot_id, due, sent, _error(code) if code else None))

    # -- when the joiner dies -------------------------------------------------------

    def _lost(self, why: str) -> None:
        """Reap it, count what it may have sent as sent, arm the rest on a fresh joiner."""
        if self._stopped or self._sock is None:
            return
        log.error("the join %s died (%s); %d armed join(s) taken over", self.mode or "joiner", why,
                  len(self._pending))
        self._unwatch()
        self._sock.close()
        self._sock = None
        self._reap(kill=True)  # surely gone before the journal is read
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < DEATH_WINDOW_S] + [now]
        if len(self._deaths) >= MAX_DEATHS and not self._use_thread:
            log.error("the join process died %d times in %g s: joins go out from a thread now", MAX_DEATHS,
                      DEATH_WINDOW_S)
            self._use_thread = True
        reached = journal_instants(self._journal) if self._journal >= 0 else set()
        again: dict[int, dict[str, int]] = {}
        maybe = 0
        for bot_id, (due, fd) in list(self._pending.items()):
            if due in reached:
                del self._pending[bot_id]
                self._fired.append(Fired(bot_id, due, due, None))  # maybe sent: so, sent
                maybe += 1
            else:
                again.setdefault(due, {})[bot_id] = fd
        if maybe:
            log.warning("%d join(s) the dead joiner may have sent are counted as sent", maybe)
            if self._loop is not None:
                self._loop.call_soon(self._on_fired)
        self._spawn()
        self._watch()
        for due, joins in sorted(again.items()):
            self._send_arm(due, joins)
