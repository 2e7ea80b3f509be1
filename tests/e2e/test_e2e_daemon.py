"""The daemon: autostart, status, start/stop, single instance, socket privacy, long paths."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.foreign import talk_as_nobody
from tests.support.home import ALL_STATES, assert_clean_error, make_short_dir, pid_alive, wait_until

URL = "https://zoom.us/j/7"
FAR = "2028-05-01T12:00:00Z"


def _config_value(config: dict, dotted: str):
    """The effective config may be flat ("scheduler.stage_lead_seconds") or nested."""
    if dotted in config:
        return config[dotted]
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def test_autostart_on_first_command(home):
    assert not home.socket.exists()
    assert home.json("list") == []
    pid = home.daemon_pid()
    assert pid is not None and pid_alive(pid), "the first command must have started a daemon"
    assert home.socket.exists()
    home.create(URL, "--join-at", FAR)
    assert home.daemon_pid() == pid, "later commands reuse the running daemon"


def test_no_autostart_env_gives_exit_5(home):
    env = {"BOTSCHED_NO_AUTOSTART": "1"}
    calls = [["list"], ["create", URL, "--join-at", FAR], ["show", "bot_AAAAAAAAAAAAAAAA"], ["events", "--json"],
             ["wait", "bot_AAAAAAAAAAAAAAAA"]]
    for args, result in zip(calls, home.run_many(calls, env=env)):
        assert_clean_error(result, 5)
        assert result.stdout == "", args
    assert not home.socket.exists() and home.daemon_pid() is None, "no daemon may have been started"
    # with a daemon running the variable changes nothing
    home.start()
    assert home.run("list", "--json", env=env).returncode == 0


def test_no_autostart_config_gives_exit_5(make_home):
    home = make_home({"daemon": {"autostart": False}})
    assert_clean_error(home.run("list"), 5)
    assert not home.socket.exists()
    home.start()  # an explicit start still works
    assert home.json("list") == []


def test_status_json(home):
    pid = home.start()
    bot_id = home.create(URL, "--join-at", FAR)
    status = home.json("daemon", "status")
    for key in ("running", "pid", "version", "uptime_seconds", "socket", "database", "runner", "counts", "config"):
        assert key in status, f"daemon status --json lacks {key!r}"
    assert status["running"] is True
    assert status["pid"] == pid
    version = home.ok("--version").stdout
    assert status["version"] in version
    assert isinstance(status["uptime_seconds"], (int, float)) and status["uptime_seconds"] >= 0
    assert Path(status["socket"]) == home.socket
    assert Path(status["database"]).parent == home.path
    assert status["runner"] == "simulate"
    assert set(status["counts"]) == set(ALL_STATES), "counts has every state"
    assert status["counts"]["scheduled"] == 1 and sum(status["counts"].values()) == 1
    config = status["config"]
    assert _config_value(config, "scheduler.stage_lead_seconds") == 1
    assert _config_value(config, "runner.simulate_join_seconds") == 0.2
    assert _config_value(config, "scheduler.misfire_grace_seconds") == 300, "defaults are included too"
    assert _config_value(config, "defaults.bot_name") == "Meeting Bot"
    assert config == home.json("config", "show"), "status shows the whole effective configuration"
    human = home.ok("daemon", "status").stdout
    assert str(pid) in human and "simulat" in human.lower(), "daemon status says runs are simulated"
    assert bot_id not in human


def test_status_when_stopped(home):
    result = home.run("daemon", "status", "--json")
    assert result.returncode == 5
    assert json.loads(result.stdout) == {"running": False}
    assert "Traceback" not in result.stderr
    assert home.run("daemon", "status").returncode == 5
    assert not home.socket.exists() and home.daemon_pid() is None, "daemon status must not start a daemon"


def test_start_twice_stop_and_status(home):
    pid = home.start()
    bot = home.json("create", URL, "--join-at", FAR, "--metadata", "k=v")
    again = home.ok("daemon", "start")
    assert "already" in again.stdout.lower() or str(pid) in again.stdout
    assert home.daemon_pid() == pid
    assert home.json("daemon", "status")["pid"] == pid
    home.ok("daemon", "stop")
    wait_until(lambda: not pid_alive(pid), 10, what="the stopped daemon to exit")
    assert not home.socket.exists(), "a graceful stop removes the socket"
    result = home.run("daemon", "status", "--json")
    assert result.returncode == 5 and json.loads(result.stdout) == {"running": False}
    stopped_again = home.run("daemon", "stop")
    assert stopped_again.returncode == 0 and "Traceback" not in stopped_again.stderr
    assert home.show(bot["id"]) == bot, "a graceful restart keeps every bot as it was"
    assert home.daemon_pid() != pid


def test_version_help_and_status_never_start_a_daemon(home):
    calls = [["--version"], ["--help"], ["create", "--help"], ["daemon", "--help"], ["daemon", "status"],
             ["daemon", "status", "--json"]]
    results = home.run_many(calls)
    for args, result in zip(calls, results):
        assert "Traceback" not in result.stderr
        assert result.returncode in (0, 5), (args, result.returncode, result.stderr)
    assert results[0].returncode == 0 and results[0].stdout.startswith("botsched ")
    assert results[1].returncode == 0 and "create" in results[1].stdout
    assert not home.socket.exists(), "no socket may have appeared"
    assert home.daemon_pid() is None, "no daemon may have been started"


def test_second_daemon_run_fails_cleanly(home):
    pid = home.start()
    bot_id = home.create(URL, "--join-at", FAR)
    result = home.run("daemon", "run", timeout=20)
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything, everything
    assert result.returncode != 0, f"second daemon run exited 0: {result.stderr}"
    assert any(line.startswith("error:") for line in result.stderr.splitlines()), result.stderr
    assert pid_alive(pid)
    assert home.json("daemon", "status")["pid"] == pid, "the first daemon keeps serving"
    assert home.show(bot_id)["state"] == "scheduled"
    assert home.socket.exists()
    # SPEC §5: exit 1 is reserved for "unexpected internal error (a bug)"; a refusal is not one
    assert result.returncode != 1, f"second daemon run exited 1 (internal error): {result.stderr.strip()}"


def test_socket_and_directory_private_even_with_umask_000(make_home):
    home = make_home(subdir="home")  # BOTSCHED_HOME does not exist yet: the daemon creates it
    os.chmod(home.path, 0o777)  # a too-open existing directory is refused, never chmod'ed (issue 10)
    refused = home.run("daemon", "start", umask=0)
    assert refused.returncode == 2 and "writable by other users" in refused.stderr, refused
    assert stat.S_IMODE(os.stat(home.path).st_mode) == 0o777
    os.chmod(home.path, 0o700)
    result = home.run("daemon", "start", umask=0)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISSOCK(os.stat(home.socket).st_mode)
    assert stat.S_IMODE(os.stat(home.socket).st_mode) == 0o600, oct(os.stat(home.socket).st_mode)
    assert stat.S_IMODE(os.stat(home.path).st_mode) == 0o700, oct(os.stat(home.path).st_mode)


def test_home_created_private_with_umask_000(make_home):
    home = make_home(subdir="new/deeper", write_config=False)
    assert not home.path.exists()
    result = home.run("list", "--json", umask=0)  # autostart creates the home
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(home.path).st_mode) == 0o700, oct(os.stat(home.path).st_mode)
    assert stat.S_IMODE(os.stat(home.socket).st_mode) == 0o600, oct(os.stat(home.socket).st_mode)


def test_socket_path_too_long_is_a_clear_error(make_home):
    base = make_short_dir()
    long_home = base / ("h" * (110 - len(str(base))))
    home = make_home(write_config=False)
    home.env["BOTSCHED_HOME"] = str(long_home)
    assert len(str(long_home / "botsched.sock").encode()) > 107
    try:
        calls = [["list"], ["create", URL, "--join-at", FAR], ["daemon", "start"], ["daemon", "status"]]
        for args, result in zip(calls, home.run_many(calls)):
            stderr = assert_clean_error(result)
            assert result.returncode != 1, f"{args}: exit 1 means an internal error: {stderr}"
            assert "socket" in stderr.lower() or "long" in stderr.lower(), stderr
        result = home.run("daemon", "run", timeout=20)
        assert_clean_error(result)
        assert result.returncode != 1, result.stderr
    finally:
        for pid_file in long_home.glob("daemon.pid"):
            text = pid_file.read_text().strip()
            if text.isdigit() and pid_alive(int(text)):
                os.kill(int(text), 9)
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_wait_and_follow_end_cleanly_when_the_daemon_stops(home):
    """A daemon that goes away is exit 5 ("did not answer"), never exit 1 ("a bug")."""
    home.start()
    bot_id = home.create(URL, "--join-at", FAR)
    no_restart = {"BOTSCHED_NO_AUTOSTART": "1"}  # a late client must not start a new daemon
    waiter = home.popen("wait", bot_id, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=no_restart)
    follower = home.popen("events", "--follow", "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=no_restart)
    try:
        assert follower.stdout.readline(), "events --follow printed no past event"
        time.sleep(0.5)  # a blocked wait gives no readiness signal: let it connect
        home.ok("daemon", "stop")
        _w_out, w_err = waiter.communicate(timeout=15)
        _f_out, f_err = follower.communicate(timeout=15)
    finally:
        for proc in (waiter, follower):
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    problems = []
    for name, proc, err in (("wait", waiter, w_err), ("events --follow", follower, f_err)):
        assert "Traceback" not in err, err
        assert all(line.startswith(("error:", "warning:")) for line in err.splitlines()), err
        if proc.returncode == 1:
            problems.append(f"{name} exited 1 (internal error) when the daemon stopped: {err.strip()}")
    if waiter.returncode != 5:
        problems.append(f"wait exited {waiter.returncode}, expected 5: {w_err.strip()}")
    assert not problems, "\n".join(problems)


def test_wait_ends_with_exit_5_when_the_daemon_is_killed(home):
    home.start()
    bot_id = home.create(URL, "--join-at", FAR)
    waiter = home.popen("wait", bot_id, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        env={"BOTSCHED_NO_AUTOSTART": "1"})  # it must not start a new daemon
    try:
        time.sleep(1.0)  # a blocked wait gives no readiness signal: let it connect
        assert waiter.poll() is None, "wait returned before the daemon was killed"
        os.kill(home.daemon_pid(), 9)
        _, err = waiter.communicate(timeout=15)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait(5)
    assert waiter.returncode == 5, f"wait exited {waiter.returncode}: {err.strip()}"
    assert "Traceback" not in err and err.startswith("error:"), err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another uid")
def test_a_peer_with_another_uid_is_refused(home):
    """SO_PEERCRED: even if the socket's permissions were opened up, another user gets nothing."""
    home.start()
    bot_id = home.create(URL, "--join-at", FAR)
    os.chmod(home.path, 0o755)
    os.chmod(home.socket, 0o666)
    out = talk_as_nobody(str(home.socket), [b'{"v":1,"op":"list","args":{"states":[],"limit":0}}\n'])
    assert out.startswith(b"OK"), f"the foreign client could not even connect: {out!r}"
    assert bot_id.encode() not in out, "a client of another uid was served"
    reply = out[2:]
    if reply:
        assert json.loads(reply).get("ok") is False, reply
    assert home.json("list")[0]["id"] == bot_id, "the daemon keeps serving its own user"


def test_a_broken_config_is_a_clear_error(make_home):
    home = make_home(write_config=False)
    (home.path / "config.toml").write_text("[scheduler]\nstage_lead_seconds = \"soon\"\n")
    calls = [["list"], ["daemon", "start"], ["daemon", "run"]]
    for args, result in zip(calls, home.run_many(calls, timeout=20)):
        stderr = assert_clean_error(result)
        assert result.returncode != 1, f"{args}: exit 1 means an internal error: {stderr}"
        assert "stage_lead_seconds" in stderr, stderr
    assert home.daemon_pid() is None or not pid_alive(home.daemon_pid())
    (home.path / "config.toml").write_text("[scheduler\n")
    stderr = assert_clean_error(home.run("list"))
    assert "config.toml" in stderr
