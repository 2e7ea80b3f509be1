"""A tool people like to live with (issue 6): completions, config, the systemd unit,
colours and NO_COLOR, help that teaches, and the human screens (``list``, ``show``,
``daemon status``) — all through the installed ``botsched`` command and a real daemon.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import queue
import re
import select
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import tomllib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.support.home import (
    ALL_STATES,
    BOTSCHED,
    CALL_TIMEOUT_S,
    ID_RE,
    Home,
    assert_clean_error,
    merge_config,
    pid_alive,
    wait_until,
)
from tests.support.times import UTC, parse_z

REPO = Path(__file__).resolve().parents[2]
COMPLETIONS = REPO / "completions"
ESC = "\x1b["
ANY_ID = re.compile(r"bot_[A-Za-z0-9]{16}")
#: Variables that make rich colour a pipe, or stop it colouring a terminal.
COLOUR_VARS = ("NO_COLOR", "FORCE_COLOR", "CLICOLOR_FORCE", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS")


# -- helpers ------------------------------------------------------------------------


def parallel(calls: Iterable[Callable[[], Any]], workers: int = 8) -> list[Any]:
    """Run independent CLI calls side by side (each one is a ~0.3 s Python start-up)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda call: call(), list(calls)))


def colour_env(home: Home, **extra: str) -> dict[str, str]:
    """The home's environment as a person's shell would have it: no NO_COLOR, a real TERM."""
    env = {k: v for k, v in home.env.items() if k not in COLOUR_VARS}
    env["TERM"] = "xterm-256color"
    env.update(extra)
    return env


def run_plain(args: list[str], env: dict[str, str], cwd: str | None = None,
              timeout: float = CALL_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """``botsched ARGS`` with exactly ``env`` (no merging), stdout and stderr to pipes."""
    return subprocess.run([BOTSCHED, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def run_pty(
    args: list[str], env: dict[str, str], columns: int = 120, timeout: float = CALL_TIMEOUT_S
) -> tuple[int, str]:
    """``botsched ARGS`` with stdout on a pseudo-terminal of ``columns`` columns (stderr discarded)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    try:
        proc = subprocess.Popen([BOTSCHED, *args], stdin=subprocess.DEVNULL, stdout=slave,
                                stderr=subprocess.DEVNULL, env=env, close_fds=True)
    finally:
        os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, b"".join(chunks).decode("utf-8", "replace")


def config_value(config: dict[str, Any], key: str) -> Any:
    """A key of ``daemon status --json``'s config, flat ("a.b") or nested ({"a": {"b"}})."""
    if key in config:
        return config[key]
    node: Any = config
    for part in key.split("."):
        node = node[part]
    return node


def row_of(text: str, bot_id: str) -> str:
    rows = [line for line in text.splitlines() if bot_id in line]
    assert len(rows) == 1, f"{bot_id} should be on exactly one line of:\n{text}"
    return rows[0]


def complete_bash(home: Home, line: str) -> subprocess.CompletedProcess[str]:
    words = line.split(" ")
    return home.run(env={"_BOTSCHED_COMPLETE": "complete_bash", "COMP_WORDS": line,
                         "COMP_CWORD": str(len(words) - 1)})


def complete_zsh(home: Home, line: str) -> subprocess.CompletedProcess[str]:
    return home.run(env={"_BOTSCHED_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": line})


def complete_fish(home: Home, line: str, action: str = "get-args") -> subprocess.CompletedProcess[str]:
    return home.run(env={"_BOTSCHED_COMPLETE": "complete_fish", "_TYPER_COMPLETE_FISH_ACTION": action,
                         "_TYPER_COMPLETE_ARGS": line})


def no_daemon(home: Home) -> bool:
    pid = home.daemon_pid()
    return pid is None or not pid_alive(pid)


#: Runs many ``botsched ARGS`` one after the other in ONE interpreter, through the entry
#: point of the installed command (``botsched.cli.main:main``): one Python start-up instead
#: of dozens, for commands that need no daemon (help, config).
DRIVER = r"""
import contextlib, io, json, sys
from botsched.cli.main import main
answers = []
for args in json.loads(sys.argv[1]):
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    answers.append([code, out.getvalue(), err.getvalue()])
sys.__stdout__.write(json.dumps(answers))
"""


def run_many(home: Home, argvs: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    driver = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(argvs)], env=home.env, capture_output=True,
                            text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert driver.returncode == 0, driver.stderr
    return [subprocess.CompletedProcess(["botsched", *argv], code, out, err)
            for argv, (code, out, err) in zip(argvs, json.loads(driver.stdout))]


# -- a home with bots in several states, shared by the read-only tests ------------------


#: A 10-minute stage lead, so a bot 9 minutes out is ``staged`` while the module runs.
SCREENS_CONFIG = {"scheduler": {"stage_lead_seconds": 600}}
URLS = {
    "zoom": ("https://zoom.us/j/5551234567?pwd=abc", "Zoom"),
    "meet": ("https://meet.google.com/abc-defg-hij", "Google Meet"),
    "teams": ("https://teams.microsoft.com/l/meetup-join/19%3ameeting_x%40thread.v2/0", "Microsoft Teams"),
    "webex": ("https://acme.webex.com/meet/jane", "Webex"),
    "custom": ("https://meet.example.com/x", "other"),
}


@pytest.fixture(scope="module")
def screens(module_make_home: Callable[..., Home]) -> tuple[Home, dict[str, str]]:
    home = module_make_home(SCREENS_CONFIG)
    home.start()
    ids = {
        "zoom": home.create(URLS["zoom"][0], "--join-at", "+2h", "--bot-name", "Weekly sync",
                            "--metadata", "team=sales", "--dedup-key", "cal-42"),
        "meet": home.create(URLS["meet"][0], "--join-at", "+9m", "--bot-name", "Standup notes"),
        "teams": home.create(URLS["teams"][0], "--bot-name", "Ad-hoc recorder"),
        "webex": home.create(URLS["webex"][0], "--join-at", "+1d"),
        "custom": home.create(URLS["custom"][0], "--join-at", "+3h"),
    }
    home.ok("wait", ids["teams"], "--timeout", "15")
    wait_until(lambda: home.show(ids["meet"])["state"] == "staged", 10, what="the 9-minute bot to be staged")
    return home, ids


# -- 1. completions -----------------------------------------------------------------------


def test_completion_scripts_are_up_to_date_and_regenerate_identically(tmp_path):
    check = subprocess.run([sys.executable, str(COMPLETIONS / "generate.py"), "--check"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, f"completions/* are stale:\n{check.stdout}{check.stderr}"

    copy = tmp_path / "completions"
    shutil.copytree(COMPLETIONS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("botsched.bash", "_botsched", "botsched.fish"):
        (copy / name).write_text("stale\n")
    regen = subprocess.run([sys.executable, str(copy / "generate.py")], capture_output=True, text=True, timeout=60)
    assert regen.returncode == 0, regen.stderr
    for name in ("botsched.bash", "_botsched", "botsched.fish"):
        assert (copy / name).read_text() == (COMPLETIONS / name).read_text(), f"{name} regenerates differently"
    assert (COMPLETIONS / "_botsched").read_text().startswith("#compdef botsched\n"), "zsh needs #compdef first"

    stale = subprocess.run([sys.executable, str(copy / "generate.py"), "--check"], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path)
    assert stale.returncode == 0
    (copy / "botsched.fish").write_text("# edited by hand\n")
    stale = subprocess.run([sys.executable, str(copy / "generate.py"), "--check"], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path)
    assert stale.returncode != 0 and "botsched.fish" in stale.stderr, "--check must notice a stale script"


def test_shipped_scripts_match_what_the_cli_emits(home):
    """What ``--install-completion`` would install is what completions/ ships."""
    shells = {"bash": "botsched.bash", "zsh": "_botsched", "fish": "botsched.fish"}
    results = parallel(lambda shell=shell: home.run(env={"_BOTSCHED_COMPLETE": f"source_{shell}"}) for shell in shells)
    for (shell, name), result in zip(shells.items(), results):
        assert result.returncode == 0, result.stderr
        shipped = "\n".join(line for line in (COMPLETIONS / name).read_text().splitlines()
                            if not line.startswith("# Shell completion for botsched"))
        assert shipped.strip() == result.stdout.strip(), f"{name} differs from `botsched` source_{shell}"
        assert "_BOTSCHED_COMPLETE" in shipped
    assert no_daemon(home), "printing a completion script must not start a daemon"
    readme = (REPO / "README.md").read_text()
    for name in shells.values():
        assert f"completions/{name}" in readme, f"README must show how to install {name}"


def test_bot_ids_complete_from_the_daemon(screens):
    home, ids = screens
    bots = home.list_all()
    scheduled = {b["id"] for b in bots if b["state"] == "scheduled"}
    every = {b["id"] for b in bots}
    assert ids["meet"] not in scheduled and ids["teams"] not in scheduled, "fixture: one staged, one ended bot"
    prefix = ids["zoom"][:7]

    (cancel, show, reschedule, prefixed, commands, zsh, zsh_show, fish, fish_is) = parallel([
        lambda: complete_bash(home, "botsched cancel bot_"),
        lambda: complete_bash(home, "botsched show bot_"),
        lambda: complete_bash(home, "botsched reschedule "),
        lambda: complete_bash(home, f"botsched show {prefix}"),
        lambda: complete_bash(home, "botsched "),
        lambda: complete_zsh(home, "botsched cancel bot_"),
        lambda: complete_zsh(home, "botsched show "),
        lambda: complete_fish(home, "botsched cancel "),
        lambda: complete_fish(home, "botsched cancel ", action="is-args"),
    ])
    for result in (cancel, show, reschedule, prefixed, commands, zsh, zsh_show, fish):
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr == "", f"completion must not print on stderr: {result.stderr!r}"

    assert set(cancel.stdout.split()) == scheduled, "cancel completes exactly the scheduled bots"
    assert set(reschedule.stdout.split()) == scheduled
    assert set(show.stdout.split()) == every, "show completes every bot, whatever its state"
    assert set(prefixed.stdout.split()) == {i for i in every if i.startswith(prefix)}
    assert {"create", "list", "show", "cancel", "daemon", "config"} <= set(commands.stdout.split())

    assert zsh.stdout.startswith("_arguments"), zsh.stdout
    assert set(ANY_ID.findall(zsh.stdout)) == scheduled
    assert set(ANY_ID.findall(zsh_show.stdout)) == every
    assert set(fish.stdout.split()) == scheduled
    assert fish_is.returncode == 0, "fish: bot ids to offer, so no file completion"


def test_the_shipped_bash_script_completes_ids_in_bash(screens):
    home, _ids = screens
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    scheduled = {b["id"] for b in home.json("list", "--state", "scheduled", "--limit", "0")}
    script = (f"source {shlex.quote(str(COMPLETIONS / 'botsched.bash'))}\n"
              "COMP_WORDS=(botsched cancel bot_); COMP_CWORD=2\n"
              "_botsched_completion botsched\n"
              "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    result = subprocess.run([bash, "--norc", "--noprofile", "-c", script], env=home.env, capture_output=True,
                            text=True, timeout=CALL_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == scheduled


def test_completion_without_a_daemon_is_quiet_fast_and_starts_nothing(home):
    started = time.monotonic()
    bash, bash_show, zsh, fish = parallel([
        lambda: complete_bash(home, "botsched cancel bot_"),
        lambda: complete_bash(home, "botsched show "),
        lambda: complete_zsh(home, "botsched cancel bot_"),
        lambda: complete_fish(home, "botsched show "),
    ])
    elapsed = time.monotonic() - started
    for result in (bash, bash_show, zsh, fish):
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr and "error" not in result.stderr.lower(), result.stderr
        assert not ANY_ID.search(result.stdout)
    assert bash.stdout.strip() == "" and bash_show.stdout.strip() == "", "bash: nothing to offer"
    assert fish.stdout.strip() == ""
    assert elapsed < 5, f"completion without a daemon took {elapsed:.1f}s"
    assert not home.socket.exists() and no_daemon(home), "completion must never start a daemon"

    # A daemon that died (its socket file left behind) must not make completion hang or fail.
    home.create("https://zoom.us/j/1", "--join-at", "+1h")
    pid = home.daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), 5, what="the daemon to die")
    started = time.monotonic()
    result = complete_bash(home, "botsched cancel bot_")
    assert result.returncode == 0 and result.stdout.strip() == "", (result.stdout, result.stderr)
    assert time.monotonic() - started < 5
    assert no_daemon(home), "completion must not restart the daemon"


# -- 2. config --------------------------------------------------------------------------


ROUND_TRIP = [  # key, what the user types, the value it means, what `config get` prints
    ("scheduler.stage_lead_seconds", "90", 90, "90"),
    ("scheduler.misfire_grace_seconds", "2.5", 2.5, "2.5"),
    ("daemon.autostart", "false", False, "false"),
    ("defaults.bot_name", "Note Taker", "Note Taker", "Note Taker"),
    ("calendar.email", "123", "123", "123"),  # a string key keeps a number-looking value as text
    ("defaults.timezone", "Europe/Berlin", "Europe/Berlin", "Europe/Berlin"),
    ("runner.kind", "command", "command", "command"),
    ("runner.command", '["/usr/local/bin/my bot", "--headless"]', ["/usr/local/bin/my bot", "--headless"],
     '["/usr/local/bin/my bot", "--headless"]'),
    ("runner.env", '{ API_TOKEN = "s3cr3t", REGION = "eu west" }', {"API_TOKEN": "s3cr3t", "REGION": "eu west"},
     '{"API_TOKEN": "***", "REGION": "***"}'),
]


def test_config_path_show_and_defaults(make_home):
    from botsched.core import config

    home = make_home(write_config=False)
    path, shown, human = parallel([lambda: home.ok("config", "path"), lambda: home.json("config", "show"),
                                   lambda: home.ok("config", "show")])
    assert path.stdout == f"{home.path / 'config.toml'}\n"
    assert shown == config.defaults(), "config show --json: every known key with its default"
    assert set(shown) == set(config.SCHEMA)
    for key, spec in config.SCHEMA.items():
        assert re.search(rf"^{re.escape(key)}\s*=\s*{re.escape(json.dumps(spec.default))}\s*$", human.stdout, re.M), \
            f"{key} missing from `config show`:\n{human.stdout}"
    assert not (home.path / "config.toml").exists(), "reading the config must not create it"
    assert no_daemon(home), "config commands do not need the daemon"


def test_config_set_get_round_trip_every_type(make_home):
    home = make_home(write_config=False)
    first, *rest = ROUND_TRIP
    assert first[0] in home.ok("config", "set", first[0], first[1]).stdout  # the installed command itself
    sets = run_many(home, [["config", "set", key, typed] for key, typed, _, _ in rest])
    for (key, *_), result in zip(rest, sets):
        assert result.returncode == 0 and key in result.stdout, (key, result.stdout, result.stderr)
    gets = run_many(home, [["config", "show", "--json"], *(["config", "get", key] for key, *_ in ROUND_TRIP)])
    assert gets[0].returncode == 0, gets[0].stderr
    shown, gets = json.loads(gets[0].stdout), gets[1:]
    assert home.ok("config", "get", "runner.command").stdout == gets[-2].stdout
    on_disk = tomllib.loads((home.path / "config.toml").read_text())
    for (key, _typed, value, printed), got in zip(ROUND_TRIP, gets):
        assert got.stdout == printed + "\n", f"config get {key}: {got.stdout!r}"
        assert config_value(on_disk, key) == value, f"{key} on disk: {on_disk}"
        if key == "runner.env":  # API tokens: `config show` names them but masks their values
            value = {name: "***" for name in value}
        assert shown[key] == value and type(shown[key]) is type(value), f"{key}: {shown[key]!r}"
    assert (home.path / "config.toml").stat().st_mode & 0o077 == 0, "config.toml is private"
    home.ok("config", "set", "scheduler.stage_lead_seconds", "30")
    on_disk = tomllib.loads((home.path / "config.toml").read_text())
    assert on_disk["scheduler"]["stage_lead_seconds"] == 30
    assert on_disk["runner"]["env"]["REGION"] == "eu west", "setting one key keeps the others"


BAD_SETTINGS = [
    ("scheduler.stage_lead_seconds", "abc"),
    ("scheduler.stage_lead_seconds", "-5"),
    ("runner.kind", "docker"),
    ("defaults.timezone", "Mars/Base"),
    ("daemon.autostart", "yes"),
    ("runner.command", "/bin/echo"),
    ("defaults.bot_name", "x" * 101),
    ("no.such_key", "1"),
]


def test_config_refuses_unknown_keys_and_bad_values_without_touching_the_file(make_home):
    home = make_home()
    path = home.path / "config.toml"
    home.ok("config", "set", "defaults.bot_name", "Keeper")
    before = path.read_bytes()
    results = [home.run("config", "set", *BAD_SETTINGS[0])]  # the installed command itself, then the rest
    results += run_many(home, [["config", "set", key, value] for key, value in BAD_SETTINGS[1:]])
    for (key, value), result in zip(BAD_SETTINGS, results):
        assert_clean_error(result, 2)
        assert result.stdout == "", f"config set {key} {value}: stdout {result.stdout!r}"
    assert path.read_bytes() == before, "a refused value must leave config.toml as it was"
    # A leading dash escaped the shell way (--) is judged on its merits.
    dashed = home.run("config", "set", "scheduler.stage_lead_seconds", "--", "-5")
    assert "stage_lead_seconds" in assert_clean_error(dashed, 2)
    assert "Mars/Base" in assert_clean_error(results[3], 2) and "timezone" in results[3].stderr
    assert "no.such_key" in results[-1].stderr
    assert_clean_error(home.run("config", "get", "no.such_key"), 2)
    assert path.read_bytes() == before


def test_environment_and_config_turn_autostart_off(make_home):
    home = make_home()
    off = home.run("list", env={"BOTSCHED_NO_AUTOSTART": "1"})
    assert_clean_error(off, 5)
    home.ok("config", "set", "daemon.autostart", "false")
    assert_clean_error(home.run("list"), 5)
    assert not home.socket.exists() and no_daemon(home)
    home.ok("config", "set", "daemon.autostart", "true")
    assert home.json("list") == []


def test_config_changes_reach_the_running_daemon(make_home, monkeypatch):
    from botsched.client.connection import connect

    home = make_home()
    pid = home.start()
    log = home.path / "botsched.log"
    monkeypatch.setenv("BOTSCHED_HOME", str(home.path))

    def status() -> dict[str, Any]:  # the daemon's own answer, without a CLI start-up each time
        with connect(autostart=False) as conn:
            return conn.call("status")[0]

    def lead() -> Any:
        return config_value(status()["config"], "scheduler.stage_lead_seconds")

    assert lead() == 1
    home.ok("config", "set", "scheduler.stage_lead_seconds", "42")
    shown = home.json("daemon", "status")
    assert config_value(shown["config"], "scheduler.stage_lead_seconds") == 42, "config set reloads a running daemon"

    home.write_config(merge_config({"scheduler": {"stage_lead_seconds": 43}}))
    os.kill(pid, signal.SIGHUP)
    wait_until(lambda: lead() == 43, 5, what="SIGHUP to reload config.toml")

    home.write_config(merge_config({"scheduler": {"stage_lead_seconds": 44}}))
    reload = home.ok("daemon", "reload")
    assert "reload" in reload.stdout.lower()
    assert lead() == 44, "daemon reload re-reads config.toml"

    (home.path / "config.toml").write_text("[scheduler\nstage_lead_seconds = 45\n")
    broken = home.run("daemon", "reload")
    assert "TOML" in assert_clean_error(broken), broken.stderr
    assert pid_alive(pid) and lead() == 44, "a broken config.toml keeps the old configuration"
    os.kill(pid, signal.SIGHUP)
    wait_until(lambda: "reload failed" in log.read_text(), 5, what="the daemon to log the failed reload")
    assert pid_alive(pid) and lead() == 44

    home.write_config(merge_config({"scheduler": {"stage_lead_seconds": -1}}))
    assert "stage_lead_seconds" in assert_clean_error(home.run("daemon", "reload"))
    assert lead() == 44, "an invalid value keeps the old configuration"

    home.write_config(merge_config({"runner": {"kind": "command", "command": ["/bin/true"]}}))
    assert "restart" in assert_clean_error(home.run("daemon", "reload")).lower()
    assert status()["runner"] == "simulate"

    home.write_config(merge_config({"scheduler": {"stage_lead_seconds": 7}}))
    home.ok("daemon", "reload")
    assert lead() == 7 and home.daemon_pid() == pid, "the same daemon, reloaded, not restarted"
    assert_clean_error(make_home().run("daemon", "reload"), 5)  # no daemon: nothing to reload, none started


# -- 3. the systemd user unit --------------------------------------------------------------


def _unit_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_daemon_install_print(home, tmp_path):
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    printed = home.ok("daemon", "install", "--print", env={"XDG_CONFIG_HOME": str(xdg)})
    unit = printed.stdout
    lines = _unit_lines(unit)
    for section in ("[Unit]", "[Service]", "[Install]"):
        assert section in lines, unit
    exec_start = [line for line in lines if line.startswith("ExecStart=")]
    assert len(exec_start) == 1, unit
    argv = shlex.split(exec_start[0].removeprefix("ExecStart="))
    assert argv[1:] == ["-m", "botsched", "daemon", "run"], argv
    assert os.path.isabs(argv[0]) and os.access(argv[0], os.X_OK), f"ExecStart needs an absolute interpreter: {argv}"
    check = subprocess.run([argv[0], "-c", "import botsched"], capture_output=True, timeout=30)
    assert check.returncode == 0, "the unit's interpreter must have botsched installed"
    for line in ("Restart=on-failure", "KillMode=process", "WantedBy=default.target"):
        assert line in lines, f"{line} missing:\n{unit}"
    assert f'Environment="BOTSCHED_HOME={home.path}"' in lines, unit
    assert str(xdg / "systemd" / "user" / "botsched.daemon.service") in unit, "--print says where the unit would go"
    assert list(xdg.iterdir()) == [], "--print changes nothing"
    assert no_daemon(home)

    env = {k: v for k, v in home.env.items() if k != "BOTSCHED_HOME"}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(xdg))
    plain = run_plain(["daemon", "install", "--print"], env)
    assert plain.returncode == 0, plain.stderr
    assert "BOTSCHED_HOME" not in plain.stdout, "no Environment= line without BOTSCHED_HOME"
    relative = run_plain(["daemon", "install", "--print"], {**env, "BOTSCHED_HOME": "rel/home"}, cwd=str(tmp_path))
    assert f'Environment="BOTSCHED_HOME={tmp_path / "rel" / "home"}"' in relative.stdout, \
        "a relative BOTSCHED_HOME becomes absolute in the unit"


def _fake_systemctl(bindir: Path, code: int) -> Path:
    bindir.mkdir()
    calls = bindir / "calls.log"
    script = bindir / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(calls))}\nexit {code}\n')
    script.chmod(0o755)
    return calls


def test_daemon_install_and_uninstall_without_systemd(home, tmp_path):
    xdg = tmp_path / "xdg"
    unit = xdg / "systemd" / "user" / "botsched.daemon.service"
    expected = home.ok("daemon", "install", "--print", env={"XDG_CONFIG_HOME": str(xdg)}).stdout

    # systemctl fails (no user systemd in this sandbox): the unit is written and we are told what to run.
    calls = _fake_systemctl(tmp_path / "failing", 1)
    env = {"XDG_CONFIG_HOME": str(xdg), "PATH": f"{tmp_path / 'failing'}{os.pathsep}{home.env['PATH']}"}
    installed = home.ok("daemon", "install", env=env)
    assert unit.exists(), installed.stdout
    assert _unit_lines(unit.read_text()) == _unit_lines(expected), "install writes what --print shows"
    assert str(unit) in installed.stdout
    assert "systemctl --user daemon-reload" in installed.stdout
    assert "enable --now botsched.daemon.service" in installed.stdout
    assert "--user" in calls.read_text(), "install tried systemctl --user"
    removed = home.ok("daemon", "uninstall", env=env)
    assert not unit.exists() and str(unit) in removed.stdout
    again = home.ok("daemon", "uninstall", env=env)
    assert "not installed" in again.stdout

    # No systemctl at all.
    bare = {"XDG_CONFIG_HOME": str(xdg), "PATH": str(tmp_path / "empty")}
    installed = home.ok("daemon", "install", env=bare)
    assert unit.exists() and "systemctl --user" in installed.stdout
    home.ok("daemon", "uninstall", env=bare)
    assert not unit.exists()

    # A working user systemd: enabled and started, then disabled and stopped.
    calls = _fake_systemctl(tmp_path / "working", 0)
    env = {"XDG_CONFIG_HOME": str(xdg), "PATH": f"{tmp_path / 'working'}{os.pathsep}{home.env['PATH']}"}
    installed = home.ok("daemon", "install", env=env)
    seen = calls.read_text().splitlines()
    assert "--user daemon-reload" in seen and "--user enable --now botsched.daemon.service" in seen, seen
    assert "enabled" in installed.stdout
    home.ok("daemon", "uninstall", env=env)
    assert "--user disable --now botsched.daemon.service" in calls.read_text().splitlines()
    assert not unit.exists()
    assert no_daemon(home), "install/uninstall never start a daemon themselves"


# -- 4. colours, NO_COLOR, pipes, --json, platforms, URL checks ----------------------------


def _human_commands(ids: dict[str, str]) -> list[list[str]]:
    return [["list"], ["daemon", "status"], ["events"], ["show", ids["teams"]], ["show", ids["zoom"]],
            ["list", "--help"]]


def test_no_escape_codes_with_no_color_or_into_a_pipe(screens):
    home, ids = screens
    commands = _human_commands(ids)
    piped_env = colour_env(home)  # no NO_COLOR, no COLUMNS: stdout is a pipe, that alone turns colour off
    results = parallel([*(lambda c=c: home.run(*c) for c in commands),
                        *(lambda c=c: run_plain(c, piped_env) for c in commands)])
    for command, result in zip(commands + commands, results):
        assert result.returncode == 0, f"{command}: {result.stderr}"
        assert ESC not in result.stdout and ESC not in result.stderr, f"escape codes in `{' '.join(command)}`"
    lines = "".join(json.dumps({"meeting_url": URLS["zoom"][0], "join_at": "2028-01-01T00:00:00Z"}) + "\n"
                    for _ in range(3))
    made, made_piped, bulk = parallel([
        lambda: run_plain(["create", URLS["custom"][0], "--join-at", "+4h"], home.env),
        lambda: run_plain(["create", URLS["custom"][0], "--join-at", "+4h"], piped_env),
        lambda: subprocess.run([BOTSCHED, "create", "--from", "-"], input=lines, env=piped_env, capture_output=True,
                               text=True, timeout=CALL_TIMEOUT_S),
    ])
    for result in (made, made_piped):
        assert result.returncode == 0, result.stderr
        assert ESC not in result.stdout + result.stderr and ANY_ID.search(result.stdout)
        assert result.stderr.startswith("warning:"), "an unknown platform is a warning"
    assert bulk.returncode == 0 and ESC not in bulk.stdout + bulk.stderr, "no progress bar into a pipe"
    assert len(bulk.stdout.split()) == 3
    # Into a pipe (no COLUMNS) nothing is cut to fit 80 columns: ids, names and URLs come out whole.
    listed, shown = results[len(commands)], results[len(commands) + 3]
    for name, bot_id in ids.items():
        assert URLS[name][1] in row_of(listed.stdout, bot_id), listed.stdout
    assert "Standup notes" in listed.stdout
    assert URLS["teams"][0] in shown.stdout


def test_json_is_plain_and_the_same_with_or_without_no_color(screens):
    home, ids = screens
    plain_env = colour_env(home)
    commands = [
        ["list", "--json"], ["show", ids["zoom"], "--json"], ["events", "--json"], ["daemon", "status", "--json"],
    ]
    results = parallel([*(lambda c=c: home.run(*c) for c in commands),
                        *(lambda c=c: run_plain(c, plain_env) for c in commands)])
    with_no_color, without = results[: len(commands)], results[len(commands):]
    for command, a, b in zip(commands, with_no_color, without):
        assert a.returncode == 0 and b.returncode == 0, (command, a.stderr, b.stderr)
        assert ESC not in a.stdout and ESC not in b.stdout
        if command[0] == "events":
            parsed_a = [json.loads(line) for line in a.stdout.splitlines()]
            parsed_b = [json.loads(line) for line in b.stdout.splitlines()]
        else:
            parsed_a, parsed_b = json.loads(a.stdout), json.loads(b.stdout)
        if command[0] == "daemon":
            parsed_a.pop("uptime_seconds"), parsed_b.pop("uptime_seconds")
        assert parsed_a == parsed_b, f"{command}: NO_COLOR changed the JSON"
    # On a terminal, --json is still plain JSON.
    code, out = run_pty(["list", "--json"], colour_env(home))
    assert code == 0 and ESC not in out
    assert {b["id"] for b in json.loads(out)} >= set(ids.values())


def test_a_terminal_gets_colour_unless_no_color(screens):
    home, ids = screens
    env = colour_env(home)
    (code, coloured), (code2, uncoloured), (code3, card), (code4, narrow) = parallel([
        lambda: run_pty(["list"], env),
        lambda: run_pty(["list"], {**env, "NO_COLOR": "1"}),
        lambda: run_pty(["show", ids["zoom"]], env),
        lambda: run_pty(["list"], env, columns=80),
    ])
    assert code == 0 and ESC in coloured, f"list on a terminal should be coloured:\n{coloured!r}"
    assert code2 == 0 and ESC not in uncoloured, f"NO_COLOR on a terminal: no escape codes at all:\n{uncoloured!r}"
    assert code3 == 0 and ESC in card
    assert code4 == 0
    plain_narrow = re.sub(r"\x1b\[[0-9;]*m", "", narrow)
    for bot_id in ids.values():
        assert bot_id in uncoloured and bot_id in plain_narrow, f"ids are never truncated on a terminal:\n{narrow}"
    assert all(len(line) <= 80 for line in plain_narrow.replace("\r", "").splitlines()), plain_narrow


def test_list_shows_the_platform_of_each_url(screens):
    home, ids = screens
    out = home.ok("list", "--limit", "0").stdout
    header = out.splitlines()[0]
    assert "PLATFORM" in header.upper() and "STATE" in header.upper(), out
    for name, bot_id in ids.items():
        row = row_of(out, bot_id)
        shown = URLS[name][1]
        assert re.search(rf"(^|\s){re.escape(shown)}(\s|$)", row), f"{name}: expected {shown} in {row!r}"
    card = home.ok("show", ids["webex"]).stdout
    assert "Webex" in card


def test_unknown_platform_is_a_warning_and_malformed_urls_are_refused(screens):
    home, _ = screens
    before = len(home.list_all())
    human, quiet = parallel([lambda: home.run("create", "https://meet.example.com/room/7", "--join-at", "+2h"),
                             lambda: home.run("create", "-q", "https://video.example.org/x")])
    for result in (human, quiet):
        assert result.returncode == 0, result.stderr
        warnings = result.stderr.splitlines()
        assert warnings and all(line.startswith("warning:") for line in warnings), result.stderr
        assert any("example" in line for line in warnings), "the warning names the URL"
    assert ID_RE.match(quiet.stdout.strip()), "-q prints only the id, the warning goes to stderr"
    bad = [("not a url",), ("zoom.us/j/123", "--join-at", "+1h"), ("ftp://zoom.us/j/123",), ("https://",),
           ("https://zoom.us/j/1 2", "--join-at", "+1h"), ("javascript:alert(1)",),
           ("-q", "https://zoom.us/j/\x01")]
    results = parallel(lambda args=args: home.run("create", *args) for args in bad)
    for url, result in zip(bad, results):
        assert_clean_error(result, 2)
        assert result.stdout == "", f"{url!r}: {result.stdout!r}"
    assert len(home.list_all()) == before + 2, "refused URLs create nothing"


# -- 5. help ----------------------------------------------------------------------------


def _command_paths() -> list[list[str]]:
    """Every command and group of the Typer app, so a new command is covered automatically."""
    import typer

    from botsched.cli.app import app

    paths: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        paths.append(path)
        for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
            if not getattr(sub, "hidden", False):
                walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_every_help_exits_0_and_teaches_with_an_example(home):
    paths = _command_paths()
    assert len(paths) > 15 and ["daemon", "install"] in paths and ["config", "set"] in paths
    argvs = [[*path, "--help"] for path in paths] + [[*path, "-h"] for path in paths]
    missing = []
    for argv, result in zip(argvs, run_many(home, argvs)):
        code, out, err = result.returncode, result.stdout, result.stderr
        name = " ".join(["botsched", *argv[:-1]])
        assert code == 0, f"{name} {argv[-1]} exited {code}: {err}"
        assert "Usage" in out and "Traceback" not in out + err, f"{name} {argv[-1]}:\n{out}{err}"
        assert err == "", f"{name} {argv[-1]}: {err!r}"
        assert ESC not in out, f"{name} {argv[-1]}: escape codes with NO_COLOR"
        example = [line for line in out.splitlines() if "Example" in line]
        if not example:
            missing.append(name)
        elif argv[:-1] and not any(name in line for line in example):
            missing.append(f"{name} (its example does not use it: {example[0].strip()})")
    # And the installed command itself, for a few of them.
    for result in parallel([lambda: home.run("--help"), lambda: home.run("daemon", "install", "-h"),
                            lambda: home.run("config", "--help")]):
        assert result.returncode == 0 and "Usage" in result.stdout and result.stderr == "", result.stderr
    assert not missing, "--help without an example:\n" + "\n".join(sorted(set(missing)))
    assert no_daemon(home), "--help never starts a daemon"


def test_no_arguments_shows_help(home):
    result = home.run()
    assert "Usage" in result.stdout and "create" in result.stdout and "daemon" in result.stdout, result.stdout
    assert "Traceback" not in result.stderr
    assert "error: failed" not in result.stderr, f"a meaningless error line after the help: {result.stderr!r}"
    assert result.returncode == 0, f"`botsched` alone asks for help: exit 0, not {result.returncode}"
    assert no_daemon(home)


def test_version(home):
    from botsched import __version__

    result = home.ok("--version")
    assert result.stdout == f"botsched {__version__}\n"
    assert __version__ == metadata.version("botsched"), "--version matches the installed package"
    assert result.stderr == "" and not home.socket.exists() and no_daemon(home), "--version never starts a daemon"


# -- 6. the human screens --------------------------------------------------------------------


def test_list_shows_local_and_relative_times_and_says_when_more_exist(screens):
    home, ids = screens
    bots = {b["id"]: b for b in home.list_all()}
    zones = ("Asia/Kolkata", "America/New_York")
    started = time.time()
    outs = parallel(lambda z=z: home.run("list", "--limit", "0", env={"TZ": z}) for z in zones)
    finished = time.time()
    for zone, result in zip(zones, outs):
        assert result.returncode == 0, result.stderr
        for name in ("zoom", "webex", "custom", "meet"):
            local = parse_z(bots[ids[name]]["join_at"]).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")
            assert local in row_of(result.stdout, ids[name]), f"{name}: local time {local} ({zone}) missing"
    out = outs[0].stdout
    # about +9m, rounded to the nearest minute (pendulum alone floors): whatever the machine's load
    left_s = parse_z(bots[ids["meet"]]["join_at"]).timestamp()
    rounded = {round((left_s - finished) / 60), round((left_s - started) / 60)}
    shown = re.search(r"\bin (\d+) minutes\b", row_of(out, ids["meet"]))
    assert shown and int(shown.group(1)) in rounded, (row_of(out, ids["meet"]), rounded)
    assert re.search(r"\bin (1|2) hours?\b", row_of(out, ids["zoom"])), row_of(out, ids["zoom"])
    assert re.search(r"\bin (1 day|2[34] hours)\b", row_of(out, ids["webex"])), row_of(out, ids["webex"])
    assert re.search(r"\bago\b", row_of(out, ids["teams"])), row_of(out, ids["teams"])
    for bot_id, bot in bots.items():
        if bot_id in ids.values():
            assert re.search(rf"\b{bot['state']}\b", row_of(out, bot_id)), f"{bot_id} should show {bot['state']}"
    assert not re.search(r"\bmore\b", out, re.I), "no 'more' note when everything is shown"

    limited = home.ok("list", "--limit", "2").stdout
    assert len(set(ANY_ID.findall(limited))) == 2
    assert re.search(r"\bmore\b", limited, re.I) and "--limit" in limited, f"say that more exist:\n{limited}"
    empty = home.ok("list", "--state", "waiting_room").stdout
    assert "no bots" in empty.lower() and not ANY_ID.search(empty)


def test_show_is_a_card_with_the_event_timeline(screens):
    home, ids = screens
    ended, scheduled = ids["teams"], ids["zoom"]
    card, card2 = parallel([lambda: home.ok("show", ended, env={"TZ": "Asia/Kolkata"}),
                            lambda: home.ok("show", scheduled, env={"TZ": "Asia/Kolkata"})])
    bot = home.show(ended)
    out = card.stdout
    for text in (ended, "ended", URLS["teams"][0], "Microsoft Teams", "Ad-hoc recorder"):
        assert text in out, f"{text!r} missing from the card:\n{out}"
    position = 0
    for event in bot["events"]:  # the timeline: every event, oldest first, at local time
        local = parse_z(event["at"]).astimezone(ZoneInfo("Asia/Kolkata")).strftime("%H:%M:%S")
        found = re.search(rf"{local}.*\b{event['state']}\b", out[position:])
        assert found, f"event {event['state']} at {local} missing (or out of order) in:\n{out}"
        position += found.end()
    assert [e["state"] for e in bot["events"]] == ["ready", "joining", "joined_recording", "ended"]

    out2 = card2.stdout
    zoom = home.show(scheduled)
    local = parse_z(zoom["join_at"]).astimezone(ZoneInfo("Asia/Kolkata")).strftime("%Y-%m-%d %H:%M:%S")
    for text in (scheduled, "scheduled", "Zoom", "Weekly sync", "team", "sales", "cal-42", local):
        assert text in out2, f"{text!r} missing from the card:\n{out2}"
    assert re.search(r"\bin (1|2) hours?\b", out2), out2


def test_text_that_looks_like_markup_is_printed_as_it_is(screens):
    """Names, metadata and keys are the user's text: ``[/]`` or ``[bold]`` must neither crash nor style."""
    home, _ = screens
    name = "Notes [/] [bold]x[/bold] [red]"
    bot_id = home.create("https://zoom.us/j/77", "--join-at", "+5h", "--bot-name", name,
                         "--metadata", "k=[/red]", "--dedup-key", "[/]")
    listed, card = parallel([lambda: home.run("list", "--limit", "0"), lambda: home.run("show", bot_id)])
    for result in (listed, card):
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert name in row_of(listed.stdout, bot_id)
    for text in (name, "k=[/red]", "[/]"):
        assert text in card.stdout, f"{text!r} missing from:\n{card.stdout}"


def test_daemon_status_is_clear(screens):
    home, _ = screens
    info = home.json("daemon", "status")
    out = home.ok("daemon", "status").stdout
    for text in (str(info["pid"]), info["version"], str(home.socket), str(home.path / "botsched.db"),
                 str(home.path / "config.toml"), str(home.path / "botsched.log")):
        assert text in out, f"{text!r} missing from daemon status:\n{out}"
    assert "simulat" in out.lower(), "says that runs are simulated"
    assert re.search(r"\bup \d+(s|m|h|d)\b", out), "uptime, human-readable"
    assert "uptime_seconds" not in out and not re.search(r"\d+\.\d{3}", out), "no raw float seconds"
    for state in ALL_STATES:
        count = info["counts"][state]
        if count:
            assert re.search(rf"\b{count}\s+{state}\b|\b{state}\W+{count}\b", out), f"{state}: {count} missing:\n{out}"
        else:
            assert not re.search(rf"\b{state}\b", out), f"{state} has no bots and need not be listed:\n{out}"
    stopped = home.run("daemon", "status", env={"BOTSCHED_HOME": str(home.path / "nowhere")})
    assert stopped.returncode == 5 and "not running" in stopped.stdout


def test_events_follow_is_readable_live_in_a_pipe(make_home):
    home = make_home({"runner": {"simulate_duration_seconds": 2}})
    sentinel = home.create("https://zoom.us/j/1", "--join-at", "+1h")
    proc = home.popen("events", "--follow", stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            lines.put((datetime.now(UTC), raw.decode()))

    threading.Thread(target=read, daemon=True).start()
    got: list[tuple[datetime, str]] = []

    def until(predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 15
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}; got {got}"
            try:
                got.append(lines.get(timeout=0.1))
            except queue.Empty:
                pass

    try:
        until(lambda: any(sentinel in line for _, line in got), "the past events")
        bot_id = home.create("https://meet.google.com/abc-defg-hij")
        until(lambda: any(bot_id in line and re.search(r"\bended\b", line) for _, line in got), "the bot to end")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    mine = [(arrived, line) for arrived, line in got if bot_id in line]
    states = [re.search(r"\b(ready|joining|joined_recording|ended)\b", line).group(1) for _, line in mine]
    assert states == ["ready", "joining", "joined_recording", "ended"], mine
    events = {e["state"]: e for e in home.show(bot_id)["events"]}
    for (_arrived, line), state in zip(mine, states):
        assert ESC not in line
        local = parse_z(events[state]["at"]).astimezone().strftime("%H:%M:%S")
        assert local in line, f"local time {local} missing from {line!r}"
    joined_arrived = mine[2][0]
    assert joined_arrived < parse_z(events["ended"]["at"]), \
        "joined_recording must reach a pipe as it happens, not when the bot ends 2 s later"


def test_bulk_create_progress_bar_only_on_a_terminal_and_never_in_stdout(home, tmp_path):
    jsonl = tmp_path / "bots.jsonl"
    jsonl.write_text("".join(json.dumps({"meeting_url": f"https://zoom.us/j/{n}", "join_at": "2028-01-01T00:00:00Z"})
                             + "\n" for n in range(1200)))
    env = colour_env(home)
    code, both = run_pty(["create", "--from", str(jsonl)], env)  # stdout on the terminal
    assert code == 0 and len(set(ANY_ID.findall(both))) == 1200

    # `botsched create --from FILE > ids.txt` at a terminal: stdout is a file, stderr the terminal.
    master, slave = pty.openpty()
    try:
        result = subprocess.run([BOTSCHED, "create", "--from", str(jsonl)], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=slave, timeout=CALL_TIMEOUT_S)
    finally:
        os.close(slave)
    terminal = b""
    while select.select([master], [], [], 0.2)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        terminal += chunk
    os.close(master)
    assert result.returncode == 0
    out = result.stdout.decode()
    assert out.count("\n") == 1200 and all(ID_RE.match(line) for line in out.splitlines()), \
        f"stdout must be one id per line, nothing else: {[x for x in out.splitlines() if not ID_RE.match(x)][:3]}"
    assert b"creating" in terminal, "the progress bar belongs on the terminal (stderr) when stdout is redirected"


# -- issue 11: times the way `at` takes them, one user zone -------------------------------------


def test_at_style_join_times_resolve_in_the_config_zone_and_say_so(home):
    """``--join-at 'tomorrow 09:30'`` is 09:30 in ``defaults.timezone`` (not the system's TZ),
    the id alone on stdout, the resolved instant on stderr."""
    home.ok("config", "set", "defaults.timezone", '"Asia/Tokyo"')
    result = home.ok("create", "-q", "https://zoom.us/j/1100", "--join-at", "tomorrow 09:30", env={"TZ": "UTC"})
    bot = home.show(result.stdout.strip())
    tokyo = parse_z(bot["join_at"]).astimezone(ZoneInfo("Asia/Tokyo"))
    tomorrow = (datetime.now(ZoneInfo("Asia/Tokyo")).date().toordinal() + 1)
    assert (tokyo.hour, tokyo.minute, tokyo.date().toordinal()) == (9, 30, tomorrow), bot["join_at"]
    assert result.stderr == f"note: 'tomorrow 09:30' is {tokyo:%a %Y-%m-%d} 09:30 JST ({bot['join_at']})\n"
    listing = home.ok("list", env={"TZ": "UTC"}).stdout
    assert "JOIN AT (JST)" in listing and f"{tokyo:%Y-%m-%d} 09:30" in listing


def test_at_style_nonsense_is_exit_2_with_the_forms_named(home):
    result = home.run("create", "-q", "https://zoom.us/j/1101", "--join-at", "13pm")
    assert result.returncode == 2 and "3pm" in result.stderr and "tomorrow 09:30" in result.stderr
    assert result.stdout == ""


def test_help_reads_like_gh_grouped_with_an_example_and_no_bool(home):
    out = home.ok("--help", env={"COLUMNS": "100"}).stdout
    for group in ("Bot commands", "Calendar", "Daemon and configuration"):
        assert group in out
    assert "Examples:" in out and "$ botsched create" in out
    for argv in (["--help"], ["create", "--help"], ["list", "--help"], ["events", "--help"]):
        assert "<bool>" not in home.ok(*argv, env={"COLUMNS": "100"}).stdout, argv
