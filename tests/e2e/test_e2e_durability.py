"""Crash safety (SPEC §7): SIGKILL the daemon, start it again, lose nothing, strand nothing."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from tests.support.home import assert_clean_error, pid_alive, wait_until
from tests.support.times import in_s, parse_z

URL = "https://meet.google.com/abc-defg-hij"


def _kill_daemon(home) -> int:
    pid = home.daemon_pid()
    assert pid is not None and pid_alive(pid)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), 5, what="the killed daemon to die")
    return pid


def _sleep_until(join_at: str, plus: float) -> None:
    target = parse_z(join_at).timestamp() + plus
    time.sleep(max(0.0, target - time.time()))


def _event(bot: dict, state: str) -> dict:
    matches = [e for e in bot["events"] if e["state"] == state]
    assert matches, f"{bot['id']} never was {state}: {[e['state'] for e in bot['events']]}"
    return matches[-1]


def test_sigkill_loses_no_acknowledged_bot_and_a_missed_join_runs_late(make_home):
    home = make_home()
    home.start()
    bulk = "".join(
        json.dumps({"meeting_url": f"{URL}?n={n}", "bot_name": f"bulk {n}",
                    "join_at": f"2028-02-{n % 28 + 1:02d}T09:00:00Z", "metadata": {"n": str(n)}}) + "\n"
        for n in range(25)
    )
    bulk_ids = home.ok("create", "--from", "-", input=bulk).stdout.split()
    assert len(bulk_ids) == 25

    def one(n: int) -> str:
        return home.create(f"{URL}?c={n}", "--join-at", f"2028-03-01T10:00:{n:02d}.5Z", "--metadata", f"c={n}",
                           "--bot-name", f"concurrent {n}", "--dedup-key", f"durable-{n}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        single_ids = list(pool.map(one, range(8)))
    before = {bot["id"]: bot for bot in home.list_all()}
    assert len(before) == 33
    join_at = in_s(2.0)
    late = home.json("create", URL, "--join-at", join_at, "--bot-name", "late joiner")
    late_id = late["id"]
    before[late_id] = late

    killed = _kill_daemon(home)
    status = home.run("daemon", "status", "--json")  # a stale socket file is "not running"
    assert status.returncode == 5 and json.loads(status.stdout) == {"running": False}, status
    assert "Traceback" not in status.stderr
    _sleep_until(join_at, 1.5)  # join_at passes while no daemon runs
    assert home.daemon_pid() in (None, killed), "daemon status must not have started a daemon"

    after = {bot["id"]: bot for bot in home.list_all()}  # autostarts a new daemon
    new_pid = home.daemon_pid()
    assert new_pid != killed and pid_alive(new_pid)
    assert set(after) == set(before), "bots were lost or invented across the crash"
    for bot_id in bulk_ids + single_ids:
        assert after[bot_id] == before[bot_id], f"{bot_id} changed across the crash"
    # the dedup keys survived too
    dup = home.run("create", URL, "--join-at", "2028-04-01T00:00:00Z", "--dedup-key", "durable-3")
    assert single_ids[3] in assert_clean_error(dup, 4)

    home.ok("wait", late_id, "--timeout", "15")
    bot = home.show(late_id)
    states = [e["state"] for e in bot["events"]]
    assert states == ["scheduled", "staged", "joining", "joined_recording", "ended"], states
    joining = _event(bot, "joining")
    assert joining["detail"] and "late" in joining["detail"], f"the late join must say so: {joining}"
    late_by = (parse_z(joining["at"]) - parse_z(join_at)).total_seconds()
    assert 1.4 <= late_by <= 10, f"joined {late_by:.3f}s after join_at"
    for field in ("meeting_url", "bot_name", "join_at", "created_at", "metadata", "deduplication_key"):
        assert bot[field] == late[field]
    assert bot["events"][0] == late["events"][0]


def test_sigkill_with_staged_and_in_meeting_bots_strands_nothing(make_home):
    # a long stage lead stages the bot at once; the simulated meeting outlives the crash
    home = make_home({"scheduler": {"stage_lead_seconds": 30}, "runner": {"simulate_duration_seconds": 6}})
    home.start()
    live = home.create(URL)  # ad-hoc: in the meeting when the daemon dies
    home.ok("wait", live, "--state", "joined_recording", "--timeout", "10")
    join_at = in_s(2.5)
    staged = home.create(URL, "--join-at", join_at)
    home.ok("wait", staged, "--state", "staged", "--timeout", "10")
    before = {bot["id"]: bot for bot in home.list_all()}
    assert before[live]["state"] == "joined_recording"
    assert before[staged]["state"] == "staged"

    _kill_daemon(home)
    _sleep_until(join_at, 1.5)

    # autostart; the staged bot whose join_at passed joins late, and says so
    joined = home.json("wait", staged, "--state", "joining", "--timeout", "15")
    assert [e["state"] for e in joined["events"]][:3] == ["scheduled", "staged", "joining"]
    joining = _event(joined, "joining")
    assert joining["detail"] and "late" in joining["detail"], joining

    # the bot that was in the meeting is resumed or failed with a reason, never stuck
    home.ok("wait", live, "--timeout", "15")
    bot = home.show(live)
    assert bot["state"] in ("ended", "fatal_error")
    assert bot["events"][: len(before[live]["events"])] == before[live]["events"], "history is append-only"
    if bot["state"] == "fatal_error":
        assert bot["events"][-1]["detail"], "a fatal_error after a restart must give a reason"


def test_join_missed_beyond_grace_is_fatal_error(make_home):
    home = make_home({"scheduler": {"misfire_grace_seconds": 0.5}})
    home.start()
    far = home.create(URL, "--join-at", "2028-01-01T00:00:00Z")
    join_at = in_s(2.0)
    missed = home.create(URL, "--join-at", join_at)
    _kill_daemon(home)
    _sleep_until(join_at, 1.2)  # 0.7 s past the grace

    result = home.run("wait", missed, "--timeout", "15")
    assert result.returncode == 0, f"fatal_error is a terminal state: {result.stderr}"
    bot = home.show(missed)
    assert bot["state"] == "fatal_error"
    detail = bot["events"][-1]["detail"] or ""
    assert "missed" in detail, f"the reason must say the join was missed: {detail!r}"
    assert "joining" not in [e["state"] for e in bot["events"]]
    assert home.show(far)["state"] == "scheduled", "scheduled bots are never affected"
    assert_clean_error(home.run("wait", missed, "--state", "ended", "--timeout", "5"), 4)
