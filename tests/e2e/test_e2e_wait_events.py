"""``botsched wait`` and ``botsched events`` (with ``--follow`` read live from a pipe)."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import pytest

from tests.support.home import ID_RE, MICRO_Z_RE, assert_clean_error
from tests.support.times import UTC, in_s, parse_z

URL = "https://zoom.us/j/42"
FAR = "2028-05-01T12:00:00Z"


def test_wait_default_is_any_terminal_state(module_home):
    home = module_home
    bot_id = home.create(URL)
    result = home.ok("wait", bot_id, "--timeout", "15")
    assert bot_id in result.stdout and "ended" in result.stdout
    assert home.show(bot_id)["state"] == "ended"
    # already terminal: answers at once
    started = time.monotonic()
    home.ok("wait", bot_id)
    home.ok("wait", bot_id, "--state", "ended")
    assert time.monotonic() - started < 5


def test_wait_for_a_state(module_home):
    home = module_home
    bot_id = home.create(URL)
    bot = home.json("wait", bot_id, "--state", "joined_recording", "--timeout", "15")
    assert bot["id"] == bot_id
    assert "joined_recording" in [e["state"] for e in bot["events"]]
    # a state the bot has already passed counts as reached
    home.ok("wait", bot_id, "--timeout", "15")
    home.ok("wait", bot_id, "--state", "joining", "--timeout", "5")


def test_wait_timeout_exits_124(module_home):
    home = module_home
    bot_id = home.create(URL, "--join-at", FAR)
    started = time.monotonic()
    result = home.run("wait", bot_id, "--timeout", "0.5")
    elapsed = time.monotonic() - started
    assert_clean_error(result, 124)
    assert elapsed < 5, f"wait --timeout 0.5 took {elapsed:.1f}s"
    result = home.run("wait", bot_id, "--state", "staged", "--timeout", "0.3")
    assert_clean_error(result, 124)


def test_wait_exits_4_when_the_bot_ends_otherwise(module_home):
    home = module_home
    live = home.create(URL)
    result = home.run("wait", live, "--state", "fatal_error", "--timeout", "15")
    assert_clean_error(result, 4)
    assert home.show(live)["state"] == "ended"
    # an ad-hoc bot never becomes staged: once it ended, waiting for staged is a conflict
    result = home.run("wait", live, "--state", "staged", "--timeout", "5")
    assert_clean_error(result, 4)


def test_wait_bad_state_is_invalid_input(module_home):
    home = module_home
    bot_id = home.create(URL, "--join-at", FAR)
    assert_clean_error(home.run("wait", bot_id, "--state", "asleep", "--timeout", "1"), 2)
    assert_clean_error(home.run("wait", bot_id, "--timeout", "-1"), 2)


def test_events_json_one_object_per_line(module_home):
    home = module_home
    a = home.create(URL)
    b = home.create(URL, "--join-at", FAR)
    home.ok("wait", a, "--timeout", "15")
    result = home.ok("events", a, "--json")
    lines = result.stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["state"] for e in events] == ["ready", "joining", "joined_recording", "ended"]
    shown = home.show(a)["events"]
    for line_event, bot_event in zip(events, shown):
        assert line_event["state"] == bot_event["state"]
        assert line_event["at"] == bot_event["at"]
        assert MICRO_Z_RE.match(line_event["at"])
        assert line_event.get("bot_id", a) == a
    everything = [json.loads(line) for line in home.ok("events", "--json").stdout.splitlines()]
    assert all("bot_id" in e for e in everything), "events of every bot must say which bot"
    ours = [e for e in everything if e["bot_id"] in (a, b)]
    assert [e["state"] for e in ours if e["bot_id"] == a] == [e["state"] for e in events]
    assert [e["state"] for e in ours if e["bot_id"] == b] == ["scheduled"]
    times = [parse_z(e["at"]) for e in everything]
    assert times == sorted(times), "oldest first"
    human = home.ok("events", a).stdout
    assert "joined_recording" in human and "ended" in human


def _reader(stream, sink: queue.Queue) -> None:
    for line in iter(stream.readline, b""):
        sink.put((datetime.now(UTC), line))
    sink.put((datetime.now(UTC), None))


@contextmanager
def _following(home, *args: str) -> Iterator[tuple[subprocess.Popen, queue.Queue]]:
    """``events --follow`` running, once it is streaming (a sentinel bot's past event has
    arrived, so no sleep is needed before creating the bot under test); stopped afterwards."""
    sentinel = home.create(URL, "--join-at", FAR)
    proc = home.popen("events", "--follow", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      stdin=subprocess.DEVNULL)
    try:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
        past = _collect(lines, lambda g: sentinel.encode() in g[-1][1], timeout=10)
        assert past and sentinel.encode() in past[-1][1], f"events --follow did not print past events: {past}"
        yield proc, lines
    finally:
        proc.terminate()
        proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()


def _collect(lines: queue.Queue, until, timeout: float) -> list[tuple[datetime, bytes]]:
    got: list[tuple[datetime, bytes]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            arrived, line = lines.get(timeout=0.1)
        except queue.Empty:
            continue
        if line is None:
            break
        got.append((arrived, line))
        if until(got):
            break
    return got


def test_events_follow_json_streams_live_into_a_pipe(module_home):
    home = module_home
    with _following(home, "--json") as (proc, lines):
        join_at = in_s(2.0)
        bot_id = home.create(URL, "--join-at", join_at)
        got = _collect(lines, lambda g: bot_id.encode() in g[-1][1] and b'"ended"' in g[-1][1], timeout=15)
        assert proc.poll() is None, "events --follow must keep running"
    events = [(arrived, json.loads(line)) for arrived, line in got]
    assert all("bot_id" in e for _, e in events), "events of every bot must say which bot"
    mine = [(arrived, e) for arrived, e in events if e["bot_id"] == bot_id]
    assert [e["state"] for _, e in mine] == ["scheduled", "staged", "joining", "joined_recording", "ended"], mine
    for arrived, event in mine:
        lag = (arrived - parse_z(event["at"])).total_seconds()
        assert -0.05 <= lag < 1.0, f"{event['state']} arrived {lag:.3f}s after it happened: not live"


def test_events_follow_human_streams_live_into_a_pipe(module_home):
    home = module_home
    with _following(home) as (proc, lines):
        bot_id = home.create(URL)
        started = datetime.now(UTC)
        got = _collect(lines, lambda g: bot_id.encode() in g[-1][1] and b"ended" in g[-1][1], timeout=15)
        assert proc.poll() is None, "events --follow must keep running"
    got = [(arrived, line) for arrived, line in got if bot_id.encode() in line]
    text = [line.decode() for _, line in got]
    assert any("joining" in line for line in text), text
    assert any("ended" in line for line in text), text
    first = got[0][0]
    assert (first - started).total_seconds() < 1.0, "the first line did not arrive while the bot ran"
    end = home.show(bot_id)["events"][-1]
    assert end["state"] == "ended"
    lag = (got[-1][0] - parse_z(end["at"])).total_seconds()
    assert lag < 1.0, f"the 'ended' line arrived {lag:.3f}s late: not flushed line by line"


def test_events_of_a_bot_after_cancel_is_not_found(module_home):
    home = module_home
    bot_id = home.create(URL, "--join-at", FAR)
    assert ID_RE.match(bot_id)
    home.ok("cancel", bot_id)
    assert_clean_error(home.run("events", bot_id), 3)


def test_wait_on_a_bot_cancelled_meanwhile_ends(module_home):
    """A cancelled bot is gone for good: a waiter must not hang forever (no such bot: exit 3)."""
    home = module_home
    bot_id = home.create(URL, "--join-at", FAR)
    waiter = home.popen("wait", bot_id, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.8)  # a blocked wait gives no readiness signal: let it connect and subscribe
        assert waiter.poll() is None, "wait ended before the cancel"
        home.ok("cancel", bot_id)
        try:
            _, err = waiter.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail("wait still blocks 5 s after its bot was cancelled (deleted for good)")
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait(5)
    assert waiter.returncode == 3, f"wait exited {waiter.returncode}: {err.strip()}"
    assert err.startswith("error:") and "Traceback" not in err, err


def test_leave_ends_a_bot_in_a_meeting(make_home):
    home = make_home({"runner": {"simulate_duration_seconds": 30}})
    bot_id = home.create(URL)
    home.ok("wait", bot_id, "--state", "joined_recording", "--timeout", "10")
    result = home.ok("leave", bot_id)
    assert bot_id in result.stdout
    home.ok("wait", bot_id, "--timeout", "10")
    bot = home.show(bot_id)
    states = [e["state"] for e in bot["events"]]
    assert bot["state"] == "ended" and "leaving" in states, states
    assert_clean_error(home.run("leave", bot_id), 4)
