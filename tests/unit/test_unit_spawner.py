"""The spawner: shims forked from one warm interpreter, held as zombies until reaped, and a
clear ``SpawnerGone`` (the runner's cue to fall back) once it is gone. Real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from botsched.daemon.runners.spawner import SpawnedShim, Spawner, SpawnerGone

RUNNER = "import os, sys; print(os.environ['GREETING'], os.getsid(0), flush=True); sys.stdin.readline(); sys.exit(3)"


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as handle:
        return handle.read().rsplit(b")", 1)[1].split()[0].decode()


def _wait_for(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _start(spawner: Spawner, tmp_path: Path, stdin: tuple[int, int] | None = None) -> tuple[int, int, int]:
    """A shim running RUNNER; returns (shim pid, write end of its stdin, read end of its stdout)."""
    stdin_r, stdin_w = stdin or os.pipe()
    stdout_r, stdout_w = os.pipe()
    env = {"GREETING": "hello", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    try:
        pid = spawner.spawn(str(tmp_path / "b.pid"), str(tmp_path / "b.exit"), [sys.executable, "-c", RUNNER], env,
                            [stdin_r, stdout_w, stdout_w])
    finally:
        os.close(stdin_r)
        os.close(stdout_w)
    return pid, stdin_w, stdout_r


def test_a_spawned_shim_runs_the_runner_in_its_own_session_and_is_held_until_reaped(tmp_path: Path) -> None:
    spawner = Spawner()
    try:
        pid, stdin_w, stdout_r = _start(spawner, tmp_path)
        greeting, session = os.read(stdout_r, 100).decode().split()
        assert greeting == "hello"  # the environment it was given, not the daemon's
        assert int(session) == pid  # a session of its own, led by the shim (start_new_session)
        _wait_for(lambda: (tmp_path / "b.pid").exists())
        assert f'"pid": {pid}' in (tmp_path / "b.pid").read_text()
        os.write(stdin_w, b"leave\n")
        _wait_for(lambda: _state(pid) == "Z")  # exited, and nobody reaped it yet: the group id stays held
        child = SpawnedShim(spawner, pid)
        assert child.unreaped
        assert (tmp_path / "b.exit").read_text() == "3"
        assert child.wait() == 3
        assert not child.unreaped
        assert not os.path.exists(f"/proc/{pid}")
        os.close(stdin_w)
        os.close(stdout_r)
    finally:
        spawner.stop()


def test_shims_outlive_the_spawner_and_a_dead_spawner_is_reported_gone(tmp_path: Path) -> None:
    spawner = Spawner()
    pid, stdin_w, stdout_r = _start(spawner, tmp_path)
    assert os.read(stdout_r, 100).startswith(b"hello")
    assert spawner._proc is not None
    spawner._proc.kill()  # as if it crashed
    spawner._proc.wait()
    assert _state(pid) != "Z"  # the shim and its runner keep running (reparented)
    assert SpawnedShim(spawner, pid).wait() is None  # no one to say how it ended: the exit file will
    with pytest.raises(SpawnerGone):
        _start(spawner, tmp_path)
    assert not spawner.alive
    with pytest.raises(SpawnerGone):  # and it stays gone: the runner starts shims the old way
        _start(spawner, tmp_path)
    os.write(stdin_w, b"leave\n")
    _wait_for(lambda: (tmp_path / "b.exit").exists())
    assert (tmp_path / "b.exit").read_text() == "3"
    os.close(stdin_w)
    os.close(stdout_r)
    spawner.stop()


def test_the_spawner_dies_with_its_daemon(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a SIGKILLed daemon leaves no spawner behind (but its shims run on)."""
    read_end, write_end = os.pipe()
    stdin = os.pipe()  # its write end stays open here: the runner must not see EOF when the daemon dies
    daemon = os.fork()
    if daemon == 0:
        os.close(read_end)
        spawner = Spawner()
        pid, _, _ = _start(spawner, tmp_path, stdin)
        assert spawner._proc is not None
        os.write(write_end, b"%d %d" % (spawner._proc.pid, pid))
        signal.pause()
        os._exit(0)
    os.close(write_end)
    spawner_pid, shim_pid = (int(x) for x in os.read(read_end, 100).split())
    os.close(read_end)
    os.close(stdin[0])
    os.kill(daemon, signal.SIGKILL)
    os.waitpid(daemon, 0)
    _wait_for(lambda: not os.path.exists(f"/proc/{spawner_pid}") or _state(spawner_pid) == "Z")
    assert os.path.exists(f"/proc/{shim_pid}") and _state(shim_pid) != "Z"
    os.killpg(shim_pid, signal.SIGKILL)
    os.close(stdin[1])


def _slice_ns(text: str) -> int | None:
    """``se.slice`` of a ``/proc/PID/sched`` text (Linux 6.12+), if shown."""
    for line in text.splitlines():
        if line.startswith("se.slice"):
            return int(line.split(":")[1])
    return None


SHOW_SLICE = "import sys; print(open('/proc/self/sched').read(), flush=True); sys.stdin.readline()"


@pytest.mark.parametrize("started_by", ["spawner", "shim alone"])
def test_a_runner_asks_for_short_time_slices_and_its_shim_keeps_the_default(tmp_path: Path, started_by: str) -> None:
    """A woken runner must preempt the task on a busy CPU at once (shim.RUNNER_SLICE_NS)."""
    default = _slice_ns(Path("/proc/self/sched").read_text())
    if default is None:
        pytest.skip("this kernel does not show se.slice in /proc/PID/sched")
    from botsched.daemon.runners import shim as shim_module
    from botsched.daemon.runners.spawner import SHIM

    assert default > shim_module.RUNNER_SLICE_NS  # (else the test proves nothing)
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    argv = [sys.executable, "-c", SHOW_SLICE]
    spawner = Spawner() if started_by == "spawner" else None
    alone: subprocess.Popen[bytes] | None = None
    try:
        if spawner is not None:
            pid = spawner.spawn(str(tmp_path / "b.pid"), str(tmp_path / "b.exit"), argv,
                                {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, [stdin_r, stdout_w, stdout_w])
        else:
            alone = subprocess.Popen([sys.executable, "-I", "-S", SHIM, str(tmp_path / "b.pid"),
                                      str(tmp_path / "b.exit"), *argv], stdin=stdin_r, stdout=stdout_w)
            pid = alone.pid
        os.close(stdin_r)
        os.close(stdout_w)
        runner_sched = b""
        while b"\n\n" not in runner_sched:  # (print's own newline ends the file's text)
            chunk = os.read(stdout_r, 65536)
            assert chunk, f"the runner ended early: {runner_sched!r}"
            runner_sched += chunk
        os.close(stdout_r)
        assert _slice_ns(runner_sched.decode()) == shim_module.RUNNER_SLICE_NS
        assert _slice_ns(Path(f"/proc/{pid}/sched").read_text()) == default  # the shim itself: unchanged
        os.write(stdin_w, b"leave\n")
        _wait_for(lambda: (tmp_path / "b.exit").exists())
    finally:
        os.close(stdin_w)
        if alone is not None:
            alone.wait(timeout=10)
        if spawner is not None:
            spawner.stop()
