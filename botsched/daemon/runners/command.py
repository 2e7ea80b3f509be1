"""``kind = "command"``: the user's own bot program, started at stage time (SPEC §6).

Protocol with the runner process:

- started with an argv list (never a shell), in its own process group, with the daemon's
  environment + ``[runner.env]`` + ``BOTSCHED_BOT_ID``, ``BOTSCHED_MEETING_URL``,
  ``BOTSCHED_BOT_NAME``, ``BOTSCHED_JOIN_AT``, ``BOTSCHED_METADATA`` (JSON);
- stdin receives ``join`` at join_at and ``leave`` on ``botsched leave`` (a second
  ``botsched leave`` stops the runner); it never sees EOF (see below);
- stdout lines ``state NAME [detail]`` report the bot's state; every other stdout and
  stderr line goes to the bot's log (``botsched logs``); a line over ``MAX_LINE`` is
  dropped whole, with a note there;
- once told ``leave``, or once it says ``leaving``, ``post_processing`` or a terminal
  state, it has ``runner.leave_grace_seconds`` to exit: then SIGTERM, SIGKILL 5 s later;
- exit 0 ends the bot; any other exit, or exiting before the join, is ``fatal_error``
  with the exit code and the last stderr lines. The exit ends its output: what is left in
  its pipes is read (bounded in bytes and time), and what it left running in its process
  group is killed (a ``yes &`` would otherwise write to its pipes for ever);
- each runner holds ``FDS_PER_RUNNER`` of the daemon's descriptors: one that would eat
  into the reserve for connections and the store is refused at staging.

**Runners outlive the daemon.** The runner's stdin, stdout and stderr are named pipes
(FIFOs) in the private runner directory, which the runner holds open read-write, so it
never sees EOF or SIGPIPE when the daemon goes away. A restarted daemon (graceful or after
SIGKILL) finds each runner through small files beside its log: ``BOT.pid`` (written by
the runner's shim before the runner starts: pid and kernel start time, so a reused pid is
never mistaken for it), ``BOT.exit`` (its exit status), ``BOT.kill`` (when a leave's
SIGTERM and SIGKILL are due, so a restart carries them out) and, only when the store could
not record a join, ``BOT.joined``. It reopens the FIFOs and carries on: a bot in a meeting
stays in it, a staged bot still joins at join_at, and a ``join`` is never sent twice (the
scheduler records it before sending; a recorded join counts as sent; a join armed in
the join process, ``joiner.py``, leaves ``BOT.intent`` first, and one whose instant is in
the ``joins.fired`` journal counts as sent). Staging a bot whose
runner is still alive (an ad-hoc bot caught starting by a crash) adopts it. The
tiny shim (``shim.py``) keeps the exit status, so a daemon that is not the runner's
parent still knows whether it exited 0. The files go only after the outcome is committed. A runner that
died while no daemon watched is reported with the reason; a staged bot whose runner died
is simply re-staged.

Everything is non-blocking on the event loop: FIFOs are watched with ``add_reader``,
exits with a pidfd (which also works for runners we did not start), and ``join()`` is
one ``write`` of five bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from botsched.core import states
from botsched.core.config import Config
from botsched.core.model import Bot
from botsched.daemon.runners.base import (
    Report,
    Runner,
    RunnerError,
    nofile_limit,
    open_fds,
    reserved_fds,
)
from botsched.daemon.runners.joins import Joins, open_journal, reset_journal
from botsched.daemon.runners.spawner import SpawnedShim, Spawner, SpawnerGone

log = logging.getLogger("botsched.runner")

STDERR_TAIL = 5
KILL_AFTER_TERM_S = 5.0
#: How long a restarted daemon waits for a just-started shim to write its pid file.
PID_FILE_WAIT_S = 2.0
PIPE_SIZE = 1 << 20  # room for a runner's output while the daemon restarts
#: One read per loop callback: a runner that writes without pause shares the loop.
READ_CHUNK = 64 * 1024
#: A stdout/stderr line longer than this is dropped whole, with a note in the bot's log:
#: never kept in part, never parsed from its tail. The unfinished line kept is this big at most.
MAX_LINE = 64 * 1024
#: The runner's exit ends its output: what it left in its pipes is read, at most this much
#: per stream and for at most this long (a leftover child may keep writing for ever).
DRAIN_MAX_BYTES = PIPE_SIZE
DRAIN_TIMEOUT_S = 2.0
#: Descriptors the daemon holds per runner (its log, stdin, stdout, stderr and pidfd);
#: starting one briefly needs as many (the runner's three FIFO ends and Popen's exec pipe).
FDS_PER_RUNNER = 5
#: A bot's log is written from a buffer: at most one write per this many bytes, or per
#: ``LOG_FLUSH_S`` (never a write per line or per read on the loop)...
LOG_FLUSH_BYTES = 256 * 1024
LOG_FLUSH_S = 0.2
#: ...and rotated at this size: ``BOT.log`` becomes ``BOT.log.1`` (the previous one goes),
#: so a runner printing flat out holds at most twice this on disk.
LOG_MAX_BYTES = 16 << 20
_STREAMS = ("in", "out", "err")
SHIM = str(Path(__file__).with_name("shim.py"))


def _check_executable(program: str, env: dict[str, str]) -> None:
    """Fail at stage time, with the reason, when the runner cannot be executed at all."""
    if shutil.which(program, path=env.get("PATH")) is not None:
        return
    path = Path(program)
    if "/" in program and path.exists():
        reason = "Is a directory" if path.is_dir() else "Permission denied (not executable)"
    else:
        reason = "No such file or directory" if "/" in program else "not found on PATH"
    raise RunnerError(f"cannot start {program}: {reason}")


def _process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against pid reuse), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return None if fields[0] == b"Z" else fields[19].decode()
    except (OSError, IndexError):
        return None


def _kill_left(pgid: int, start_time: str) -> None:
    """SIGKILL what is left of a stray runner's process group (``stop_strays``), if anything."""
    if _process_start_time(pgid) == start_time or _group_left_by(pgid, start_time):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def _pending_bytes(fd: int) -> int:
    """How many bytes wait in the pipe ``fd`` reads from."""
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])
    except OSError:
        return 0


def _group_left_by(pgid: int, start_time: str | None) -> bool:
    """Whether the process group ``pgid`` still holds what a runner left behind, for a
    shim we did not reap (re-attached): the pid is not someone else's now, and every
    member is in the runner's session and started after the shim."""
    found = False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return False
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            pgrp, session, started = int(fields[2]), int(fields[3]), int(fields[19])
        except (OSError, IndexError, ValueError):
            continue
        if int(entry) == pgid and start_time is not None and str(started) != start_time:
            return False  # the pid was reused: not the runner's group
        if pgrp == pgid:
            if session != pgid or start_time is None or started < int(start_time):
                return False
            found = True
    return found


#: A shim as started: our child (``subprocess``) or the spawner's.
ShimChild = subprocess.Popen[bytes] | SpawnedShim


def _unreaped(child: ShimChild | None) -> bool:
    if isinstance(child, SpawnedShim):
        return child.unreaped
    return child is not None and child.returncode is None


class RunnerProcess:
    """One bot program: its FIFOs, handle file, log and timers."""

    def __init__(self, runner: CommandRunner, bot_id: str, pid: int, child: ShimChild | None) -> None:
        self.runner = runner
        self.bot_id = bot_id
        self.pid = pid
        self.child = child  # the shim as started (None when re-attached: a previous daemon started it)
        self.start_time = _process_start_time(pid)
        self.log_fd = os.open(runner.log_path(bot_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.log_size = os.fstat(self.log_fd).st_size
        self.log_buf = bytearray()
        self.log_timer: asyncio.TimerHandle | None = None
        self.stdin_fd = -1
        self.read_fds: dict[int, str] = {}
        self.pidfd = -1
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self.partial: dict[int, bytes] = {}  # the unfinished line of each stream (<= MAX_LINE)
        self.skipping: set[int] = set()  # streams inside a line too long to keep: dropped up to its newline
        self.open_streams: set[int] = set()  # stdout/stderr not yet at their end
        self.exited = False  # the shim exited: only what is left in the pipes is read...
        self.drain_left: dict[int, int] = {}  # ...this much per stream
        self.finished = False  # the outcome was reported
        self.noted_long_line = False
        self.joined_us: int | None = None
        self.armed_us: int | None = None  # its join is armed in the joiner for this instant
        self.leaving = False  # its kill deadline is armed (asked to leave, or it said it leaves)
        self.leave_sent = False  # it was told ``leave``: a second request stops it
        self.killed = False  # we sent it SIGKILL: its end is no mystery, even re-attached
        self.last_state: str | None = None
        self.timers: list[asyncio.TimerHandle] = []

    @property
    def joined(self) -> bool:
        return self.joined_us is not None

    def record_join(self, at_us: int) -> None:
        """The runner's own record of a join the store could not take (see ``remember_joins``)."""
        path = self.runner.joined_path(self.bot_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(str(at_us))
        os.replace(tmp, path)

    def open_daemon_ends(self) -> None:
        """Our ends of the FIFOs: write to stdin, read stdout/stderr; all non-blocking."""
        try:
            self.stdin_fd = os.open(self.runner.fifo(self.bot_id, "in"), os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            self.stdin_fd = -1  # the runner already closed its stdin: it is exiting
        for stream in ("out", "err"):
            fd = os.open(self.runner.fifo(self.bot_id, stream), os.O_RDONLY | os.O_NONBLOCK)
            self.read_fds[fd] = stream
            self.open_streams.add(fd)
        self.pidfd = os.pidfd_open(self.pid)

    def write_line(self, text: str) -> None:
        if self.stdin_fd < 0:
            raise OSError(errno.EPIPE, "the runner closed its stdin")
        os.write(self.stdin_fd, text.encode() + b"\n")

    def signal_group(self, signum: int) -> None:
        if _process_start_time(self.pid) != self.start_time:
            return  # gone (or the pid was reused): never signal a stranger
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def log(self, blob: bytes) -> None:
        """Into the bot's log, buffered: flushed at ``LOG_FLUSH_BYTES`` or ``LOG_FLUSH_S``."""
        if self.log_fd < 0:
            return
        self.log_buf += blob
        if len(self.log_buf) >= LOG_FLUSH_BYTES:
            self.flush_log()
        elif self.log_timer is None:
            self.log_timer = asyncio.get_running_loop().call_later(LOG_FLUSH_S, self.flush_log)

    def flush_log(self) -> None:
        """One write of the buffer, rotating the log first when it would pass ``LOG_MAX_BYTES``."""
        if self.log_timer is not None:
            self.log_timer.cancel()
            self.log_timer = None
        if not self.log_buf or self.log_fd < 0:
            self.log_buf.clear()
            return
        if self.log_size and self.log_size + len(self.log_buf) > LOG_MAX_BYTES:
            self._rotate_log()
        data = bytes(self.log_buf[-LOG_MAX_BYTES:])
        self.log_buf.clear()
        with contextlib.suppress(OSError):
            self.log_size += os.write(self.log_fd, data)
        if self.runner.log_sink is not None:  # cluster mode: to the shared database too (daemon/logship.py)
            self.runner.log_sink(self.bot_id, data)

    def _rotate_log(self) -> None:
        path = self.runner.log_path(self.bot_id)
        try:
            os.replace(path, path.with_name(path.name + ".1"))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        except OSError as exc:
            log.warning("cannot rotate the log of %s: %s", self.bot_id, exc.strerror or exc)
            return
        os.close(self.log_fd)
        self.log_fd = fd
        self.log_size = 0

    def disarm(self) -> None:
        """Its armed join, if not sent yet, will not be (the joiner closes its own copy of
        the fd), so its intent goes too: a daemon started after its instant must not count it sent."""
        if self.armed_us is not None and self.runner.timer.disarm(self.bot_id):
            self.armed_us = None
            with contextlib.suppress(OSError):
                self.runner.intent_path(self.bot_id).unlink()

    def close_fds(self) -> None:
        self.flush_log()
        self.disarm()
        loop = asyncio.get_running_loop()
        for fd in [*self.read_fds, self.pidfd]:
            if fd >= 0:
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(fd)
                with contextlib.suppress(OSError):
                    os.close(fd)
        for fd in (self.stdin_fd, self.log_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.read_fds.clear()
        self.pidfd = self.stdin_fd = self.log_fd = -1
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


class CommandRunner(Runner):
    kind = "command"

    def __init__(self, config: Config, report: Report, log_dir: Path) -> None:
        super().__init__(config, report)
        self.log_dir = log_dir
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        #: each flush of a bot's log is also given here (bot_id, bytes), on the loop: memory only
        self.log_sink: Callable[[str, bytes], None] | None = None
        self._procs: dict[str, RunnerProcess] = {}
        #: The instants a previous daemon's joiner reached (its journal), read before this one
        #: appends, once that joiner is surely gone (the lock).
        self._journal_fd, self._fired_before = open_journal(self.journal_path())
        self._journal_reset = False
        self._reports: list[tuple[str, str, str | None]] = []  # state lines not yet reported
        self.timer = Joins(self.collect_fired, grace_us=lambda: self.config.misfire_grace_us)
        self.spawner = Spawner()
        #: Shims forked by the spawner (off: a fresh interpreter each, as when it is gone).
        self.use_spawner = os.environ.get("BOTSCHED_SPAWNER", "1") != "0"

    def start(self) -> None:
        self.timer.start()

    def send_joins_until(self, monotonic_s: float | None) -> None:
        self.timer.send_until(monotonic_s)

    def describe(self) -> str:
        argv = self.config["runner.command"]
        return f"command {argv[0] if argv else '(runner.command is not set)'}"

    def free_slots(self) -> int | None:
        return max(int(self.config["runner.max_concurrent"]) - len(self._procs), 0)

    def log_path(self, bot_id: str) -> Path:
        return self.log_dir / f"{bot_id}.log"

    def pid_path(self, bot_id: str) -> Path:
        """Written by the shim itself, before it starts the runner: no window in which a
        runner exists that a restarted daemon cannot find."""
        return self.log_dir / f"{bot_id}.pid"

    def journal_path(self) -> Path:
        return self.log_dir / "joins.fired"

    def intent_path(self, bot_id: str) -> Path:
        """The instant a bot's join is armed for (written before the joiner gets it)."""
        return self.log_dir / f"{bot_id}.intent"

    def _open_journal(self) -> None:
        """At the first arm (recovery is done by then: every instant the old daemon fired
        has been recorded): start a fresh journal, the joiner's from now on."""
        self._journal_reset = True
        try:
            reset_journal(self._journal_fd)
        except OSError as exc:
            log.error("cannot reset the join journal %s: %s", self.journal_path(), exc.strerror or exc)
            return
        self.timer.set_journal(self._journal_fd)

    def joined_path(self, bot_id: str) -> Path:
        return self.log_dir / f"{bot_id}.joined"

    def kill_path(self, bot_id: str) -> Path:
        """When the SIGTERM and SIGKILL of a leave are due: timers that survive a restart."""
        return self.log_dir / f"{bot_id}.kill"

    def fifo(self, bot_id: str, stream: str) -> Path:
        return self.log_dir / f"{bot_id}.{stream}"

    def exit_path(self, bot_id: str) -> Path:
        return self.log_dir / f"{bot_id}.exit"

    def _exit_code(self, proc: RunnerProcess) -> int | None:
        """The runner's exit status as its shim recorded it (None: the shim was killed too)."""
        try:
            return int(self.exit_path(proc.bot_id).read_text())
        except (OSError, ValueError):
            return proc.child.wait() if proc.child is not None else None

    # -- starting -------------------------------------------------------------------

    def _environment(self, bot: Bot) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.config["runner.env"])
        env.update(
            BOTSCHED_BOT_ID=bot["id"],
            BOTSCHED_MEETING_URL=bot["meeting_url"],
            BOTSCHED_BOT_NAME=bot["bot_name"],
            BOTSCHED_JOIN_AT=bot["join_at"] or "",
            BOTSCHED_METADATA=json.dumps(bot["metadata"], ensure_ascii=False),
        )
        return env

    def _make_fifos(self, bot_id: str) -> list[int]:
        """Fresh FIFOs, and the runner's read-write ends of them (its fds 0, 1, 2)."""
        child_fds: list[int] = []
        try:
            for stream in _STREAMS:
                path = self.fifo(bot_id, stream)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                os.mkfifo(path, 0o600)
                fd = os.open(path, os.O_RDWR)
                if stream != "in":
                    with contextlib.suppress(OSError):
                        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
                child_fds.append(fd)
        except OSError:
            for fd in child_fds:
                os.close(fd)
            raise
        return child_fds

    def stage(self, bot: Bot) -> None:
        argv = list(self.config["runner.command"])
        if not argv:
            raise RunnerError("runner.kind is command but runner.command is empty")
        bot_id = bot["id"]
        if bot_id in self._procs:
            return  # already running: never two runners for one bot
        live = self._live_shim(bot_id)
        if live is not None:  # started by a daemon that died before recording the join
            self._reattach(bot, *live)
            return
        env = self._environment(bot)
        _check_executable(argv[0], env)
        self._check_descriptors()
        self._remove_files(bot_id)
        try:
            child_fds = self._make_fifos(bot_id)
        except OSError as exc:
            self._remove_files(bot_id)
            raise RunnerError(f"cannot create its pipes: {exc.strerror or exc}") from None
        try:
            child = self._start_shim(bot_id, argv, env, child_fds)
        except OSError as exc:
            self._remove_files(bot_id)
            raise RunnerError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
        finally:
            for fd in child_fds:
                os.close(fd)
        proc = RunnerProcess(self, bot_id, child.pid, child)
        self._attach(proc)
        log.info("runner for %s started (pid %d)", bot_id, child.pid)

    def _start_shim(self, bot_id: str, argv: list[str], env: dict[str, str],
                    stdio: list[int]) -> ShimChild:
        """Forked by the spawner (~1 ms); started with ``subprocess`` only when it is gone."""
        pid_file, exit_file = str(self.pid_path(bot_id)), str(self.exit_path(bot_id))
        if self.use_spawner:
            try:
                return SpawnedShim(self.spawner, self.spawner.spawn(pid_file, exit_file, argv, env, stdio))
            except SpawnerGone as exc:
                log.error("%s; runners are started with a fresh interpreter each from now on", exc)
                self.use_spawner = False
        return subprocess.Popen(
            [sys.executable, "-I", "-S", SHIM, pid_file, exit_file, *argv],
            stdin=stdio[0], stdout=stdio[1], stderr=stdio[2], env=env, start_new_session=True, close_fds=True,
        )

    def _check_descriptors(self) -> None:
        """Refuse to start a runner the daemon has no descriptors for, while enough are left
        for its connections, its store and every join (a join never needs a new runner fd)."""
        limit = nofile_limit()
        in_use = open_fds()
        reserve = reserved_fds(limit)
        if in_use + FDS_PER_RUNNER + reserve > limit:
            raise RunnerError(
                f"too few file descriptors left for another runner ({in_use} of the daemon's limit of {limit} "
                f"are open; a runner needs {FDS_PER_RUNNER} and {reserve} stay free for connections and the "
                "store): raise the daemon's open-file limit (LimitNOFILE= in its systemd unit, or ulimit -n) "
                "or lower runner.max_concurrent"
            )

    def _attach(self, proc: RunnerProcess) -> None:
        proc.open_daemon_ends()
        loop = asyncio.get_running_loop()
        for fd in proc.read_fds:
            loop.add_reader(fd, self._on_output, proc, fd)
        loop.add_reader(proc.pidfd, self._on_exit, proc)
        self._procs[proc.bot_id] = proc

    # -- talking --------------------------------------------------------------------

    arms_joins = True
    stage_cost_us = 15_000  # a shim (python -I -S) started, FIFOs made, on a 2-core machine

    def arm_joins(self, due_us: int, bot_ids: list[str]) -> list[str]:
        """The intent first (``BOT.joined`` holding the instant: a restart after it treats
        the join as sent, one before it re-arms), then the fd to the joiner."""
        if not self._journal_reset:
            self._open_journal()
        joins: dict[str, int] = {}
        for bot_id in bot_ids:
            proc = self._procs.get(bot_id)
            if proc is None or proc.joined or proc.stdin_fd < 0 or proc.exited:
                continue
            try:
                path = self.intent_path(bot_id)
                path.with_suffix(".itmp").write_text(str(due_us))
                os.replace(path.with_suffix(".itmp"), path)
            except OSError as exc:  # best effort, as for a join the store refused
                log.error("cannot record the join intent of %s (%s): a daemon crash after its join_at "
                          "could send it again", bot_id, exc.strerror or exc)
            proc.armed_us = due_us
            joins[bot_id] = proc.stdin_fd
        if joins:
            self.timer.arm(due_us, joins)
        return list(joins)

    def armed(self) -> dict[str, int]:
        return {bot_id: proc.armed_us for bot_id, proc in self._procs.items()
                if proc.armed_us is not None and not proc.joined}

    def collect_fired(self) -> None:
        """Joins the joiner wrote (or could not): the processes learn it, then the scheduler
        records them. Also called before a runner's output or exit is handled, so its report
        after ``join`` never overtakes the record of the join."""
        fired = self.timer.take_fired()
        if not fired:
            return
        for item in fired:
            proc = self._procs.get(item.bot_id)
            if proc is None:
                continue
            proc.armed_us = None
            if item.error is None:
                proc.joined_us = item.sent_us
                self._arm_meeting_limit(proc)
        if self.on_joins_sent is not None:
            self.on_joins_sent([(f.bot_id, f.due_us, f.sent_us, f.error) for f in fired])

    def join(self, bot_id: str) -> None:
        proc = self._procs.get(bot_id)
        if proc is None:
            raise RunnerError("its runner is not running")
        if proc.armed_us is not None and not self.timer.disarm(bot_id):
            self.collect_fired()  # the joiner wrote it already: never a second one
        if proc.joined:
            log.warning("join for %s was sent already; not sending it again", bot_id)
            return
        proc.armed_us = None
        try:
            proc.write_line("join")
        except OSError as exc:
            raise RunnerError(f"cannot signal the runner: {exc.strerror or exc}") from None
        proc.joined_us = time.time_ns() // 1000
        self._arm_meeting_limit(proc)

    def remember_joins(self, bot_ids: list[str]) -> None:
        now_us = time.time_ns() // 1000
        for bot_id in bot_ids:
            proc = self._procs.get(bot_id)
            if proc is None:
                continue
            try:
                proc.record_join(now_us)
            except OSError as exc:
                log.error("cannot record the join of %s either (%s): a daemon crash before the store "
                          "records it could send it again", bot_id, exc.strerror or exc)

    def _arm_meeting_limit(self, proc: RunnerProcess) -> None:
        limit = float(self.config["runner.max_in_meeting_seconds"])
        if limit > 0 and proc.joined_us is not None:
            left = limit - (time.time_ns() // 1000 - proc.joined_us) / 1e6
            proc.timers.append(asyncio.get_running_loop().call_later(max(left, 0.0), self._time_up, proc))

    def _time_up(self, proc: RunnerProcess) -> None:
        if proc.leave_sent or proc.exited:
            return  # asked already: the time limit never escalates to a kill by itself
        log.info("%s reached runner.max_in_meeting_seconds; asking it to leave", proc.bot_id)
        self.leave(proc.bot_id)

    def leave(self, bot_id: str) -> str | None:
        """``leave`` on the runner's stdin, then SIGTERM ``runner.leave_grace_seconds`` after
        it began leaving and SIGKILL 5 s later. A runner that already leaves by itself (it
        said ``leaving`` or ``post_processing``) keeps its deadline; one asked a second time
        is stopped at once."""
        proc = self._procs.get(bot_id)
        if proc is None or proc.exited:
            raise RunnerError("its runner is not running")
        if proc.leave_sent:
            log.info("%s was asked to leave again; stopping its runner now", bot_id)
            self._arm_kill(proc, 0.0)
            return (f"{bot_id} was already asked to leave: stopping its runner now "
                    f"(SIGTERM, then SIGKILL {KILL_AFTER_TERM_S:g} s later)")
        proc.leave_sent = True
        with contextlib.suppress(OSError):
            proc.write_line("leave")
        if proc.leaving:  # it said it leaves (or restarted leaving): its kill deadline is armed
            return (f"{bot_id} is already {proc.last_state or 'leaving'}; told its runner to leave, it is stopped "
                    "runner.leave_grace_seconds after it began leaving; leave again to stop it now")
        proc.leaving = True
        self._arm_kill(proc, float(self.config["runner.leave_grace_seconds"]))
        return None

    def _arm_kill(self, proc: RunnerProcess, grace: float) -> None:
        """SIGTERM the process group after ``grace`` seconds, SIGKILL a while later. The
        deadlines are written to ``BOT.kill`` first: a restarted daemon re-arms them."""
        term_us = time.time_ns() // 1000 + int(grace * 1e6)
        deadlines = {"term_us": term_us, "kill_us": term_us + int(KILL_AFTER_TERM_S * 1e6)}
        path = self.kill_path(proc.bot_id)
        try:
            path.with_suffix(".ktmp").write_text(json.dumps(deadlines))
            os.replace(path.with_suffix(".ktmp"), path)
        except OSError as exc:
            log.error("cannot record the kill deadline of %s (%s): a daemon restart would forget it",
                      proc.bot_id, exc.strerror or exc)
        self._schedule_kill(proc, deadlines)

    def _schedule_kill(self, proc: RunnerProcess, deadlines: dict[str, int]) -> None:
        loop = asyncio.get_running_loop()
        now_us = time.time_ns() // 1000
        for key, signum in (("term_us", signal.SIGTERM), ("kill_us", signal.SIGKILL)):
            delay = max(deadlines[key] - now_us, 0) / 1e6
            proc.timers.append(loop.call_later(delay, self._terminate, proc, signum))

    def _rearm_kill(self, proc: RunnerProcess) -> bool:
        """A leave (or kill) deadline a previous daemon recorded for this runner: re-armed."""
        try:
            deadlines = json.loads(self.kill_path(proc.bot_id).read_text())
            deadlines = {key: int(deadlines[key]) for key in ("term_us", "kill_us")}
        except (OSError, ValueError, KeyError, TypeError):
            return False
        proc.leaving = True
        self._schedule_kill(proc, deadlines)
        return True

    def _terminate(self, proc: RunnerProcess, signum: int) -> None:
        log.warning("runner for %s has not exited; sending %s", proc.bot_id, signal.Signals(signum).name)
        if signum == signal.SIGKILL:
            proc.killed = True
        proc.signal_group(signum)

    # -- listening ------------------------------------------------------------------

    def _on_output(self, proc: RunnerProcess, fd: int) -> None:
        """One read of at most ``READ_CHUNK`` per call, on the loop's normal reader: a runner
        (or a child it left) that writes without pause shares the loop, it cannot hold it.
        Once the runner has exited, only what it left in the pipe is read."""
        if proc.armed_us is not None:
            self.collect_fired()  # its join may be out: record it before its reports
        want = READ_CHUNK if not proc.exited else min(READ_CHUNK, proc.drain_left.get(fd, 0))
        try:
            data = os.read(fd, want) if want > 0 else b""
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # every writer closed, or the runner exited and its output is read
            self._end_stream(proc, fd)
            return
        self._take(proc, fd, data)
        if proc.exited:
            proc.drain_left[fd] = proc.drain_left.get(fd, 0) - len(data)
            if proc.drain_left[fd] <= 0:
                self._end_stream(proc, fd)

    def _take(self, proc: RunnerProcess, fd: int, data: bytes) -> None:
        """Split a read into lines. The unfinished line kept is at most ``MAX_LINE``: a line
        that grows longer is dropped whole, up to its newline (never parsed by its tail)."""
        lines = (proc.partial.pop(fd, b"") + data).split(b"\n")
        rest = lines.pop()
        if fd in proc.skipping:
            if not lines:
                return  # still inside the line being dropped
            del lines[0]  # its end
            proc.skipping.discard(fd)
        if len(rest) > MAX_LINE:
            lines.append(rest)  # noted as dropped below; the rest of it up to its newline follows
            proc.skipping.add(fd)
        elif rest:
            proc.partial[fd] = rest
        if lines:
            self._on_lines(proc, fd, lines)

    def _on_lines(self, proc: RunnerProcess, fd: int, lines: list[bytes]) -> None:
        """Complete lines of one stream: all to the bot's log in one write; ``state`` lines
        of stdout reported; the last stderr lines kept for the fatal detail."""
        stream = proc.read_fds.get(fd, "err")
        if max(map(len, lines)) <= MAX_LINE:
            blob = b"\n".join(lines) + b"\n"
            kept = lines
        else:
            kept = [line for line in lines if len(line) <= MAX_LINE]
            blob = b"".join(line + b"\n" if len(line) <= MAX_LINE else self._dropped(proc, stream, line)
                            for line in lines)
        proc.log(blob)
        if stream != "out":
            proc.stderr_tail.extend(line.decode(errors="replace").rstrip("\r") for line in kept[-STDERR_TAIL:])
            return
        if b"state " in blob:
            proc.flush_log()  # what led up to a state change is in the log when it is announced
            for line in kept:
                if line.startswith(b"state "):
                    self._on_state(proc, line.decode(errors="replace").rstrip("\r"))

    def _dropped(self, proc: RunnerProcess, stream: str, line: bytes) -> bytes:
        """The note that replaces a line over ``MAX_LINE`` in the bot's log."""
        began = line[:60].decode(errors="replace")
        if not proc.noted_long_line:
            proc.noted_long_line = True
            log.warning("runner for %s wrote a std%s line over 64 KiB (it began %r); dropped it whole "
                        "(any more are noted in its log only)", proc.bot_id, stream, began)
        return f"[botsched] a std{stream} line over 64 KiB was dropped whole; it began: {began!r}...\n".encode()

    def _on_state(self, proc: RunnerProcess, text: str) -> None:
        _, name, *detail = text.split(" ", 2)
        if name not in states.RUNNER_REPORTABLE:
            log.warning("runner for %s reported unknown or reserved state %r; ignored", proc.bot_id, name)
            return
        proc.last_state = name
        if not self._reports:
            asyncio.get_running_loop().call_soon(self.flush_reports)
        self._reports.append((proc.bot_id, name, detail[0] if detail else None))
        if proc.exited or proc.leaving:
            return
        if states.is_terminal(name) or name in (states.LEAVING, states.POST_PROCESSING):
            # done with the meeting: it must exit within the grace, or it is stopped
            proc.leaving = True
            self._arm_kill(proc, float(self.config["runner.leave_grace_seconds"]))

    def flush_reports(self) -> None:
        """The ``state`` lines read since the last flush, reported together (one commit for a
        burst's 200 at once, not 200); before any other report, so the order holds."""
        reports, self._reports = self._reports, []
        if not reports:
            return
        try:
            if self.report_many is not None:
                self.report_many(reports)
            else:
                for report in reports:
                    self.report(*report)
        except Exception:  # a storage fault: the exit path that drains us must still finish
            log.exception("cannot record %d state(s) reported by runners (%s, ...)", len(reports), reports[0][0])

    def _end_stream(self, proc: RunnerProcess, fd: int) -> None:
        """No more output on this stream: its unfinished line counts as a line."""
        if fd not in proc.open_streams:
            return
        proc.open_streams.discard(fd)
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(fd)
        rest = proc.partial.pop(fd, b"")
        if rest and fd not in proc.skipping:
            self._on_lines(proc, fd, [rest])
        proc.skipping.discard(fd)
        if proc.exited and not proc.open_streams:
            self._finish(proc)

    def _on_exit(self, proc: RunnerProcess) -> None:
        """The shim exited: the runner's output ends here. What it left in its pipes is
        read by the normal readers (at most ``DRAIN_MAX_BYTES`` per stream, within
        ``DRAIN_TIMEOUT_S``), whatever it left running in its process group is killed (a
        ``yes &`` would write for ever), then its outcome is reported."""
        if proc.exited:
            return
        if proc.armed_us is not None:
            self.collect_fired()
        proc.exited = True
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(proc.pidfd)
        for fd in proc.open_streams:
            proc.drain_left[fd] = min(_pending_bytes(fd), DRAIN_MAX_BYTES)
        self._kill_leftovers(proc)
        proc.timers.append(loop.call_later(DRAIN_TIMEOUT_S, self._finish, proc))
        for fd in [fd for fd in proc.open_streams if proc.drain_left[fd] <= 0]:
            self._end_stream(proc, fd)
        if not proc.open_streams:
            self._finish(proc)

    def _kill_leftovers(self, proc: RunnerProcess) -> None:
        """SIGKILL what the runner left in its process group. Safe while the shim is an
        unreaped child (ours or the spawner's): its zombie holds the group id. Any other shim
        was reaped by someone else: its group is signalled only if /proc shows it is still
        the runner's."""
        if not _unreaped(proc.child) and not _group_left_by(proc.pid, proc.start_time):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def _finish(self, proc: RunnerProcess) -> None:
        """Report the outcome of a runner that exited (once its output is read, or on time)."""
        if proc.finished:
            return
        proc.finished = True
        self.flush_reports()
        unread = {proc.read_fds.get(fd, "?"): proc.drain_left.get(fd, 0) for fd in proc.open_streams}
        if any(left > 0 for left in unread.values()):
            log.warning("runner for %s exited; %s of its output left unread after %gs", proc.bot_id,
                        ", ".join(f"{left} bytes of std{name}" for name, left in unread.items()), DRAIN_TIMEOUT_S)
        for fd in list(proc.open_streams):
            self._end_stream(proc, fd)
        if proc.child is not None:
            proc.child.wait()  # reap the shim (ours, or the spawner's)
        code = self._exit_code(proc)
        if code is None and proc.killed:  # re-attached, and we killed it: we know how it ended
            code = -signal.SIGKILL
        tail = " | ".join(proc.stderr_tail)
        proc.close_fds()
        self._procs.pop(proc.bot_id, None)
        if code is None:  # re-attached, and the shim itself was killed: no status anywhere
            self.report(proc.bot_id, states.FATAL_ERROR,
                        f"runner was killed while no daemon watched it{': ' + tail if tail else ''}")
        elif code == 0 and proc.joined:
            self.report(proc.bot_id, states.ENDED, None)
        else:
            why = f"runner killed by {signal.Signals(-code).name}" if code < 0 else f"runner exited with code {code}"
            if not proc.joined:
                why += " before the join"
            self.report(proc.bot_id, states.FATAL_ERROR, f"{why}{': ' + tail if tail else ''}")
        self._remove_files(proc.bot_id)  # only now: the outcome above is committed
        if self.on_slot_freed is not None:
            self.on_slot_freed()

    def _remove_files(self, bot_id: str) -> None:
        paths = [self.pid_path(bot_id), self.joined_path(bot_id), self.exit_path(bot_id), self.kill_path(bot_id),
                 self.intent_path(bot_id)]
        for path in [*paths, *(self.fifo(bot_id, s) for s in _STREAMS)]:
            with contextlib.suppress(OSError):
                path.unlink()

    # -- restarts -------------------------------------------------------------------

    def resume(self, bot: Bot, since_us: int) -> None:
        """Re-attach to the runner a previous daemon started for this bot."""
        bot_id = bot["id"]
        live = self._live_shim(bot_id)
        joined_us = self._joined_us(bot)
        if live is None:
            try:
                code: int | None = int(self.exit_path(bot_id).read_text())
            except (OSError, ValueError):
                code = None
            if bot["state"] == states.STAGED and joined_us is None:
                log.info("runner of %s is gone; re-staging it", bot_id)
                self._remove_files(bot_id)
                self.stage(bot)
                return
            if joined_us is not None and bot["state"] in (states.STAGED, states.READY):
                # join went out, then the daemon died before recording it: record it now
                self.report(bot_id, states.JOINING, "join was signalled just before a daemon restart")
                status = "killed, no exit status" if code is None else f"exit code {code}"
                if code == 0:
                    self.report(bot_id, states.ENDED, "runner exited 0 while the daemon was not running")
                else:
                    self.report(bot_id, states.FATAL_ERROR,
                                f"its runner died while the daemon was not running ({status}; after its join)")
                self._remove_files(bot_id)
                return
            if code == 0 and bot["state"] != states.STAGED:
                self.report(bot_id, states.ENDED, "runner exited 0 while the daemon was not running")
                self._remove_files(bot_id)
                return
            status = "killed, no exit status" if code is None else f"exit code {code}"
            raise RunnerError(
                f"its runner died while the daemon was not running ({status}; the bot was {bot['state']})"
            )
        self._reattach(bot, *live)

    def _live_shim(self, bot_id: str) -> tuple[int, str] | None:
        """The pid and start time of this bot's shim, if a previous daemon's is still alive."""
        pid, start_time = self._read_pid_file(bot_id)
        if pid > 0 and start_time is not None and _process_start_time(pid) == start_time:
            return pid, start_time
        return None

    def _joined_us(self, bot: Bot) -> int | None:
        """When ``join`` went to this bot's runner. A join the store recorded counts as sent
        (it is recorded before it is sent: a kill in between must not make a second one)."""
        try:
            return int(self.joined_path(bot["id"]).read_text())
        except (OSError, ValueError):
            pass
        try:
            armed_us: int | None = int(self.intent_path(bot["id"]).read_text())
        except (OSError, ValueError):
            armed_us = None
        if armed_us is not None and bot["state"] in (states.STAGED, states.READY):
            if armed_us in self._fired_before:
                return armed_us  # the old daemon reached its instant: maybe sent, so counted sent
            with contextlib.suppress(OSError):  # never reached: not sent; armed (or sent late) anew
                self.intent_path(bot["id"]).unlink()
            return None
        if bot["state"] in (states.SCHEDULED, states.READY, states.STAGED):
            return None
        joining = [event["at"] for event in bot.get("events", []) if event["state"] == states.JOINING]
        if joining:
            with contextlib.suppress(ValueError):
                return int(datetime.fromisoformat(joining[0]).timestamp() * 1_000_000)
        return time.time_ns() // 1000

    def _reattach(self, bot: Bot, pid: int, start_time: str) -> None:
        """Watch the live runner a previous daemon started for this bot, re-arming its timers."""
        bot_id = bot["id"]
        proc = RunnerProcess(self, bot_id, pid, None)
        proc.start_time = start_time
        proc.joined_us = self._joined_us(bot)
        proc.last_state = bot["state"]
        try:
            self._attach(proc)
        except OSError as exc:
            proc.close_fds()
            proc.signal_group(signal.SIGKILL)
            self._remove_files(bot_id)
            raise RunnerError(f"cannot re-attach to its runner (pid {pid}): {exc.strerror or exc}") from None
        log.info("re-attached to the runner of %s (pid %d)", bot_id, pid)
        self._arm_meeting_limit(proc)
        if not self._rearm_kill(proc) and bot["state"] in (states.LEAVING, states.POST_PROCESSING):
            proc.leaving = True
            self._arm_kill(proc, float(self.config["runner.leave_grace_seconds"]))
        if bot["state"] in (states.STAGED, states.READY) and proc.joined:
            # join went out while the store refused to record it: record it now, never resend
            self.report(bot_id, states.JOINING, "join was signalled just before a daemon restart")

    def _read_pid_file(self, bot_id: str) -> tuple[int, str | None]:
        """The shim's pid and start time. If its FIFOs exist but the shim has not written
        its pid yet (the old daemon died just as it started one), wait for it briefly:
        re-staging then would start a second runner."""
        deadline = time.monotonic() + (PID_FILE_WAIT_S if self.fifo(bot_id, "in").exists() else 0)
        while True:
            try:
                data = json.loads(self.pid_path(bot_id).read_text())
                return int(data["pid"]), str(data["start_time"])
            except (OSError, ValueError, KeyError, TypeError):
                if time.monotonic() >= deadline:
                    return 0, None
                time.sleep(0.01)

    def stop_strays(self, keep: set[str]) -> list[str]:
        stopped: list[str] = []
        for path in sorted(self.log_dir.glob("*.pid")):
            bot_id = path.stem
            if bot_id in keep or bot_id in self._procs:
                continue
            try:
                data = json.loads(path.read_text())
                pid, start_time = int(data["pid"]), str(data["start_time"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if _process_start_time(pid) != start_time:
                continue  # gone (or the pid is someone else's now)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
            asyncio.get_running_loop().call_later(KILL_AFTER_TERM_S, _kill_left, pid, start_time)
            stopped.append(bot_id)
        return stopped

    def discard(self, bot_id: str) -> None:
        proc = self._procs.get(bot_id)
        if proc is not None:
            proc.disarm()
            proc.signal_group(signal.SIGTERM)
            proc.timers.append(
                asyncio.get_running_loop().call_later(KILL_AFTER_TERM_S, self._terminate, proc, signal.SIGKILL)
            )

    async def close(self) -> None:
        """Graceful daemon stop: runners keep running; the next daemon re-attaches."""
        self.flush_reports()
        for proc in list(self._procs.values()):
            proc.close_fds()
        self._procs.clear()
        self.timer.stop()
        self.spawner.stop()
        if self._journal_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._journal_fd)
            self._journal_fd = -1
