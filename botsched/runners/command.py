"""``kind = "command"``: the user's own bot program, started at stage time (SPEC §6).

Protocol with the runner process:

- started with an argv list (never a shell), in its own process group, with the daemon's
  environment + ``[runner.env]`` + ``BOTSCHED_BOT_ID``, ``BOTSCHED_MEETING_URL``,
  ``BOTSCHED_BOT_NAME``, ``BOTSCHED_JOIN_AT``, ``BOTSCHED_METADATA`` (JSON);
- stdin receives ``join`` at join_at and ``leave`` on ``botsched leave`` (EOF: the daemon
  is gone);
- stdout lines ``state NAME [detail]`` report the bot's state; every other stdout and
  stderr line goes to the bot's log (``botsched logs``);
- exit 0 ends the bot; any other exit, or exiting before the join, is ``fatal_error``
  with the exit code and the last stderr lines.

Everything here is non-blocking on the event loop: pipes are watched with
``add_reader``, exits with a pidfd, so ``join()`` is one ``write`` of five bytes.

A small handle file per live runner (pid, start time, whether ``join`` was sent) lets a
restarted daemon find runners of its predecessor: they are stopped, never doubled, and the
bot is re-staged (before its join) or failed with a reason (after it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections import deque
from pathlib import Path
from typing import Any

from botsched import states
from botsched.config import Config
from botsched.runners.base import Report, Runner, RunnerError

log = logging.getLogger("botsched.runner")

STDERR_TAIL = 5
KILL_AFTER_TERM_S = 5.0


def _process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against pid reuse), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()
    except (OSError, IndexError):
        return None


class RunnerProcess:
    """One running bot program and the pipes and timers around it."""

    def __init__(self, bot_id: str, popen: subprocess.Popen[bytes], log_path: Path, handle_path: Path) -> None:
        self.bot_id = bot_id
        self.popen = popen
        self.log_path = log_path
        self.handle_path = handle_path
        self.log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self.partial: dict[int, bytes] = {}
        self.joined = False
        self.leaving = False
        self.timers: list[asyncio.TimerHandle] = []
        self.pidfd: int | None = None
        self.start_time = _process_start_time(popen.pid)
        self.save_handle()

    def save_handle(self) -> None:
        data = {"pid": self.popen.pid, "start_time": self.start_time, "joined": self.joined}
        tmp = self.handle_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.handle_path)

    def write_line(self, text: str) -> None:
        assert self.popen.stdin is not None
        os.write(self.popen.stdin.fileno(), text.encode() + b"\n")

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)


class CommandRunner(Runner):
    kind = "command"

    def __init__(self, config: Config, report: Report, log_dir: Path) -> None:
        super().__init__(config, report)
        self.log_dir = log_dir
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._procs: dict[str, RunnerProcess] = {}

    def describe(self) -> str:
        argv = self.config["runner.command"]
        return f"command {argv[0] if argv else '(runner.command is not set)'}"

    def free_slots(self) -> int | None:
        return max(int(self.config["runner.max_concurrent"]) - len(self._procs), 0)

    def log_path(self, bot_id: str) -> Path:
        return self.log_dir / f"{bot_id}.log"

    def _handle_path(self, bot_id: str) -> Path:
        return self.log_dir / f"{bot_id}.runner"

    # -- starting -------------------------------------------------------------------

    def _environment(self, bot: dict[str, Any]) -> dict[str, str]:
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

    def stage(self, bot: dict[str, Any]) -> None:
        argv = list(self.config["runner.command"])
        if not argv:
            raise RunnerError("runner.kind is command but runner.command is empty")
        bot_id = bot["id"]
        if bot_id in self._procs:
            return  # already running: never two runners for one bot
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._environment(bot),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise RunnerError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
        proc = RunnerProcess(bot_id, popen, self.log_path(bot_id), self._handle_path(bot_id))
        self._procs[bot_id] = proc
        loop = asyncio.get_running_loop()
        for pipe in (popen.stdout, popen.stderr):
            assert pipe is not None
            os.set_blocking(pipe.fileno(), False)
            loop.add_reader(pipe.fileno(), self._on_output, proc, pipe.fileno())
        assert popen.stdin is not None
        os.set_blocking(popen.stdin.fileno(), False)
        proc.pidfd = os.pidfd_open(popen.pid)
        loop.add_reader(proc.pidfd, self._on_exit, proc)
        log.info("runner for %s started (pid %d)", bot_id, popen.pid)

    # -- talking --------------------------------------------------------------------

    def join(self, bot_id: str) -> None:
        proc = self._procs.get(bot_id)
        if proc is None:
            raise RunnerError("its runner is not running")
        try:
            proc.write_line("join")
        except OSError as exc:
            raise RunnerError(f"cannot signal the runner: {exc.strerror or exc}") from None
        proc.joined = True
        proc.save_handle()
        limit = float(self.config["runner.max_in_meeting_seconds"])
        if limit > 0:
            proc.timers.append(asyncio.get_running_loop().call_later(limit, self._time_up, proc))

    def _time_up(self, proc: RunnerProcess) -> None:
        log.info("%s reached max_in_meeting_seconds; asking it to leave", proc.bot_id)
        self.leave(proc.bot_id)

    def leave(self, bot_id: str) -> None:
        proc = self._procs.get(bot_id)
        if proc is None:
            raise RunnerError("its runner is not running")
        if proc.leaving:
            return
        proc.leaving = True
        with contextlib.suppress(OSError):
            proc.write_line("leave")
        loop = asyncio.get_running_loop()
        grace = float(self.config["runner.leave_grace_seconds"])
        proc.timers.append(loop.call_later(grace, self._terminate, proc, signal.SIGTERM))
        proc.timers.append(loop.call_later(grace + KILL_AFTER_TERM_S, self._terminate, proc, signal.SIGKILL))

    def _terminate(self, proc: RunnerProcess, signum: int) -> None:
        if proc.popen.poll() is None:
            log.warning("runner for %s did not exit after leave; sending %s", proc.bot_id, signal.Signals(signum).name)
            proc.signal_group(signum)

    # -- listening ------------------------------------------------------------------

    def _on_output(self, proc: RunnerProcess, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(fd)
            data = proc.partial.pop(fd, b"")
            if data:
                self._on_line(proc, fd, data)
            return
        data = proc.partial.pop(fd, b"") + data
        *lines, rest = data.split(b"\n")
        if rest:
            proc.partial[fd] = rest[-65536:]
        for line in lines:
            self._on_line(proc, fd, line)

    def _on_line(self, proc: RunnerProcess, fd: int, raw: bytes) -> None:
        text = raw.decode(errors="replace").rstrip("\r")
        is_stdout = proc.popen.stdout is not None and fd == proc.popen.stdout.fileno()
        with contextlib.suppress(OSError):
            os.write(proc.log_fd, raw + b"\n")
        if not is_stdout:
            proc.stderr_tail.append(text)
            return
        if text.startswith("state "):
            _, name, *detail = text.split(" ", 2)
            if name not in states.RUNNER_REPORTABLE:
                log.warning("runner for %s reported unknown or reserved state %r; ignored", proc.bot_id, name)
                return
            self.report(proc.bot_id, name, detail[0] if detail else None)

    def _on_exit(self, proc: RunnerProcess) -> None:
        loop = asyncio.get_running_loop()
        assert proc.pidfd is not None
        loop.remove_reader(proc.pidfd)
        os.close(proc.pidfd)
        code = proc.popen.wait()
        for pipe in (proc.popen.stdout, proc.popen.stderr):
            if pipe is not None and not pipe.closed:  # drain what is left, then close
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(pipe.fileno())
                    self._drain(proc, pipe.fileno())
                pipe.close()
        self._release(proc)
        tail = " | ".join(proc.stderr_tail)
        if code == 0 and proc.joined:
            self.report(proc.bot_id, states.ENDED, None)
        else:
            if code < 0:
                why = f"runner killed by {signal.Signals(-code).name}"
            else:
                why = f"runner exited with code {code}"
            if not proc.joined:
                why += " before the join"
            self.report(proc.bot_id, states.FATAL_ERROR, f"{why}{': ' + tail if tail else ''}")
        if self.on_slot_freed is not None:
            self.on_slot_freed()

    def _drain(self, proc: RunnerProcess, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 65536)
            except (BlockingIOError, OSError):
                break
            if not data:
                break
            data = proc.partial.pop(fd, b"") + data
            *lines, rest = data.split(b"\n")
            proc.partial[fd] = rest
            for line in lines:
                self._on_line(proc, fd, line)
        rest = proc.partial.pop(fd, b"")
        if rest:
            self._on_line(proc, fd, rest)

    def _release(self, proc: RunnerProcess) -> None:
        for timer in proc.timers:
            timer.cancel()
        if proc.popen.stdin is not None:
            with contextlib.suppress(OSError):
                proc.popen.stdin.close()
        with contextlib.suppress(OSError):
            os.close(proc.log_fd)
        with contextlib.suppress(OSError):
            proc.handle_path.unlink()
        self._procs.pop(proc.bot_id, None)

    # -- restarts -------------------------------------------------------------------

    def _stop_orphan(self, bot_id: str) -> bool:
        """Kill a runner left by a previous daemon (pid-reuse safe); True if join was sent."""
        path = self._handle_path(bot_id)
        try:
            handle = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        pid = int(handle.get("pid", 0))
        if pid > 0 and handle.get("start_time") and _process_start_time(pid) == handle["start_time"]:
            log.warning("stopping orphaned runner of %s (pid %d) left by a previous daemon", bot_id, pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 2.0
            while _process_start_time(pid) == handle["start_time"] and time.monotonic() < deadline:
                time.sleep(0.01)
        with contextlib.suppress(OSError):
            path.unlink()
        return bool(handle.get("joined"))

    def resume(self, bot: dict[str, Any], since_us: int) -> None:
        """Pipes do not survive the daemon: stop the old runner; re-stage a bot that had
        not joined yet, fail one that had (a second ``join`` must never happen)."""
        joined = self._stop_orphan(bot["id"])
        if bot["state"] == states.STAGED and not joined:
            log.info("re-staging %s after a daemon restart", bot["id"])
            self.stage(bot)
            return
        raise RunnerError(f"the daemon restarted while the bot was {bot['state']}; its runner was stopped")

    def discard(self, bot_id: str) -> None:
        proc = self._procs.get(bot_id)
        if proc is not None and proc.popen.poll() is None:
            proc.signal_group(signal.SIGTERM)
            proc.timers.append(
                asyncio.get_running_loop().call_later(KILL_AFTER_TERM_S, self._terminate, proc, signal.SIGKILL)
            )

    async def close(self) -> None:
        """Graceful daemon stop: runners are left running; the next daemon handles them."""
        loop = asyncio.get_running_loop()
        for proc in list(self._procs.values()):
            for timer in proc.timers:
                timer.cancel()
            for pipe in (proc.popen.stdout, proc.popen.stderr):
                if pipe is not None:
                    with contextlib.suppress(ValueError, OSError):
                        loop.remove_reader(pipe.fileno())
            if proc.pidfd is not None:
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(proc.pidfd)
