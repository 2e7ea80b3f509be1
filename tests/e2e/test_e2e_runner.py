"""The command runner end to end (SPEC §6, §7; issue 3): real daemons, real runner processes.

The runner is ``runner_probe.py``: it records what it sees (its whole environment and
argv, every stdin line with the time.time() it arrived, its pid and process group) as JSON
lines under a probe directory, and does what the bot's metadata (``probe_on_start``,
``probe_on_join``, ``probe_on_leave``) or ``[runner.env]`` (``PROBE_ON_*``) tells it. See
that file for the action language.

Most tests share one daemon (module fixture ``rig``: ``stage_lead_seconds = 1``,
``leave_grace_seconds = 0.5``); the ones that need other settings or stop the daemon get
their own homes (the misfire and restart tests use a longer stage lead, so that a bot can
be staged while the daemon goes down). Join times are absolute ISO times with milliseconds,
2-3 s ahead. Several bots are created with one ``create --from -`` so that a slow machine
cannot push a join time into the past, and the tests wait with ``botsched wait`` (after
the probe's own records say the runner got there, so that one ``list`` usually answers).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.home import Home, assert_clean_error, merge_config, pid_alive, wait_until
from tests.support.times import UTC, in_s, iso_ms, parse_z

PROBE = Path(__file__).with_name("runner_probe.py")
PROBE_CMD = [sys.executable, str(PROBE)]

#: The issue's bound on the join signal, measured from the runner's side.
JOIN_BOUND_S = 0.100
#: The command runner's delay between SIGTERM and SIGKILL (KILL_AFTER_TERM_S).
SIGKILL_DELAY_S = 5.0
#: How far ahead a bot joins when timing does not matter much (stage lead is 1 s).
AHEAD_S = 2.0
URL = "https://meet.example.com/abc-defg-hij"


# -- probe records ---------------------------------------------------------------------


def _read_records(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def records(probe: Path, bot_id: str, ev: str | None = None) -> list[dict[str, Any]]:
    found = _read_records(probe / f"{bot_id}.jsonl")
    return [r for r in found if ev is None or r["ev"] == ev]


def stdin_lines(probe: Path, bot_id: str, line: str) -> list[dict[str, Any]]:
    return [r for r in records(probe, bot_id, "stdin") if r["line"] == line]


def the_start(probe: Path, bot_id: str) -> dict[str, Any]:
    starts = records(probe, bot_id, "start")
    assert len(starts) == 1, f"{bot_id}: expected exactly one runner start, got {len(starts)}: {starts}"
    return starts[0]


def the_exit(probe: Path, bot_id: str) -> dict[str, Any]:
    exits = records(probe, bot_id, "exit")
    assert len(exits) == 1, f"{bot_id}: expected one exit record, got {exits}"
    return exits[0]


def join_lateness(probe: Path, bot_id: str, join_at: str) -> float:
    """Seconds from join_at to the moment the runner read ``join`` (the runner's clock)."""
    joins = stdin_lines(probe, bot_id, "join")
    assert len(joins) == 1, f"{bot_id}: expected exactly one join line, got {joins}"
    return joins[0]["t"] - parse_z(join_at).timestamp()


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def kill_probes(probe: Path) -> None:
    """Runners outlive a stopped daemon by design: kill every probe group still alive."""
    for path in probe.glob("*.jsonl"):
        for record in _read_records(path):
            if record.get("ev") == "start" and group_members(record["pgid"]):
                try:
                    os.killpg(record["pgid"], signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


# -- homes -----------------------------------------------------------------------------


def command_config(probe: Path, *, runner: dict[str, Any] | None = None, scheduler: dict[str, Any] | None = None,
                   env: dict[str, str] | None = None, command: list[str] | None = None) -> dict[str, dict[str, Any]]:
    return merge_config({
        "scheduler": {"stage_lead_seconds": 1, **(scheduler or {})},
        "runner": {"kind": "command", "command": command or PROBE_CMD, "leave_grace_seconds": 2, **(runner or {})},
        "runner.env": {"PROBE_DIR": str(probe), **(env or {})},
    })


@pytest.fixture
def probe_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "probe"
    directory.mkdir()
    yield directory
    kill_probes(directory)


def command_home(make_home: Callable[..., Home], probe: Path, **kwargs: Any) -> Home:
    return make_home(command_config(probe, **kwargs))


@dataclass
class Rig:
    """The shared daemon: probe runner with shell metacharacters in its argv."""

    home: Home
    probe: Path
    trap: Path  # a shell that ran any of the test data would create files here
    argv_extra: list[str]
    secret: str


@pytest.fixture(scope="module")
def rig(module_make_home: Callable[..., Home]) -> Iterator[Rig]:
    root = Path(tempfile.mkdtemp(prefix="bsr", dir="/tmp"))
    probe, trap = root / "probe", root / "t"
    probe.mkdir()
    trap.mkdir()
    argv_extra = [f"--flag=$(touch {trap}/a1)", f"a;touch {trap}/a2", "*", "$HOME", f"`touch {trap}/a3`"]
    secret = "s3cr3t-token-value"
    home = module_make_home(command_config(probe, command=PROBE_CMD + argv_extra, runner={"leave_grace_seconds": 0.5},
                                           env={"BOT_API_TOKEN": secret}))
    try:
        yield Rig(home, probe, trap, argv_extra, secret)
    finally:
        kill_probes(probe)
        shutil.rmtree(root, ignore_errors=True)


# -- small helpers -----------------------------------------------------------------------


def create_many(home: Home, bots: list[dict[str, Any]]) -> list[str]:
    """One ``create --from -`` for all: ids in order."""
    lines = "".join(json.dumps({"meeting_url": URL, **bot}) + "\n" for bot in bots)
    ids = home.ok("create", "--from", "-", "-q", input=lines).stdout.split()
    assert len(ids) == len(bots), ids
    return ids


def probe_meta(on_start: str | None = None, on_join: str | None = None, on_leave: str | None = None) -> dict[str, str]:
    """Metadata that tells the probe what to do for this bot."""
    spec = {"start": on_start, "join": on_join, "leave": on_leave}
    return {f"probe_on_{name}": value for name, value in spec.items() if value is not None}


def probe_args(**kwargs: str) -> list[str]:
    args: list[str] = []
    for key, value in probe_meta(**kwargs).items():
        args += ["--metadata", f"{key}={value}"]
    return args


def at_offset(base: float, seconds: float) -> str:
    return iso_ms(datetime.fromtimestamp(base + seconds, UTC))


def wait_state(home: Home, bot_id: str, state: str | None = None, timeout: float = 20) -> dict[str, Any]:
    args = ["wait", bot_id, "--timeout", str(timeout)]
    if state:
        args += ["--state", state]
    return home.json(*args, timeout=timeout + 15)


def wait_all(home: Home, bot_ids: list[str], state: str | None = None, timeout: float = 20) -> list[dict[str, Any]]:
    """``botsched wait`` for several bots: one ``list`` answers for those already there (CLI
    calls are slow on a loaded machine), ``wait`` (in parallel) for the others."""
    listed = {bot["id"]: bot for bot in home.list_all()}

    def reached(bot: dict[str, Any]) -> bool:
        if state is not None and state in [e["state"] for e in bot["events"]]:
            return True
        return bot["state"] in ("ended", "fatal_error")

    missing = [b for b in bot_ids if not reached(listed[b])]
    if missing:
        listed.update(zip(missing, parallel(*(lambda b=b: wait_state(home, b, state, timeout) for b in missing))))
    for b in bot_ids:
        if state is not None:
            assert state in [e["state"] for e in listed[b]["events"]], f"{b} ended without reaching {state}"
    return [listed[b] for b in bot_ids]


def wait_records(probe: Path, bot_ids: list[str], ev: str, line: str | None = None, timeout: float = 15) -> None:
    """Until each bot's runner recorded ``ev`` (a cheap way to know when to ask the daemon)."""
    def done() -> bool:
        return all(any(line is None or r.get("line") == line for r in records(probe, b, ev)) for b in bot_ids)
    wait_until(done, timeout, what=f"{ev} {line or ''} from the runners of {bot_ids}")


def leave_all(home: Home, bot_ids: list[str]) -> None:
    parallel(*(lambda b=b: home.ok("leave", b) for b in bot_ids))


def states_of(bot: dict[str, Any]) -> list[str]:
    """The state changes (note events that repeat the current state are dropped)."""
    seen: list[str] = []
    for item in bot["events"]:
        if not seen or seen[-1] != item["state"]:
            seen.append(item["state"])
    return seen


def event(bot: dict[str, Any], state: str) -> dict[str, Any]:
    matching = [e for e in bot["events"] if e["state"] == state]
    assert matching, f"{bot['id']} never was {state}: {bot['events']}"
    return matching[0]


def last_detail(bot: dict[str, Any]) -> str:
    return bot["events"][-1]["detail"] or ""


def parallel(*calls: Callable[[], Any]) -> list[Any]:
    """Run independent CLI steps of several homes at the same time."""
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]


# -- 1. environment, and no shell anywhere -------------------------------------------------


def test_environment_reaches_the_runner_and_shell_metacharacters_are_plain_data(rig):
    home, trap = rig.home, rig.trap
    url = (f"https://meet.example.com/abc?x=$(touch${{IFS}}{trap}/u1)&y=`touch${{IFS}}{trap}/u2`"
           f";touch${{IFS}}{trap}/u3;'q'\"dq\"|true>{trap}/u4")
    name = f"Bot $(touch {trap}/n1); `touch {trap}/n2` 'q' \"dq\" & >{trap}/n3"
    assert len(name) <= 100
    note = f"it's \"quoted\" $(touch {trap}/m1); `touch {trap}/m2`"
    join_at = in_s(AHEAD_S)
    created = home.json("create", url, "--bot-name", name, "--join-at", join_at,
                        "--metadata", "team=sales", "--metadata", f"note={note}", "--metadata", "city=Zürich")
    bot_id = created["id"]
    wait_state(home, bot_id, "joining")

    start = the_start(rig.probe, bot_id)
    env = start["env"]
    assert env["BOTSCHED_BOT_ID"] == bot_id
    assert env["BOTSCHED_MEETING_URL"] == url, "the meeting URL must arrive byte for byte"
    assert env["BOTSCHED_BOT_NAME"] == name, "the bot name must arrive byte for byte"
    assert env["BOTSCHED_JOIN_AT"] == created["join_at"] == join_at
    assert json.loads(env["BOTSCHED_METADATA"]) == created["metadata"] == {"team": "sales", "note": note,
                                                                           "city": "Zürich"}
    assert env["BOT_API_TOKEN"] == rig.secret, "a [runner.env] value must reach the runner"
    assert env["PROBE_DIR"] == str(rig.probe)
    assert env.get("BOTSCHED_HOME") == str(home.path), "the runner inherits the daemon's environment"
    assert start["argv"][1:] == rig.argv_extra, "runner.command is an argv list, never run through a shell"
    # its own process group and session: led by the runner, or by the exit-status shim
    # that started it (botsched/runners/shim.py); never the daemon's
    assert start["pgid"] == start["sid"] and start["pgid"] in (start["pid"], start["ppid"])
    assert start["pgid"] != os.getpgid(home.daemon_pid()), "the runner runs in its own process group"

    home.ok("leave", bot_id)
    final = wait_state(home, bot_id)
    assert final["state"] == "ended", final["events"]
    assert sorted(p.name for p in trap.iterdir()) == [], "a shell ran something from the bot's data"
    assert rig.secret not in (home.path / "botsched.log").read_text(), "[runner.env] values are never logged"


# -- 2. the join signal is on time -----------------------------------------------------------


def test_join_line_arrives_within_100ms_of_join_at(rig):
    home, probe = rig.home, rig.probe
    join_ats = [in_s(2.5 + 0.2 * i) for i in range(5)]
    bots = create_many(home, [{"join_at": at, "metadata": probe_meta(on_join="exit:0")} for at in join_ats])
    wait_records(probe, bots, "exit")
    finals = wait_all(home, bots)
    lateness = [join_lateness(probe, bot_id, at) for bot_id, at in zip(bots, join_ats)]
    print(f"\njoin line lateness measured by the runner (ms): {[round(x * 1000, 2) for x in lateness]}")
    for bot_id, late in zip(bots, lateness):
        assert late >= -0.001, f"{bot_id} got join {-late * 1000:.1f} ms BEFORE join_at"
        assert late < JOIN_BOUND_S, f"{bot_id} got join {late * 1000:.1f} ms after join_at (bound 100 ms)"
    for final in finals:
        assert final["state"] == "ended", final["events"]
        joining = parse_z(event(final, "joining")["at"]).timestamp() - parse_z(final["join_at"]).timestamp()
        assert 0 <= joining < JOIN_BOUND_S, f"the joining event is {joining * 1000:.1f} ms after join_at"


# -- 3. state lines ------------------------------------------------------------------------------


def test_state_lines_drive_the_bot_illegal_ones_are_ignored_other_lines_are_logged(rig):
    home = rig.home
    on_join = ("out:state waiting_room in the lobby;sleep:0.3;out:state joined_recording recording started;"
               "out:state scheduled;out:state staged;out:state ready;out:state no_such_state;"
               "out:hello from stdout;err:hello from stderr;sleep:0.3;out:state joined_not_recording paused")
    on_leave = "out:state leaving;out:state post_processing uploading;exit:0"
    bot_id = home.create(URL, "--join-at", in_s(AHEAD_S), *probe_args(on_join=on_join, on_leave=on_leave))
    during = wait_state(home, bot_id, "joined_not_recording")
    assert during["state"] == "joined_not_recording", during["events"]
    assert states_of(during) == ["scheduled", "staged", "joining", "waiting_room", "joined_recording",
                                 "joined_not_recording"], during["events"]
    assert event(during, "waiting_room")["detail"] == "in the lobby"
    assert event(during, "joined_recording")["detail"] == "recording started"
    assert event(during, "joined_not_recording")["detail"] == "paused"

    # the detail is shown by `events` (JSON and human)
    lines = [json.loads(line) for line in home.ok("events", bot_id, "--json").stdout.splitlines()]
    assert any(e["state"] == "joined_recording" and e["detail"] == "recording started" for e in lines), lines
    assert "recording started" in home.ok("events", bot_id).stdout

    home.ok("leave", bot_id)
    final = wait_state(home, bot_id)
    assert final["state"] == "ended", final["events"]
    assert states_of(final) == ["scheduled", "staged", "joining", "waiting_room", "joined_recording",
                                "joined_not_recording", "leaving", "post_processing", "ended"], final["events"]
    assert event(final, "post_processing")["detail"] == "uploading"

    logs = home.ok("logs", bot_id).stdout
    assert "hello from stdout" in logs, logs
    assert "hello from stderr" in logs, logs


# -- 4. how runners end ------------------------------------------------------------------------


def test_exit_codes_decide_ended_or_fatal_error(rig):
    home, probe = rig.home, rig.probe
    join_at = in_s(AHEAD_S)
    stderr_lines = ";".join(f"err:stderr line {c}" for c in "abcdefg")
    ok, failing, early, early_zero = create_many(home, [
        {"join_at": join_at, "metadata": probe_meta(on_join="out:state joined_recording;sleep:0.2;exit:0")},
        {"join_at": join_at,
         "metadata": probe_meta(on_join=f"out:state joined_recording;{stderr_lines};err:last words;exit:37")},
        {"join_at": join_at, "metadata": probe_meta(on_start="err:cannot launch the browser;exit:23")},
        {"join_at": join_at, "metadata": probe_meta(on_start="exit:0")},
    ])

    wait_records(probe, [ok, failing, early, early_zero], "exit")
    finals = dict(zip((ok, failing, early, early_zero), wait_all(home, [ok, failing, early, early_zero])))
    final = finals[ok]
    assert final["state"] == "ended", final["events"]
    assert states_of(final)[-2:] == ["joined_recording", "ended"]

    final = finals[failing]
    assert final["state"] == "fatal_error", final["events"]
    detail = last_detail(final)
    assert re.search(r"\b37\b", detail), f"the exit code is not in the detail: {detail!r}"
    assert "last words" in detail and "stderr line g" in detail, \
        f"the last stderr lines are not in the detail: {detail!r}"

    final = finals[early]
    assert final["state"] == "fatal_error", final["events"]
    assert states_of(final) == ["scheduled", "staged", "fatal_error"]
    detail = last_detail(final)
    assert "before the join" in detail, detail
    assert re.search(r"\b23\b", detail) and "cannot launch the browser" in detail, detail

    final = finals[early_zero]
    assert final["state"] == "fatal_error", f"exit 0 before the join must be fatal_error: {final['events']}"
    assert "before the join" in last_detail(final), final["events"]

    time.sleep(max(0.0, parse_z(join_at).timestamp() + 0.3 - time.time()))
    for bot_id in (early, early_zero):
        assert home.show(bot_id)["state"] == "fatal_error"
        assert not stdin_lines(probe, bot_id, "join"), "a dead runner was sent join"


def test_runner_that_cannot_be_started_is_fatal_error_with_the_reason(make_home, probe_dir, tmp_path):
    missing = str(tmp_path / "no-such-dir" / "recorder")
    not_executable = tmp_path / "recorder.sh"
    not_executable.write_text("#!/bin/sh\nexit 0\n")
    not_executable.chmod(0o644)
    cases = {
        "missing": (command_home(make_home, probe_dir, command=[missing, "--headless"]), missing,
                    ("No such file", "not found", "does not exist")),
        "not executable": (command_home(make_home, probe_dir, command=[str(not_executable)]), str(not_executable),
                           ("Permission denied", "not executable")),
    }

    parallel(*(home.start for home, _, _ in cases.values()))

    def scenario(home: Home) -> list[dict[str, Any]]:
        scheduled = home.create(URL, "--join-at", in_s(AHEAD_S))
        ad_hoc = home.create(URL)
        return wait_all(home, [scheduled, ad_hoc])

    results = parallel(*(lambda home=home: scenario(home) for home, _, _ in cases.values()))
    for (label, (home, path, reasons)), finals in zip(cases.items(), results):
        for final in finals:
            assert final["state"] == "fatal_error", f"{label}: {final['events']}"
            detail = last_detail(final)
            assert path in detail, f"{label}: the detail does not name the program: {detail!r}"
            assert any(r in detail for r in reasons), f"{label}: no clear reason in {detail!r}"
            assert "Traceback" not in detail
        assert "Traceback" not in home.run("logs", finals[0]["id"]).stderr


# -- 5. leave --------------------------------------------------------------------------------------


def test_leave_and_a_runner_that_hangs_after_leave_is_killed(rig):
    home, probe = rig.home, rig.probe  # leave_grace_seconds = 0.5
    join_at = in_s(AHEAD_S)
    polite, stubborn, later = create_many(home, [
        {"join_at": join_at, "metadata": probe_meta(on_join="out:state joined_recording")},
        {"join_at": join_at, "metadata": probe_meta(on_start="ignore_term;child", on_join="out:state joined_recording",
                                                    on_leave="out:state leaving;hang")},
        {"join_at": in_s(3600)},
    ])

    # not in a meeting: exit 4 (scheduled), 3 (no such bot)
    assert_clean_error(home.run("leave", later), 4)
    assert_clean_error(home.run("leave", "bot_AAAAAAAAAAAAAAAA"), 3)

    wait_records(probe, [polite, stubborn], "stdin", "join")
    wait_all(home, [polite, stubborn], "joined_recording")
    start = the_start(probe, stubborn)
    pgid = start["pgid"]
    child = records(probe, stubborn, "child")[0]["pid"]
    # the runner, its child, and the exit-status shim that leads the group
    assert sorted(group_members(pgid)) == sorted({pgid, start["pid"], child})

    result = home.ok("leave", polite)
    assert polite in result.stdout
    home.ok("leave", stubborn)

    final = wait_state(home, polite)
    assert final["state"] == "ended", final["events"]
    assert len(stdin_lines(probe, polite, "leave")) == 1, "the runner did not get exactly one leave line"
    assert the_exit(probe, polite)["code"] == 0
    assert_clean_error(home.run("leave", polite), 4)

    final = wait_state(home, stubborn, timeout=20)
    assert final["state"] == "fatal_error", final["events"]
    assert "SIGKILL" in last_detail(final), final["events"]
    assert states_of(final)[-2:] == ["leaving", "fatal_error"]
    leaves = stdin_lines(probe, stubborn, "leave")
    assert len(leaves) == 1, leaves
    killed_after = parse_z(final["events"][-1]["at"]).timestamp() - leaves[0]["t"]
    print(f"\nhanging runner ended {killed_after:.2f} s after it read leave")
    assert 0.5 + SIGKILL_DELAY_S - 0.1 <= killed_after <= 0.5 + SIGKILL_DELAY_S + 1, (
        f"killed {killed_after:.2f} s after leave; expected leave_grace_seconds (0.5) + {SIGKILL_DELAY_S} s")
    wait_until(lambda: not group_members(pgid), 3, what=f"process group {pgid} to be gone")
    assert not pid_alive(child), "the runner's child survived: the process group was not killed"


# -- 6 + 7. max_in_meeting_seconds and max_concurrent ---------------------------------------------


def test_max_concurrent_queues_the_third_bot_and_max_in_meeting_sends_leave(make_home, probe_dir):
    """max_concurrent = 2, max_in_meeting_seconds = 1: the runners leave by themselves after
    one second, which frees the slots the third bot waits for."""
    home = command_home(make_home, probe_dir, runner={"max_concurrent": 2, "max_in_meeting_seconds": 1})
    home.start()
    join_at = in_s(AHEAD_S)
    meta = probe_meta(on_join="out:state joined_recording", on_leave="out:state leaving;exit:0")
    bots = create_many(home, [{"join_at": join_at, "metadata": meta} for _ in range(3)])
    wait_records(probe_dir, bots, "exit")
    finals = dict(zip(bots, wait_all(home, bots)))
    for final in finals.values():
        assert final["state"] == "ended", final["events"]

    # max_in_meeting_seconds: each runner got leave about a second after join, without `botsched leave`
    # (from the joining event: a runner started late reads its join late, but the clock starts at the join)
    for b in bots:
        joins, leaves = stdin_lines(probe_dir, b, "join"), stdin_lines(probe_dir, b, "leave")
        assert len(joins) == 1 and len(leaves) == 1, records(probe_dir, b)
        in_meeting = leaves[0]["t"] - parse_z(event(finals[b], "joining")["at"]).timestamp()
        assert 0.95 <= in_meeting <= 1.6, f"leave came {in_meeting:.3f} s after join; max_in_meeting_seconds = 1"

    # exactly one bot waited: scheduled, with an event saying so, and no runner, until a slot freed
    waited = [b for b in bots if any(e["detail"] and "runner slot" in e["detail"] for e in finals[b]["events"])]
    assert len(waited) == 1, f"expected one bot with a 'waiting for a runner slot' event: {finals}"
    third = waited[0]
    first_two = [b for b in bots if b != third]
    bot = finals[third]
    note = next(e for e in bot["events"] if e["detail"] and "runner slot" in e["detail"])
    assert note["state"] == "scheduled", note
    assert parse_z(note["at"]) <= parse_z(join_at), "the wait was announced only after join_at"
    staged_at = parse_z(event(bot, "staged")["at"]).timestamp()
    first_exit = min(the_exit(probe_dir, b)["t"] for b in first_two)
    assert staged_at >= first_exit - 0.05, "the third bot left scheduled before a slot was freed"
    assert the_start(probe_dir, third)["t"] >= first_exit - 0.05, "a third runner started while both slots were used"
    for b in first_two:
        assert not any(e["detail"] and "runner slot" in e["detail"] for e in finals[b]["events"])
        assert join_lateness(probe_dir, b, join_at) < JOIN_BOUND_S
    late = join_lateness(probe_dir, third, join_at)
    print(f"\nthird bot joined {late:.3f} s late (it waited for a runner slot)")
    assert 0.9 <= late <= 3, late
    assert states_of(bot) == ["scheduled", "staged", "joining", "joined_recording", "leaving", "ended"], bot["events"]

    # never more than two runners alive at once
    spans = [(the_start(probe_dir, b)["t"], the_exit(probe_dir, b)["t"]) for b in bots]
    for moment, _ in spans:
        alive = sum(1 for s, e in spans if s <= moment < e)
        assert alive <= 2, f"{alive} runners at once: {spans}"

    joining = event(bot, "joining")
    assert "not running" not in (joining["detail"] or ""), (
        f"the late join's event blames a daemon outage, but the bot waited for a runner slot: {joining['detail']!r}")


# -- 8. wait and events --follow -----------------------------------------------------------------


class Follower:
    """``botsched events ... --follow --json`` in the background, every line with its arrival time."""

    def __init__(self, home: Home, *args: str) -> None:
        self.proc = home.popen("events", *args, "--follow", "--json", stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append((time.time(), json.loads(raw)))

    def of(self, bot_id: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, e in self.lines if e.get("bot_id") == bot_id]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(5)
        self.thread.join(5)


def test_wait_and_events_follow_stream_live_with_a_real_runner(rig):
    home = rig.home
    join_at = in_s(AHEAD_S + 1)
    bot_id, failing = create_many(home, [
        {"join_at": join_at,
         "metadata": probe_meta(on_join="out:state waiting_room;sleep:0.5;out:state joined_recording;sleep:0.5;"
                                        "out:state joined_not_recording",
                                on_leave="out:state leaving;sleep:0.3;exit:0")},
        {"join_at": join_at, "metadata": probe_meta(on_join="err:crashed;exit:7")},
    ])
    follower = Follower(home, bot_id)
    everyone = Follower(home)
    waiter = home.popen("wait", bot_id, "--state", "joined_recording", "--json", "--timeout", "20",
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    waited: dict[str, Any] = {}

    def collect() -> None:
        waited["out"], waited["err"] = waiter.communicate()
        waited["returned"] = time.time()

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    try:
        wait_until(lambda: follower.lines and everyone.lines, 10, what="the follow streams to start")
        streaming_since = time.time()

        # wait --timeout on a bot that will not get there in time: 124
        assert_clean_error(home.run("wait", bot_id, "--timeout", "0.2"), 124)

        # the `wait` started before the join returns as soon as the state is reached
        collector.join(20)
        assert waiter.returncode == 0, waited
        reached = json.loads(waited["out"])
        assert reached["state"] == "joined_recording", reached["events"]
        changed = parse_z(event(reached, "joined_recording")["at"]).timestamp()
        assert changed > streaming_since, "too slow: the bot joined before the clients were ready"
        delay = waited["returned"] - changed
        print(f"\nwait returned {delay * 1000:.0f} ms after the state change")
        assert delay < 0.5, f"wait returned {delay:.3f} s after the state change"
        assert wait_state(home, bot_id, "waiting_room")["state"] != "waiting_room", \
            "wait for a state already passed returns at once"
        # the awaited state never comes: exit 4
        assert_clean_error(home.run("wait", failing, "--state", "joined_recording", "--timeout", "10"), 4)

        wait_state(home, bot_id, "joined_not_recording")
        home.ok("leave", bot_id)
        final = wait_state(home, bot_id)
        assert final["state"] == "ended", final["events"]
        wait_until(lambda: [e["state"] for _, e in follower.lines][-1:] == ["ended"], 3,
                   what="ended on the follow stream")
        assert follower.proc.poll() is None, "events --follow must keep streaming after the bot ended"
    finally:
        follower.stop()
        everyone.stop()
        if waiter.poll() is None:
            waiter.kill()

    assert all(e["bot_id"] == bot_id for _, e in follower.lines), follower.lines
    assert [e["state"] for _, e in follower.lines] == [
        "scheduled", "staged", "joining", "waiting_room", "joined_recording", "joined_not_recording", "leaving",
        "ended"], follower.lines
    for stream in (follower, everyone):
        for arrived, e in stream.of(bot_id):
            happened = parse_z(e["at"]).timestamp()
            if happened > streaming_since:
                assert arrived - happened < 0.5, f"{e['state']} arrived {arrived - happened:.3f} s late: not live"
    assert [e["state"] for _, e in everyone.of(failing)][-1:] == ["fatal_error"], everyone.lines
    assert [e["state"] for _, e in everyone.of(bot_id)] == [e["state"] for _, e in follower.lines]


# -- 9. missed joins ---------------------------------------------------------------------------------


def ts(text: str) -> float:
    return parse_z(text).timestamp()


def test_misfire_inside_and_outside_the_grace(make_home, probe_dir):
    """The daemon is down at the join_at of a staged bot (T) and of a scheduled bot (S).

    stage_lead_seconds = 4: T (join_at 3.8 s ahead) is staged at once, S (7.5 s ahead) would be
    staged 3.5 s after its creation, when the daemon is already stopped."""
    homes = {
        "inside": command_home(make_home, probe_dir, scheduler={"stage_lead_seconds": 4, "misfire_grace_seconds": 30}),
        "outside": command_home(make_home, probe_dir, scheduler={"stage_lead_seconds": 4, "misfire_grace_seconds": 0}),
    }
    late_by = {"inside": 1.5, "outside": 2.0}  # restart this long after S's join_at
    leave_politely = probe_meta(on_leave="out:state leaving;exit:0")

    def down_over_join_at(label: str) -> dict[str, Any]:
        home = homes[label]
        home.start()
        now = time.time()
        t_join, s_join = at_offset(now, 3.8), at_offset(now, 7.5)
        s, t = create_many(home, [{"join_at": s_join, "metadata": leave_politely},
                                  {"join_at": t_join, "metadata": leave_politely}])
        t_pid = wait_until(lambda: records(probe_dir, t, "start"), 5, what="T's runner")[0]["pid"]
        home.ok("daemon", "stop")
        stopped = time.time()
        print(f"\nmisfire {label}: daemon stopped {stopped - now:.2f} s after the bots were created")
        assert stopped < min(ts(t_join), ts(s_join) - 4) - 0.2, "too slow: the daemon stopped too late for this test"
        assert not records(probe_dir, s), "S must not have been staged"
        assert pid_alive(t_pid), "a staged runner must survive a graceful daemon stop"
        time.sleep(max(0.0, ts(s_join) + late_by[label] - time.time()))
        home.start()
        return {"s": s, "t": t, "s_join": s_join, "t_join": t_join, "t_pid": t_pid, "restarted": time.time()}

    runs = dict(zip(homes, parallel(*(lambda label=label: down_over_join_at(label) for label in homes))))

    # inside the grace: both join at once, the event says how late
    home, run = homes["inside"], runs["inside"]
    s, t = run["s"], run["t"]
    wait_records(probe_dir, [s, t], "stdin", "join")
    joined = dict(zip((s, t), wait_all(home, [s, t], "joining")))
    for bot_id, join_at in ((s, run["s_join"]), (t, run["t_join"])):
        bot = joined[bot_id]
        joining = event(bot, "joining")
        late = join_lateness(probe_dir, bot_id, join_at)
        signalled = stdin_lines(probe_dir, bot_id, "join")[0]["t"]
        print(f"\nmisfire inside the grace: joined {late:.3f} s late; event: {joining['detail']!r}")
        assert signalled - run["restarted"] < 1.5, "a missed join within the grace must happen at once on restart"
        match = re.search(r"(\d+(?:\.\d+)?)\s*s\b.*late", joining["detail"] or "")
        assert match, f"the joining event does not say how late: {joining['detail']!r}"
        assert abs(float(match.group(1)) - late) < 1.0, (match.group(1), late)
    assert the_start(probe_dir, t)["pid"] == run["t_pid"], "the staged bot's runner was replaced"
    the_start(probe_dir, s)
    leave_all(home, [s, t])
    wait_records(probe_dir, [s, t], "exit")
    for bot_id, final in zip((s, t), wait_all(home, [s, t])):
        assert final["state"] == "ended", final["events"]
        assert len(stdin_lines(probe_dir, bot_id, "join")) == 1

    # outside the grace: fatal_error "missed join_at", no join, no runner left behind
    home, run = homes["outside"], runs["outside"]
    s, t = run["s"], run["t"]
    for bot_id, final in zip((s, t), wait_all(home, [s, t])):
        assert final["state"] == "fatal_error", final["events"]
        assert "missed join_at" in last_detail(final), final["events"]
        assert not stdin_lines(probe_dir, bot_id, "join"), "a missed bot was told to join"
    assert not records(probe_dir, s), "a runner was started for a bot that missed its join"
    t_pgid = the_start(probe_dir, t)["pgid"]
    wait_until(lambda: not group_members(t_pgid), SIGKILL_DELAY_S + 3,
               what="the missed staged bot's runner to be stopped")


# -- 10. restart recovery ------------------------------------------------------------------------------


def test_restart_keeps_runners_no_double_start_no_double_join_nothing_stranded(make_home, probe_dir):
    """One home's daemon is SIGKILLed, the other's stopped gracefully (``daemon stop``), while
    two bots are in a meeting and two are staged; then it restarts (autostarted by a command
    after the SIGKILL, ``daemon start`` after the stop). While no daemon runs, the runners of
    one bot in the meeting and one staged bot die."""
    homes = {how: command_home(make_home, probe_dir, scheduler={"stage_lead_seconds": 10})
             for how in ("sigkill", "graceful")}
    in_call = probe_meta(on_join="out:state joined_recording")

    def crash_and_restart(how: str) -> dict[str, Any]:
        home = homes[how]
        home.start()
        plan = {"in_meeting": in_s(AHEAD_S), "dies_in_meeting": in_s(AHEAD_S)}
        ids = dict(zip(plan, create_many(home, [{"join_at": at, "metadata": in_call} for at in plan.values()])))
        wait_records(probe_dir, list(ids.values()), "stdin", "join")
        staged = {"staged_1": in_s(6), "dies_staged": in_s(6.5)}  # staged at once
        ids.update(zip(staged, create_many(home, [{"join_at": at} for at in staged.values()])))
        plan.update(staged)
        starts = {name: wait_until(lambda b=bot_id: records(probe_dir, b, "start"), 5, what=f"{name}'s runner")[0]
                  for name, bot_id in ids.items()}
        old = home.daemon_pid()
        assert old is not None
        if how == "sigkill":
            os.kill(old, signal.SIGKILL)
        else:
            home.ok("daemon", "stop")
        wait_until(lambda: not pid_alive(old), 5, what="the old daemon to be gone")
        for name, start in starts.items():
            assert pid_alive(start["pid"]), f"{how}: the runner of {name} died with the daemon"
        for name in ("dies_in_meeting", "dies_staged"):
            os.killpg(starts[name]["pgid"], signal.SIGKILL)
            wait_until(lambda pgid=starts[name]["pgid"]: not group_members(pgid), 3, what="the runner to die")
        if how == "graceful":
            home.ok("daemon", "start")
        else:
            home.ok("list", "--limit", "1")  # any command autostarts the daemon after the SIGKILL
        restarted = time.time()
        print(f"\n{how}: restarted {ts(plan['staged_1']) - restarted:.2f} s before the first staged join_at")
        assert restarted < ts(plan["staged_1"]) - 0.2, "too slow: the daemon restarted too late for this test"
        new = home.daemon_pid()
        assert new is not None and new != old and pid_alive(new), how
        return {"ids": ids, "plan": plan, "starts": starts, "restarted": restarted}

    runs = dict(zip(homes, parallel(*(lambda how=how: crash_and_restart(how) for how in homes))))

    # the bot in the meeting stays in it, with the same runner; the one whose runner died is not stranded
    listed = dict(zip(homes, parallel(*(home.list_all for home in homes.values()))))
    for how, run in runs.items():
        by_id = {bot["id"]: bot for bot in listed[how]}
        kept = by_id[run["ids"]["in_meeting"]]
        assert kept["state"] == "joined_recording", (how, kept["events"])
        assert states_of(kept) == ["scheduled", "staged", "joining", "joined_recording"], (how, kept["events"])
        assert all(e["detail"] is None for e in kept["events"]), (how, kept["events"])
        dead = by_id[run["ids"]["dies_in_meeting"]]
        assert dead["state"] == "fatal_error", (how, dead["events"])
        assert "runner" in last_detail(dead) and re.search(r"exited|died|gone", last_detail(dead)), \
            (how, dead["events"])

    # the staged bots still join on time, once; a staged bot whose runner died got a new one
    for how, run in runs.items():
        names = ["staged_1", "dies_staged"]
        wait_records(probe_dir, [run["ids"][n] for n in names], "stdin", "join")
        joined = dict(zip(names, wait_all(homes[how], [run["ids"][n] for n in names], "joining")))
        for name in names:
            bot = joined[name]
            assert states_of(bot) == ["scheduled", "staged", "joining"], (how, name, bot["events"])
            late = join_lateness(probe_dir, run["ids"][name], run["plan"][name])
            print(f"\n{how}: {name} joined {late * 1000:.1f} ms after join_at")
            assert -0.001 <= late < JOIN_BOUND_S, f"{how}: {name} joined {late * 1000:.1f} ms late after the restart"
    for how, run in runs.items():
        for name, bot_id in run["ids"].items():
            starts = records(probe_dir, bot_id, "start")
            if name == "dies_staged":
                assert len(starts) == 2 and not pid_alive(starts[0]["pid"]), f"{how}: {name}: {starts}"
            else:  # exactly one runner per bot: the one started before the restart
                assert [r["pid"] for r in starts] == [run["starts"][name]["pid"]], f"{how}: {name}: {starts}"
            joins = len(stdin_lines(probe_dir, bot_id, "join"))
            assert joins == 1, f"{how}: {name}: join sent {joins} times"
            if name != "dies_in_meeting":
                assert pid_alive(starts[-1]["pid"]), f"{how}: the runner of {name} is gone"

    # nothing stranded: every bot still in a meeting is told to leave, exits 0 and ends `ended`
    alive = ["in_meeting", "staged_1", "dies_staged"]

    def leave_and_wait(how: str) -> dict[str, dict[str, Any]]:
        bot_ids = [runs[how]["ids"][name] for name in alive]
        leave_all(homes[how], bot_ids)
        wait_records(probe_dir, bot_ids, "exit")
        return dict(zip(alive, wait_all(homes[how], bot_ids)))

    finals = dict(zip(homes, parallel(*(lambda how=how: leave_and_wait(how) for how in homes))))
    summary = {}
    for how, run in runs.items():
        for name in alive:
            bot_id = run["ids"][name]
            assert len(stdin_lines(probe_dir, bot_id, "leave")) == 1, f"{how}: {name}: leave not received once"
            assert the_exit(probe_dir, bot_id)["code"] == 0
            assert len(stdin_lines(probe_dir, bot_id, "join")) == 1, f"{how}: {name}: join was sent again"
            summary[f"{how}/{name}"] = (finals[how][name]["state"], last_detail(finals[how][name]))
    assert all(state == "ended" for state, _ in summary.values()), (
        f"runners that got `leave` and exited 0 after a daemon restart must end 'ended': {summary}")
