"""Security (issue 5, SPEC §2 and §6).

- the socket's directory is 0700 and the socket 0600 even when the daemon starts under
  ``umask 000`` (``daemon start`` and ``daemon run``);
- another uid is refused by SO_PEERCRED even when the socket's permissions are opened up,
  and the daemon logs the refusal (needs root to become uid 65534);
- a socket path that already exists and is not our socket -- a symlink to a file elsewhere,
  a dangling symlink, a regular file, a FIFO, a socket owned by another uid -- is refused,
  not followed and not removed; the same for symlinks planted at the pid file and the log;
- runners get data as data: shell metacharacters in URLs and names never run;
- a secret from ``[runner.env]`` never shows in the daemon log, ``events``, ``show``,
  ``list``, ``daemon status``, ``config show``, or the runner's log files beyond what the
  runner itself printed -- also when the config is reloaded with a mistake in it.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.home import assert_clean_error, make_short_dir, pid_alive, wait_until
from tests.support.times import in_s

from .relhelpers import is_root

URL = "https://meet.google.com/abc-defg-hij"
FAR = "2028-05-01T12:00:00Z"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- permissions -------------------------------------------------------------------------------


def test_daemon_run_under_umask_000_keeps_everything_private(make_home):
    home = make_home(subdir="new-home", write_config=False)
    proc = home.popen("daemon", "run", stdin=None, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                      umask=0, start_new_session=True)
    try:
        wait_until(lambda: home.socket.exists(), 20, what="the socket")
        home.pids.add(proc.pid)
        assert _mode(home.path) == 0o700, oct(_mode(home.path))
        assert stat.S_ISSOCK(os.lstat(home.socket).st_mode)
        assert _mode(home.socket) == 0o600, oct(_mode(home.socket))
        assert _mode(home.path / "runner-logs") == 0o700
        assert _mode(home.log) & 0o077 == 0, oct(_mode(home.log))
        for path in home.path.iterdir():  # nothing inside is reachable by others anyway (0700 dir)
            assert path.stat().st_uid == os.getuid()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def test_daemon_start_under_umask_000_into_an_existing_open_directory(make_home):
    home = make_home(write_config=False)
    os.chmod(home.path, 0o777)  # refused and left as it is: never chmod what botsched did not create
    result = home.run("daemon", "start", umask=0)
    assert_clean_error(result, 2)
    assert _mode(home.path) == 0o777 and not home.socket.exists()
    os.chmod(home.path, 0o755)  # no one else can write: used as it is
    home.ok("daemon", "start", umask=0)
    assert _mode(home.path) == 0o755 and _mode(home.socket) == 0o600


# -- SO_PEERCRED ---------------------------------------------------------------------------------


def _plant(kind: str, path: Path, elsewhere: Path) -> Path | None:
    """Put something that is not our socket at ``path``; returns the target to watch."""
    if kind == "symlink-to-file":
        target = elsewhere / "precious.txt"
        target.write_text("precious\n")
        path.symlink_to(target)
        return target
    if kind == "dangling-symlink":
        path.symlink_to(elsewhere / "does-not-exist")
        return None
    if kind == "symlink-to-dir":
        path.symlink_to(elsewhere)
        return None
    if kind == "regular-file":
        path.write_text("not a socket\n")
        return path
    if kind == "fifo":
        os.mkfifo(path, 0o600)
        return None
    if kind == "foreign-socket":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.close()
        os.lchown(path, 65534, 65534)
        return None
    raise AssertionError(kind)


PLANTED = ["symlink-to-file", "dangling-symlink", "symlink-to-dir", "regular-file", "fifo",
           pytest.param("foreign-socket", marks=pytest.mark.skipif(not is_root(), reason="needs root to chown"))]


@pytest.mark.parametrize("kind", PLANTED)
def test_a_planted_socket_path_is_refused_not_followed_or_removed(make_home, kind):
    home = make_home()
    elsewhere = make_short_dir()
    try:
        target = _plant(kind, home.socket, elsewhere)
        before = os.lstat(home.socket)
        content = target.read_bytes() if target is not None else None
        result = home.run("daemon", "start")
        stderr = assert_clean_error(result, 5)
        assert "not our socket" in stderr or "refus" in stderr, stderr
        after = os.lstat(home.socket)
        assert (after.st_ino, after.st_mode, after.st_uid) == (before.st_ino, before.st_mode, before.st_uid), (
            "the planted path was replaced")
        if target is not None:
            assert target.read_bytes() == content
        assert sorted(p.name for p in elsewhere.iterdir()) == (["precious.txt"] if kind == "symlink-to-file" else [])
        pid = home.daemon_pid()
        assert pid is None or not pid_alive(pid)
    finally:
        import shutil

        shutil.rmtree(elsewhere, ignore_errors=True)


@pytest.mark.parametrize("name", ["daemon.pid", "botsched.log"])
def test_a_symlink_planted_at_the_pid_file_or_log_is_not_followed(make_home, name):
    """Like the socket: a symlink someone planted in the directory (e.g. while it was still
    world-writable, before the daemon made it 0700) must not make the daemon truncate,
    append to or chmod a file elsewhere."""
    home = make_home()
    elsewhere = make_short_dir()
    try:
        target = elsewhere / "precious.txt"
        target.write_text("precious\n")
        os.chmod(target, 0o644)
        (home.path / name).symlink_to(target)
        home.run("daemon", "start")
        home.run("daemon", "stop")
        written = target.read_text()
        assert written == "precious\n", f"the daemon wrote through the {name} symlink: {written!r}"
        assert _mode(target) == 0o644, f"the daemon chmod'ed the {name} symlink's target to {oct(_mode(target))}"
    finally:
        import shutil

        shutil.rmtree(elsewhere, ignore_errors=True)


# -- runners: data stays data ---------------------------------------------------------------------


def test_shell_metacharacters_in_urls_and_names_never_run(make_home):
    marker_dir = make_short_dir()
    out_dir = make_short_dir()
    try:
        script = ('printf "%s\\n" "$BOTSCHED_MEETING_URL" "$BOTSCHED_BOT_NAME" > "$OUT/$BOTSCHED_BOT_ID"; '
                  'read line; echo "state joined_recording"; exit 0')
        home = make_home({"scheduler": {"stage_lead_seconds": 1},
                          "runner": {"kind": "command", "command": ["/bin/sh", "-c", script, "runner"],
                                     "env": {"OUT": str(out_dir)}}})
        home.ok("daemon", "start")
        cases = [
            (f"https://evil.example/$(touch${{IFS}}{marker_dir}/url1)", f"$(touch {marker_dir}/name1)"),
            (f"https://evil.example/`touch${{IFS}}{marker_dir}/url2`", f"`touch {marker_dir}/name2`"),
            ("https://evil.example/a;touch${IFS}x|y&z", f"; touch {marker_dir}/name3 #"),
            ("https://evil.example/'\"$HOME", f"x' && touch {marker_dir}/name4 && '"),
        ]
        ids = []
        for url, name in cases:
            result = home.run("create", url, "--bot-name", name, "-q")
            assert result.returncode == 0, result.stderr
            ids.append(result.stdout.strip())
        for bot_id in ids:
            home.ok("wait", bot_id, "--timeout", "30")
        assert list(marker_dir.iterdir()) == [], "a metacharacter was executed"
        for bot_id, (url, name) in zip(ids, cases):
            assert (out_dir / bot_id).read_text() == f"{url}\n{name}\n"
            assert home.show(bot_id)["state"] == "ended"
    finally:
        import shutil

        shutil.rmtree(marker_dir, ignore_errors=True)
        shutil.rmtree(out_dir, ignore_errors=True)


# -- secrets ---------------------------------------------------------------------------------------


RUNNER = r"""
echo "runner says hello to $BOTSCHED_BOT_NAME"
echo "runner warming up" >&2
case "$BOTSCHED_BOT_NAME" in
  fail*) echo "runner gives up" >&2; exit 3 ;;
esac
read line
echo "state joined_recording"
read line
echo "state leaving"
exit 0
"""


def _everything_visible(home, ids: list[str]) -> dict[str, str]:
    """Every place a user or a log collector might see (the commands run four at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    commands = {
        "events": ["events"],
        "events --json": ["events", "--json"],
        "list --json": ["list", "--json", "--limit", "0"],
        "list": ["list", "--limit", "0"],
        "daemon status": ["daemon", "status"],
        "daemon status --json": ["daemon", "status", "--json"],
        "config show": ["config", "show"],
        "config show --json": ["config", "show", "--json"],
    }
    for bot_id in ids:
        commands[f"show --json {bot_id}"] = ["show", bot_id, "--json"]
        commands[f"show {bot_id}"] = ["show", bot_id]
        commands[f"logs {bot_id}"] = ["logs", bot_id]
    with ThreadPoolExecutor(4) as pool:
        futures = {where: pool.submit(home.run, *args) for where, args in commands.items()}
    seen = {}
    for where, future in futures.items():
        result = future.result()
        assert result.returncode == 0, f"{where}: {result.stderr}"
        seen[where] = result.stdout + result.stderr
    for path in sorted(home.path.glob("botsched.log*")):
        seen[path.name] = path.read_text(errors="replace")
    for path in sorted((home.path / "runner-logs").iterdir()):
        if path.is_file():
            seen[f"runner-logs/{path.name}"] = path.read_text(errors="replace")
    return seen


def test_a_runner_env_secret_appears_nowhere(make_home):
    token = "s3cr3t-" + secrets.token_hex(12)
    home = make_home({"scheduler": {"stage_lead_seconds": 1},
                      "runner": {"kind": "command", "command": ["/bin/sh", "-c", RUNNER, "runner"],
                                 "env": {"API_TOKEN": token, "OTHER": "plain"}, "max_in_meeting_seconds": 1}})
    home.ok("daemon", "start")
    ok_bot = home.create(URL, "--bot-name", "ok bot")  # ad-hoc: joins now, leaves after 1 s
    failing = home.create(URL, "--bot-name", "fail bot")  # exits 3 before its join
    scheduled = home.create(URL, "--join-at", in_s(1.5), "--bot-name", "scheduled bot")
    for bot_id in (ok_bot, failing, scheduled):
        home.ok("wait", bot_id, "--timeout", "30")
    assert home.show(failing)["state"] == "fatal_error"
    assert home.show(ok_bot)["state"] == "ended"
    seen = _everything_visible(home, [ok_bot, failing, scheduled])
    leaks = [where for where, text in seen.items() if token in text]
    assert not leaks, f"the secret shows in: {leaks}"
    status = home.json("daemon", "status")
    assert status["config"]["runner.env"] == {"API_TOKEN": "***", "OTHER": "***"}, status["config"]["runner.env"]
    assert "runner says hello to ok bot" in seen[f"logs {ok_bot}"]


def test_a_mistake_in_runner_env_does_not_print_the_secret(make_home):
    """A non-string value next to the token (``PORT = 8080``) is a config error; its message
    must not quote the token -- not in the daemon log after SIGHUP, nor on the terminal."""
    token = "s3cr3t-" + secrets.token_hex(12)
    home = make_home({"runner": {"kind": "command", "command": ["/bin/true"], "env": {"API_TOKEN": token}}})
    home.ok("daemon", "start")
    pid = home.daemon_pid()
    home.write_config({"runner": {"kind": "command", "command": ["/bin/true"], "env": {"API_TOKEN": token,
                                                                                         "PORT": 8080}}})
    os.kill(pid, signal.SIGHUP)
    wait_until(lambda: "reload failed" in home.log.read_text(), 10, what="the failed reload in the log")
    outputs = {
        "botsched.log after SIGHUP": home.log.read_text(),
        "daemon reload": home.run("daemon", "reload").stderr,
        "config show": home.run("config", "show").stderr,
    }
    leaks = [where for where, text in outputs.items() if token in text]
    assert not leaks, f"the secret is printed by: {leaks}; e.g. {outputs[leaks[0]].strip().splitlines()[-1][:300]}"
    assert home.json("daemon", "status")["pid"] == pid
