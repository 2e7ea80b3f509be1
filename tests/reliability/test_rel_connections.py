"""Connections and storage under adversity (issue 10, items 8, 9, 10 and 15).

- Departed ``events --follow`` and ``wait`` clients are released at once, not at the next
  event (which, for an ended bot, never comes): 300 of them leave the daemon's descriptor
  count where it was, and ``events --follow | head -1`` itself ends (exit 141).
- The database file or its WAL deleted (or replaced) under a running daemon: changes are
  refused with exit 5 and one ``error:`` line, the log says so at CRITICAL, ``daemon
  status`` warns, a copy of the data is saved beside it, and the bots it knew still join.
- An existing ``BOTSCHED_HOME`` is never chmod'ed: a shared (1777) one is refused with its
  mode kept, a 0755 one of ours is used as it is; what botsched creates is 0700.
- Refusals say what happened: another uid gets "belongs to another user" with exit 5
  (``create``, ``list``, ``daemon status``, ``daemon stop`` at once, not after 15 s); a
  client over the connection cap gets "too many connections", never "Broken pipe"; ten
  parallel ``daemon start`` print one "started" and nine "already running" with the pid of
  the daemon that really runs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time

import pytest

from botsched.daemon import main as daemon_mod
from tests.support.home import Client, Lost, assert_clean_error, pid_alive, wait_until
from tests.support.times import in_s

from .relhelpers import fd_count, is_root

URL = "https://meet.google.com/abc-defg-hij"
FAR = in_s(200 * 86400)  # far enough never to come due, within the 3-year limit
ROUNDS = 300


def _request(op: str, **args: object) -> bytes:
    return json.dumps({"v": 1, "op": op, "args": args}).encode() + b"\n"


def _client(home) -> Client:
    """A raw client; retried while the listen backlog is full (a timeout makes connect
    non-blocking: EAGAIN instead of waiting for the daemon to accept)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return Client(home.socket, 10)
        except Lost:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _base_fds(pid: int) -> int:
    """The daemon's descriptor count once closed connections are gone (stable for 0.3 s)."""
    last = fd_count(pid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = fd_count(pid)
        if now == last:
            return now
        last = now
    return last


def _settle_fds(pid: int, limit: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    count = fd_count(pid)
    while count > limit and time.monotonic() < deadline:
        time.sleep(0.05)
        count = fd_count(pid)
    return count


def _ended_bot(home) -> str:
    with home.client() as conn:
        bot_id = conn.ok("create", meeting_url=URL)["id"]
        wait_until(lambda: conn.ok("show", id=bot_id)["state"] == "ended", 20, what="the ad-hoc bot to end")
    return bot_id


# -- item 8: departed stream clients -------------------------------------------------------------


def test_departed_follow_and_wait_clients_are_released(home):
    pid = home.launch()
    ended = _ended_bot(home)
    with home.client() as conn:
        waiting = conn.ok("create", meeting_url=URL, join_at=FAR)["id"]
    base = _base_fds(pid)
    for _ in range(ROUNDS):  # `events ID --follow | head -1`: read one line, go away
        with _client(home) as conn:
            conn.send(_request("events", id=ended, follow=True))
            assert b'"event"' in conn.read_line()
    for _ in range(ROUNDS):  # an interrupted `wait`: asked, then gone before any answer
        with _client(home) as conn:
            conn.send(_request("wait", id=waiting))
    for _ in range(20):  # an everything-follower that leaves without reading a byte
        with _client(home) as conn:
            conn.send(_request("events", follow=True))
    held = _settle_fds(pid, base + 2)
    assert held <= base + 2, (
        f"the daemon holds {held} descriptors after {2 * ROUNDS + 20} departed streams (base {base})")
    with home.client() as conn:  # still serving, and streams still work for those who stay
        assert conn.ok("show", id=ended)["state"] == "ended"
        assert conn.ok("ping")["pid"] == pid
    with _client(home) as conn:
        conn.send(_request("events", id=waiting, follow=True))
        assert json.loads(conn.read_line())["event"]["state"] == "scheduled"
        with home.client() as other:
            other.ok("reschedule", id=waiting, join_at=in_s(201 * 86400))
            other.ok("cancel", id=waiting)
        assert json.loads(conn.read_line()) == {"v": 1, "ok": True, "result": None, "warnings": []}


def test_a_half_closed_stream_client_still_gets_its_stream(home):
    """Shutting down only the sending side is not leaving: the stream goes on."""
    pid = home.launch()
    with home.client() as conn:
        bot_id = conn.ok("create", meeting_url=URL, join_at=FAR)["id"]
    base = _base_fds(pid)
    with _client(home) as follower:
        follower.send(_request("events", id=bot_id, follow=True))
        follower.sock.shutdown(socket.SHUT_WR)
        assert json.loads(follower.read_line())["event"]["state"] == "scheduled"
        time.sleep(1.5)  # past a half-closed check
        with home.client() as other:
            other.ok("cancel", id=bot_id)
        assert json.loads(follower.read_line())["ok"] is True
    assert _settle_fds(pid, base) <= base


def test_events_follow_into_head_ends_and_frees_its_connection(home):
    pid = home.launch()
    ended = _ended_bot(home)
    base = _base_fds(pid)
    for _ in range(3):  # all events are written before `head` exits: no write fails, the wait must see it
        result = subprocess.run(
            ["bash", "-c", f"timeout 20 botsched events {ended} --follow --json | head -1; "
                           "echo \"${PIPESTATUS[0]}\" >&2"],
            env=home.env, capture_output=True, text=True, timeout=60,
        )
        assert len(result.stdout.splitlines()) == 1 and "ready" in result.stdout, result
        # it ended by itself once `head` had gone (141 is item 14's exit code for it), not by `timeout`
        assert result.stderr.strip().splitlines()[-1] != "124", result.stderr
    assert _settle_fds(pid, base + 2) <= base + 2


def test_a_killed_wait_command_frees_its_connection(home):
    pid = home.launch()
    with home.client() as conn:
        bot_id = conn.ok("create", meeting_url=URL, join_at=FAR)["id"]
    base = _base_fds(pid)
    proc = home.popen("wait", bot_id, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: fd_count(pid) > base or proc.poll() is not None, 20, what="the wait to connect")
        assert proc.poll() is None, proc.communicate()
    finally:
        proc.kill()
    proc.wait(10)
    assert _settle_fds(pid, base) <= base, "the killed wait's connection is still held"


# -- item 9: the database deleted under the daemon ------------------------------------------------


@pytest.mark.parametrize("victim", ["botsched.db", "botsched.db-wal", "replaced"])
def test_database_deleted_under_the_daemon_refuses_changes_loudly(home, victim):
    home.launch()
    kept = home.create(URL, "--join-at", FAR)
    soon = home.create(URL, "--join-at", in_s(3))
    if victim == "replaced":  # e.g. a backup restored with mv while the daemon runs
        copy = home.path / "restored.db"
        with sqlite3.connect(home.db) as source, sqlite3.connect(copy) as target:
            source.backup(target)
        os.replace(copy, home.db)
    else:
        os.unlink(home.path / victim)
    result = home.run("create", "-q", URL, "--join-at", FAR, env={"BOTSCHED_NO_AUTOSTART": "1"})
    err = assert_clean_error(result, 5)
    assert ("deleted" if victim != "replaced" else "replaced") in err and "nothing was changed" in err, err
    assert result.stdout == ""
    assert_clean_error(home.run("cancel", kept), 5)
    log = home.log.read_text()
    assert " CRITICAL botsched.daemon.store: " in log and "can no longer be saved" in log, log[-2000:]
    status = home.run("daemon", "status", "--json")
    assert status.returncode == 0 and "changes are refused" in status.stderr, status
    # reads still answer; the bots the daemon knew still join (nobody misses a meeting)
    assert home.show(kept)["state"] == "scheduled"
    wait_until(lambda: home.show(soon)["state"] == "ended", 20, what="the due bot to run")
    # everything acknowledged before the deletion is in the rescue copy the log names
    rescued = [p for p in home.path.iterdir() if ".rescued-" in p.name and not p.name.endswith("-journal")]
    assert len(rescued) == 1, list(home.path.iterdir())
    assert str(rescued[0]) in log
    with sqlite3.connect(f"file:{rescued[0]}?mode=ro", uri=True) as conn:
        ids = {row[0] for row in conn.execute("SELECT id FROM bots")}
    assert {kept, soon} <= ids, ids
    assert stat.S_IMODE(os.stat(rescued[0]).st_mode) & 0o077 == 0


def test_database_deleted_while_idle_is_noticed_without_a_write(home):
    home.launch()
    home.create(URL, "--join-at", FAR)
    os.unlink(home.db)
    wait_until(lambda: "CRITICAL" in home.log.read_text(), daemon_mod.FILES_CHECK_S + 5,
               what="the daemon to notice the deleted database")
    assert not home.db.exists(), "the daemon created a new, empty database at the path"


# -- item 10: an existing home is never chmod'ed -----------------------------------------------


@pytest.mark.parametrize("mode", [0o1777, 0o777, 0o775])
def test_a_home_others_can_write_is_refused_and_keeps_its_mode(make_home, mode):
    home = make_home(write_config=False)
    os.chmod(home.path, mode)
    for args in (["daemon", "start"], ["create", "-q", URL, "--join-at", FAR], ["daemon", "run"]):
        result = home.run(*args, umask=0)
        err = assert_clean_error(result, 2)
        assert "writable by" in err and str(home.path) in err, err
        assert stat.S_IMODE(os.lstat(home.path).st_mode) == mode, oct(os.lstat(home.path).st_mode)
    assert not home.socket.exists() and not home.db.exists()


def test_an_existing_readable_home_is_used_as_it_is(make_home):
    home = make_home()
    os.chmod(home.path, 0o755)
    home.ok("daemon", "start", umask=0)
    home.create(URL, "--join-at", FAR)
    assert stat.S_IMODE(os.lstat(home.path).st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(home.socket).st_mode) == 0o600
    assert stat.S_IMODE(os.lstat(home.path / "runner-logs").st_mode) == 0o700  # ours: created private
    assert stat.S_IMODE(os.lstat(home.db).st_mode) & 0o077 == 0


def test_directories_botsched_creates_are_private_parents_included(make_home):
    home = make_home(subdir="a/b/home", write_config=False)
    home.ok("daemon", "start", umask=0)
    for directory in (home.path, home.path.parent, home.path.parent.parent):
        assert stat.S_IMODE(os.lstat(directory).st_mode) == 0o700, (directory, oct(os.lstat(directory).st_mode))


# -- item 15: refusals that say what happened ---------------------------------------------------


_CLI_MODULES: list[str] = []


def _cli_modules(args_list: list[list[str]]) -> list[str]:
    """The modules these commands import (found by running them as us, with no daemon): the
    uid-65534 child imports them first, as it may not read this interpreter's files."""
    if not _CLI_MODULES:
        script = ("import atexit, sys, botsched.cli.main as f; "
                  "atexit.register(lambda: sys.__stdout__.write('\\n'.join(sorted(sys.modules)) + '\\n')); "
                  "import json; f.main(json.loads(sys.argv[1]))")
        found: set[str] = set()
        for args in args_list:
            env = {**os.environ, "BOTSCHED_HOME": "/nonexistent-botsched-home", "BOTSCHED_NO_AUTOSTART": "1"}
            out = subprocess.run([sys.executable, "-c", script, json.dumps(args)], env=env, capture_output=True,
                                 text=True, timeout=60).stdout
            found.update(line for line in out.splitlines() if line and " " not in line)
        _CLI_MODULES.extend(sorted(found))
    return _CLI_MODULES


def _run_as_nobody(env: dict[str, str], args: list[str], timeout: float = 30.0) -> tuple[int, str, str, float]:
    """Run the CLI in a forked child as uid 65534 (in-process: the venv may not be readable
    by that uid); returns (exit code, stdout, stderr, seconds)."""
    import importlib

    from botsched.cli import main as fastcli

    for name in _cli_modules(COMMANDS_AS_NOBODY):  # (everything imported before the uid changes)
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - e.g. a module only the child's platform has
            pass

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    started = time.monotonic()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 (lives until os._exit; pytest replaced the objects)
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.environ.clear()
            os.environ.update(env)
            try:
                fastcli.main(args)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            os.write(2, f"child failed: {exc!r}\n".encode())
        finally:
            os._exit(code)
    os.close(out_w)
    os.close(err_w)
    outputs = []
    for fd in (out_r, err_r):
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
        os.close(fd)
        outputs.append(data.decode(errors="replace"))
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            raise AssertionError(f"botsched {' '.join(args)} as another uid hung")
        time.sleep(0.02)
    return os.waitstatus_to_exitcode(status), outputs[0], outputs[1], time.monotonic() - started


COMMANDS_AS_NOBODY = [["create", "-q", URL, "--join-at", FAR], ["list"], ["show", "BOT"], ["daemon", "status"],
                      ["daemon", "status", "--json"], ["daemon", "start"], ["daemon", "stop"], ["events", "BOT"],
                      ["wait", "BOT"]]


@pytest.mark.skipif(not is_root(), reason="needs root to become another uid")
@pytest.mark.parametrize("opened", [False, True], ids=["private-home", "opened-socket"])
def test_another_uid_is_told_the_daemon_belongs_to_another_user(home, opened):
    pid = home.launch()
    bot_id = home.create(URL, "--join-at", FAR)
    if opened:  # the daemon's own check (SO_PEERCRED) must answer, not a broken pipe
        os.chmod(home.path, 0o755)
        os.chmod(home.socket, 0o666)
    env = {"BOTSCHED_HOME": str(home.path), "PATH": "/usr/bin:/bin", "NO_COLOR": "1", "HOME": "/"}
    for args in [[arg.replace("BOT", bot_id) for arg in args] for args in COMMANDS_AS_NOBODY]:
        code, out, err, took = _run_as_nobody(env, args)
        assert code == 5, (args, code, out, err)
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and "another user" in lines[0], (args, err)
        assert "Broken pipe" not in err and "not running" not in out + err, (args, out, err)
        assert bot_id not in out
        assert took < 5, f"{args} took {took:.1f}s"
    assert pid_alive(pid)
    assert [b["id"] for b in home.list_all()] == [bot_id]


def test_a_client_over_the_connection_cap_reads_the_reason(home):
    home.launch()
    socks = []
    try:
        for _ in range(daemon_mod.MAX_CONNECTIONS):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(home.socket))
            socks.append(sock)
        time.sleep(0.3)
        env = {"BOTSCHED_NO_AUTOSTART": "1"}
        big = ["create", "-q", URL, "--join-at", FAR, "--bot-name", "n" * 100]
        for args in (["list", "--json"], ["daemon", "status"], big, ["daemon", "stop"]):
            result = home.run(*args, env=env)
            err = assert_clean_error(result, 5)
            assert "too many connections" in err and "Broken pipe" not in err, (args, err)
            assert "not running" not in result.stdout, (args, result.stdout)
    finally:
        for sock in socks:
            sock.close()
    home.ok("list")


def test_ten_parallel_starts_one_started_all_truthful(make_home):
    home = make_home()
    procs = [home.popen("daemon", "start", stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(10)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        results.append((proc.returncode, out.decode(), err.decode()))
    running = home.daemon_pid()
    assert running is not None and pid_alive(running)
    started = [out for code, out, _ in results if "started" in out]
    assert len(started) == 1, results
    for code, out, err in results:
        assert code == 0 and err == "", (code, out, err)
        assert out in (f"botsched daemon started (pid {running})\n",
                       f"botsched daemon is already running (pid {running})\n"), (out, running)
    assert home.ok("daemon", "start").stdout == f"botsched daemon is already running (pid {running})\n"
