"""Issue 10, runner I/O: what a misbehaving command runner must not do to the daemon.

- item 1: a runner that leaves a child behind which keeps writing to the inherited
  stdout (``yes``, or a stream without newlines) and exits 0 must not freeze the daemon
  or grow its memory: the runner's exit ends its output, the drain is bounded;
- item 4: many runners under a low open-file limit: the soft limit is raised to the hard
  one at start, the systemd unit sets ``LimitNOFILE``, and a runner that would not fit is
  refused at staging with a clear event, never a failed or repeated join;
- item 7: a runner that says ``leaving`` or ``post_processing`` and hangs is killed after
  ``runner.leave_grace_seconds``; ``botsched leave`` on such a bot is accepted, and a
  second one stops the runner at once;
- item 16: a ``state`` line over 64 KiB is dropped whole (with a note), never misparsed
  by its tail; stdin never reaches EOF when the daemon goes away (the README says so).

Every process these tests start carries the home's ``BOTSCHED_HOME`` and is killed at
teardown (``Home.cleanup``), leftover ``yes`` children included.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from botsched.client import systemd
from botsched.daemon.main import MAX_CONNECTIONS
from botsched.daemon.runners import base
from tests.support.home import Client, Lost, make_short_dir, processes_of_home, wait_until
from tests.support.times import in_s, z_seconds

from .relhelpers import record_figures, rss_kib

URL = "https://zoom.us/j/1010"
ROOT = Path(__file__).resolve().parents[2]


def _runner_home(make_home, script: str, runner: dict | None = None, scheduler: dict | None = None):
    config = {"scheduler": {"stage_lead_seconds": 1, **(scheduler or {})},
              "runner": {"kind": "command", "command": ["/bin/sh", "-c", script, "runner"], **(runner or {})}}
    return make_home(config)


def _ping_ms(home, timeout: float = 2.0) -> float:
    """One ``ping`` on a fresh connection (what ``daemon status`` does); its latency in ms."""
    started = time.monotonic()
    with Client(home.socket, timeout) as client:
        assert client.ok("ping")["pid"]
    return (time.monotonic() - started) * 1000


def _state(home, bot_id: str) -> str:
    with home.client() as client:
        return client.ok("show", id=bot_id)["state"]


def _bot(home, bot_id: str) -> dict:
    with home.client() as client:
        return client.ok("show", id=bot_id)


def _comms(home) -> list[str]:
    found = []
    for pid in processes_of_home(home.path):
        try:
            found.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            pass
    return found


# -- item 1: a leftover child keeps writing -------------------------------------------------------

LEFTOVER = {
    "yes": "yes",  # newlines, as fast as it can
    "no-newlines": "tr '\\0' y < /dev/zero",  # one endless line
    # in a session of their own: out of the runner's process group, so never killed with
    # it; only the bounded drain keeps the daemon going
    "setsid-yes": "setsid yes",
    "setsid-no-newlines": "setsid sh -c \"tr '\\\\0' y < /dev/zero\"",
}

SPAM_SCRIPT = """
case "$BOTSCHED_BOT_NAME" in
  spam)
    read line
    echo "state joined_recording"
    echo "last words before exiting"
    {leftover} &
    sleep 0.2
    exit 0 ;;
  *)
    read line
    echo "state joined_recording"
    read line
    exit 0 ;;
esac
"""


@pytest.mark.parametrize("kind", sorted(LEFTOVER))
def test_a_leftover_child_writing_for_ever_does_not_freeze_the_daemon(make_home, kind):
    home = _runner_home(make_home, SPAM_SCRIPT.format(leftover=LEFTOVER[kind]))
    pid = home.launch()
    rss_before = rss_kib(pid)
    with home.client() as client:
        punctual = client.ok("create", meeting_url=URL, bot_name="punctual", join_at=in_s(2.5))["id"]
        spam = client.ok("create", meeting_url=URL, bot_name="spam")["id"]  # ad hoc: joins now
    started = time.monotonic()
    status = home.run("daemon", "status", timeout=10)
    assert status.returncode == 0, status.stdout + status.stderr
    assert time.monotonic() - started < 3, f"daemon status took {time.monotonic() - started:.1f} s"
    latencies: list[float] = []
    failures: list[str] = []
    rss_peak = rss_before
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            latencies.append(_ping_ms(home))
        except (Lost, AssertionError) as exc:
            failures.append(str(exc))
        rss_peak = max(rss_peak, rss_kib(pid))
        time.sleep(0.1)
    assert not failures, f"the daemon did not answer within 2 s: {failures[:3]} ({len(failures)} times)"
    assert max(latencies) < 1000, f"ping took {max(latencies):.0f} ms"
    assert _state(home, spam) == "ended", _bot(home, spam)["events"]
    bot = _bot(home, punctual)
    joining = [e for e in bot["events"] if e["state"] == "joining"]
    assert joining, bot["events"]
    late_s = z_seconds(joining[0]["at"]) - z_seconds(bot["join_at"])
    assert late_s < 0.5, f"the punctual bot joined {late_s:.3f} s late"
    assert rss_peak - rss_before < 30 * 1024, f"daemon RSS grew from {rss_before} to {rss_peak} KiB"
    record_figures(f"leftover child ({kind})", ping_max_ms=round(max(latencies)),
                   punctual_late_ms=round(late_s * 1000, 1), rss_before_kib=rss_before, rss_peak_kib=rss_peak)
    log = (home.path / "runner-logs" / f"{spam}.log").read_bytes()
    assert b"last words before exiting\n" in log, "what the runner wrote before exiting was not drained"
    if not kind.startswith("setsid"):
        wait_until(lambda: not {"yes", "tr"} & set(_comms(home)), 5, what="the leftover child to be killed")


# -- item 16: overlong lines ---------------------------------------------------------------------

def test_a_state_line_over_64k_is_dropped_whole_and_its_tail_never_parsed(make_home):
    marker = "state joined_recording evil"
    script = f"""
read line
head -c 100000 /dev/zero | tr '\\0' A
printf '%s' '{marker}'
head -c {65536 - len(marker)} /dev/zero | tr '\\0' B
sleep 0.5
printf '\\n'
printf 'state joined_recording '
head -c 100000 /dev/zero | tr '\\0' x
printf '\\n'
echo "state joined_not_recording fine"
read line
exit 0
"""
    home = _runner_home(make_home, script)
    home.launch()
    with home.client() as client:
        bot_id = client.ok("create", meeting_url=URL)["id"]
    wait_until(lambda: _state(home, bot_id) == "joined_not_recording", 10, what="the short state line")
    events = _bot(home, bot_id)["events"]
    assert [e["state"] for e in events][-1] == "joined_not_recording", events
    assert not any("evil" in (e["detail"] or "") for e in events), "the tail of a long line was parsed"
    assert not any(e["state"] == "joined_recording" for e in events), events
    log = (home.path / "runner-logs" / f"{bot_id}.log").read_text(errors="replace")
    assert log.count("line over 64 KiB") == 2, log[-2000:]
    assert "dropped" in log
    daemon_log = home.log.read_text()
    assert "over 64 KiB" in daemon_log, daemon_log[-2000:]


# -- item 16: stdin never sees EOF; the README says so -------------------------------------------

def test_stdin_never_reaches_eof_when_the_daemon_goes_away_and_the_readme_says_so(make_home):
    out = make_short_dir()
    script = """
read line
echo "state joined_recording"
if read line; then echo "read:$line" >> "$OUT/$BOTSCHED_BOT_ID"; else echo "EOF" >> "$OUT/$BOTSCHED_BOT_ID"; fi
exit 0
"""
    home = _runner_home(make_home, script, runner={"env": {"OUT": str(out)}})
    home.launch()
    with home.client() as client:
        bot_id = client.ok("create", meeting_url=URL)["id"]
    wait_until(lambda: _state(home, bot_id) == "joined_recording", 10, what="the join")
    home.terminate()
    time.sleep(1.0)
    assert not (out / bot_id).exists(), (out / bot_id).read_text()
    home.launch()
    with home.client() as client:
        client.ok("leave", id=bot_id)
    wait_until(lambda: _state(home, bot_id) == "ended", 10, what="the bot to end")
    assert (out / bot_id).read_text() == "read:leave\n"
    readme = (ROOT / "README.md").read_text()
    assert "EOF on stdin means the daemon went away" not in readme
    assert "never sees EOF" in readme


# -- item 7: hanging in leaving / post_processing ---------------------------------------------------

@pytest.mark.parametrize("state", ["leaving", "post_processing"])
def test_a_runner_that_hangs_after_saying_it_leaves_is_killed_after_the_grace(make_home, state):
    script = f"""
read line
echo "state joined_recording"
echo "state {state} wrapping up"
exec sleep 1000
"""
    home = _runner_home(make_home, script, runner={"leave_grace_seconds": 1})
    home.launch()
    with home.client() as client:
        bot_id = client.ok("create", meeting_url=URL)["id"]
    wait_until(lambda: _state(home, bot_id) == state, 10, what=state)
    started = time.monotonic()
    wait_until(lambda: _state(home, bot_id) in ("ended", "fatal_error"), 10, what="the hanging runner to be killed")
    assert time.monotonic() - started < 5, "not killed after leave_grace_seconds"
    bot = _bot(home, bot_id)
    assert bot["state"] == "fatal_error" and "SIGTERM" in bot["events"][-1]["detail"], bot["events"]


def test_leave_on_a_leaving_bot_is_accepted_and_a_second_leave_stops_it(make_home):
    out = make_short_dir()
    script = """
trap '' TERM
read line
echo "state joined_recording"
echo "state post_processing uploading"
while read line; do echo "$line" >> "$OUT/$BOTSCHED_BOT_ID"; done
"""
    home = _runner_home(make_home, script, runner={"leave_grace_seconds": 600, "env": {"OUT": str(out)}})
    home.launch()
    with home.client() as client:
        bot_id = client.ok("create", meeting_url=URL)["id"]
    wait_until(lambda: _state(home, bot_id) == "post_processing", 10, what="post_processing")
    first = home.run("leave", bot_id)
    assert first.returncode == 0, first.stderr
    assert "already" in first.stderr and "leave again" in first.stderr, first.stderr
    wait_until(lambda: (out / bot_id).exists() and (out / bot_id).read_text() == "leave\n", 5,
               what="the runner to be told to leave")
    assert _state(home, bot_id) == "post_processing"
    second = home.run("leave", bot_id)
    assert second.returncode == 0, second.stderr
    assert "SIGKILL" in second.stderr, second.stderr
    # it ignores SIGTERM: SIGKILL follows 5 s later
    wait_until(lambda: _state(home, bot_id) == "fatal_error", 10, what="the runner to be killed")
    assert "SIGKILL" in _bot(home, bot_id)["events"][-1]["detail"]
    third = home.run("leave", bot_id)
    assert third.returncode == 4, "leave on an ended bot is still a conflict"


# -- item 4: file descriptors --------------------------------------------------------------------

def _launch_with_nofile(home, soft: int, hard: int) -> int:
    home.LAUNCH = (f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard})); "
                   + type(home).LAUNCH)
    return home.launch()


def _nofile(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no Max open files line")


def test_the_daemon_raises_its_soft_open_file_limit_to_the_hard_one(make_home):
    home = make_home()
    pid = _launch_with_nofile(home, 256, 2048)
    assert _nofile(pid) == (2048, 2048)


def test_the_systemd_unit_sets_limit_nofile():
    assert "\nLimitNOFILE=" in systemd.unit_text()


def test_the_descriptor_reserve_covers_every_connection():
    assert getattr(base, "RESERVED_FDS", 0) >= MAX_CONNECTIONS + 32


RECORDER = """
rec="$REC_DIR/$BOTSCHED_BOT_ID"
echo "start" >> "$rec"
while read line; do
  echo "$line" >> "$rec"
  if [ "$line" = join ]; then echo "state joined_recording"; fi
  if [ "$line" = leave ]; then exit 0; fi
done
"""


def test_runners_beyond_the_descriptor_limit_are_refused_at_staging_and_joins_stay_single(make_home):
    rec = make_short_dir()
    count = 40
    home = _runner_home(make_home, RECORDER, runner={"env": {"REC_DIR": str(rec)}, "max_concurrent": 100})
    pid = _launch_with_nofile(home, 128, 128)  # 40 runners at 5 descriptors each do not fit
    join_at = in_s(3.0)
    with home.client() as client:
        ids = [client.ok("create", meeting_url=URL, join_at=join_at)["id"] for _ in range(count)]
    failures = []
    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline:
        try:
            _ping_ms(home)
        except (Lost, AssertionError) as exc:
            failures.append(str(exc))
        time.sleep(0.1)
    assert not failures, f"the daemon stopped answering: {failures[:3]} ({len(failures)} times)"
    status = home.run("daemon", "status", "--json", timeout=10)
    assert status.returncode == 0 and json.loads(status.stdout)["running"] is True, status.stdout + status.stderr
    bots = {bot_id: _bot(home, bot_id) for bot_id in ids}
    joined = [b for b in bots.values() if b["state"] == "joined_recording"]
    refused = [b for b in bots.values() if b["state"] == "fatal_error"]
    assert len(joined) + len(refused) == count, {b["id"]: b["state"] for b in bots.values()}
    assert joined, "no runner fitted at all"
    assert refused, "all 40 fitted: the limit did not bite"
    for bot in refused:
        detail = bot["events"][-1]["detail"]
        assert "file descriptors" in detail and "missed" not in detail, detail
        # like any runner that cannot start: staged in the store, then refused, never joined
        assert [e["state"] for e in bot["events"]] == ["scheduled", "staged", "fatal_error"], bot["events"]
        assert detail.startswith("runner could not start: too few file descriptors"), detail
        assert not (rec / bot["id"]).exists(), "a refused bot's runner was started"
    for bot in joined:
        lines = (rec / bot["id"]).read_text().splitlines()
        assert lines == ["start", "join"], (bot["id"], lines)
        assert sum(e["state"] == "joining" for e in bot["events"]) == 1
        late_s = z_seconds(next(e["at"] for e in bot["events"] if e["state"] == "joining")) - z_seconds(bot["join_at"])
        assert late_s < 0.5, f"{bot['id']} joined {late_s:.3f} s late"
    assert not any("missed" in (e["detail"] or "") for b in bots.values() for e in b["events"])
    assert len(os.listdir(f"/proc/{pid}/fd")) < 128
    record_figures("runner descriptors", limit=128, bots=count, joined=len(joined), refused=len(refused))
