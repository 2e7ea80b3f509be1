"""``join`` exactly once, and no runner forgotten, when things go wrong (issue 10, items 2, 3, 5, 6).

- item 2: a kill between sending ``join`` and recording it resent ``join`` after the restart.
  The scheduler now records the whole batch (one commit) *before* sending; a restart treats
  "recorded, maybe not sent" as sent. Tested at the scheduler with a fake runner that dies
  in the middle of a batch (deterministic), and with real kills of the daemon.
- item 3: a storage error at join time (the marker write, the commit) escaped the batch and
  the next tick joined again. Tested with a store that refuses commits, and with the home on
  a full tmpfs (root only).
- item 5: a crash while ad-hoc (``ready``) bots start left two live runners for one bot.
- item 6: a ``leave`` before a daemon stop was forgotten (the SIGTERM/SIGKILL follow-up lived
  only in memory), and the kill was then blamed on "no daemon watched it".
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from botsched.core import config as config_mod
from botsched.core.config import Config
from botsched.core.timeparse import format_instant
from botsched.daemon.runners.base import Runner
from botsched.daemon.scheduler import Scheduler
from botsched.daemon.store import NewBot, StorageError, Store
from tests.support.fakes import FakeClock
from tests.support.home import Client, wait_until
from tests.support.times import in_s, z_seconds
from tests.support.tmpfs import fill_disk, mount_small_tmpfs

from .relhelpers import can_mount, record_figures, retry

S = 1_000_000
T0 = 1_900_000_000 * S
RECORDER = Path(__file__).with_name("recorder.sh")
URL = "https://zoom.us/j/42"


# -- the scheduler, with a fake runner ---------------------------------------------------------


class Killed(BaseException):
    """Stands for a SIGKILL of the daemon: nothing after it runs."""


class SendingRunner(Runner):
    """Records every ``join`` with the bot's stored state at that moment; ``die_at`` = n makes
    the n-th join kill the "daemon" (before or after its write, per ``die_after_send``)."""

    kind = "fake"

    def __init__(self, config: Config, store: Store, sent: list[str]) -> None:
        super().__init__(config, lambda *args: None)
        self.store = store
        self.sent = sent  # shared across "restarts": what the runner processes received
        self.state_at_send: dict[str, str] = {}
        self.die_at: int | None = None
        self.die_after_send = True

    def stage(self, bot: dict[str, Any]) -> None:
        pass

    def join(self, bot_id: str) -> None:
        if self.die_at is not None and len(self.sent) + 1 == self.die_at and not self.die_after_send:
            raise Killed
        self.state_at_send[bot_id] = self.store.get(bot_id)["state"]
        self.sent.append(bot_id)
        if self.die_at is not None and len(self.sent) == self.die_at:
            raise Killed

    def leave(self, bot_id: str) -> None:
        pass

    def resume(self, bot: dict[str, Any], since_us: int) -> None:
        pass


def _config() -> Config:
    return Config({**config_mod.defaults(), "scheduler.stage_lead_seconds": 10})


def _rig(path: Path, sent: list[str]) -> tuple[Store, SendingRunner, Scheduler, FakeClock]:
    store = Store(path)
    config = _config()
    runner = SendingRunner(config, store, sent)
    clock = FakeClock(T0)
    return store, runner, Scheduler(store, runner, config, clock), clock


def _staged(store: Store, clock: FakeClock, sched: Scheduler, join_us: int, count: int) -> list[str]:
    ids = store.insert([NewBot(URL, "bot", format_instant(join_us), join_us, {}, None)] * count, clock.t)
    clock.t = join_us - 5 * S
    sched.tick()
    assert {store.get(i)["state"] for i in ids} == {"staged"}
    return ids


def test_the_join_batch_is_recorded_before_any_join_is_sent(tmp_path: Path) -> None:
    sent: list[str] = []
    store, runner, sched, clock = _rig(tmp_path / "db", sent)
    join = T0 + 60 * S
    ids = _staged(store, clock, sched, join, 50)
    writes: list[int] = []
    real = store.transition_many

    def transition_many(changes: Any, now_us: int) -> list[str]:
        writes.append(len(changes))
        return real(changes, now_us)

    store.transition_many = transition_many  # type: ignore[method-assign]
    clock.t = join
    sched.tick()
    assert sorted(sent) == sorted(ids)
    not_recorded = {i: s for i, s in runner.state_at_send.items() if s != "joining"}
    assert not not_recorded, f"join was sent before it was recorded for {len(not_recorded)} of 50 bots"
    assert writes == [50], f"the batch was not recorded in one write: {writes}"
    store.close()


@pytest.mark.parametrize("die_after_send", [True, False])
def test_a_kill_in_the_middle_of_a_join_batch_never_sends_join_twice(tmp_path: Path, die_after_send: bool) -> None:
    sent: list[str] = []
    store, runner, sched, clock = _rig(tmp_path / "db", sent)
    join = T0 + 60 * S
    ids = _staged(store, clock, sched, join, 20)
    runner.die_at, runner.die_after_send = 7, die_after_send
    clock.t = join + 1000
    with pytest.raises(Killed):
        sched.tick()
    store.close()
    # the restart: a new store, runner and scheduler on the same database
    store, runner, sched, clock = _rig(tmp_path / "db", sent)
    clock.t = join + 200_000
    sched.recover()
    for _ in range(3):
        sched.tick()
        clock.t += S
    twice = [bot_id for bot_id, n in Counter(sent).items() if n > 1]
    assert not twice, f"join sent twice to {len(twice)} bot(s) after a kill in the join batch"
    assert {store.get(i)["state"] for i in ids} == {"joining"}, "recorded joins are treated as sent"
    store.close()


def test_a_storage_error_at_join_time_never_sends_join_twice_nor_claims_lateness(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []
    store, _runner, sched, clock = _rig(tmp_path / "db", sent)
    join = T0 + 60 * S
    ids = _staged(store, clock, sched, join, 5)
    real = store.transition_many
    broken = True

    def transition_many(*args: Any, **kwargs: Any) -> list[str]:
        if broken:
            raise StorageError("database x: database or disk is full; nothing was changed")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "transition_many", transition_many)
    for step in range(9):  # nine ticks over eight seconds of a full disk
        clock.t = join + step * S
        target = sched.tick()
        assert target is None or target > clock.t, "the scheduler would spin while the record is refused"
    assert Counter(sent) == Counter(ids), f"join lines per bot while the store refused writes: {Counter(sent)}"
    sched.report(ids[0], "joined_recording", None)  # the runner reports while the record waits
    broken = False
    clock.t = join + 10 * S
    sched.tick()
    assert Counter(sent) == Counter(ids)
    assert store.get(ids[0])["state"] == "joined_recording", "a report behind an unrecorded join was lost"
    for bot_id in ids:
        bot = store.get(bot_id)
        assert bot["state"] == ("joined_recording" if bot_id == ids[0] else "joining"), bot
        joining = [e for e in bot["events"] if e["state"] == "joining"]
        assert len(joining) == 1 and joining[0]["at"] == format_instant(join), joining
        assert joining[0]["detail"] is None or "late" not in joining[0]["detail"], joining
    store.close()


# -- the real daemon ---------------------------------------------------------------------------


def _recorded(rec_dir: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in rec_dir.glob("*.log"):
        found[path.stem] = path.read_text().splitlines()
    return found


def _starts_and_joins(rec_dir: Path) -> tuple[dict[str, int], dict[str, int]]:
    rec = _recorded(rec_dir)
    starts = {b: sum(1 for ln in lines if ln.startswith("start ")) for b, lines in rec.items()}
    joins = {b: sum(1 for ln in lines if ln.startswith("line ") and ln.endswith(" join")) for b, lines in rec.items()}
    return starts, joins


def _command_home(make_home, tmp_path: Path, extra: dict[str, Any] | None = None, script: Path = RECORDER,
                  subdir: str | None = None):
    rec_dir = tmp_path / "rec"
    rec_dir.mkdir()
    config = {"scheduler": {"stage_lead_seconds": 1},
              "runner": {"kind": "command", "command": ["/bin/sh", str(script)], "env": {"REC_DIR": str(rec_dir)},
                         **(extra or {})}}
    home = make_home(write_config=subdir is None, subdir=subdir)
    return home, config, rec_dir


def _bulk_create(client: Client, items: list[dict[str, Any]]) -> None:
    client.send(json.dumps({"v": 1, "op": "create_many", "args": {}}).encode() + b"\n")
    client.send(json.dumps({"items": items}).encode() + b"\n" + json.dumps({"end": True}).encode() + b"\n")
    reply = json.loads(client.read_line())
    assert reply.get("ok") is True, reply


def _states(client: Client, ids: list[str] | None = None) -> dict[str, str]:
    bots = client.ok("list", limit=0)
    bots = bots.get("bots", bots) if isinstance(bots, dict) else bots
    return {b["id"]: b["state"] for b in bots if ids is None or b["id"] in ids}


def _wait_finished(home, client: Client, timeout: float, rec_dir: Path | None = None) -> None:
    """Until every bot is ended or fatal_error -- or, with ``rec_dir``, ``joining`` with a
    runner that never read ``join`` (recorded, then killed before it was sent: at most once);
    else fail with the states and the log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _states(client)
        _, joins = _starts_and_joins(rec_dir) if rec_dir is not None else ({}, {})
        if all(state in ("ended", "fatal_error") or (rec_dir is not None and state == "joining"
                                                     and not joins.get(bot_id)) for bot_id, state in found.items()):
            return
        time.sleep(0.1)
    tail = home.log.read_text(errors="replace").splitlines()[-15:]
    raise AssertionError(f"bots not finished after {timeout}s: {Counter(found.values())}; log: " + "\n".join(tail))


def test_kills_right_after_join_at_never_send_join_twice(make_home, tmp_path: Path) -> None:
    """Item 2 with real kills: 60 runners share one join_at; the daemon is SIGKILLed a few
    milliseconds after it and restarted; no runner may read ``join`` twice."""
    home, config, rec_dir = _command_home(make_home, tmp_path, {"max_concurrent": 100})
    home.write_config(config)
    unsent = 0  # joins recorded, then the kill came before they were sent: at most once
    for trial in range(3):
        home.launch()
        with home.client() as client:
            join_at = in_s(2.5)
            _bulk_create(client, [{"meeting_url": f"{URL}{trial}{n}", "join_at": join_at} for n in range(60)])
        delay = z_seconds(join_at) - time.time() + 0.001 * (1 + trial)
        time.sleep(max(delay, 0))
        home.sigkill()
        home.launch()
        with home.client() as client:
            _wait_finished(home, client, 30, rec_dir)
            unsent = sum(1 for state in _states(client).values() if state == "joining")
        home.terminate()
    record_figures("join once under kills", trials=3, bots=180, recorded_not_sent=unsent)
    starts, joins = _starts_and_joins(rec_dir)
    assert len(starts) == 180
    twice = sum(1 for n in joins.values() if n > 1)
    assert max(joins.values(), default=0) <= 1, f"join read twice by {twice} runner(s)"
    assert max(starts.values()) == 1


def test_ad_hoc_bots_killed_while_starting_get_one_runner_each(make_home, tmp_path: Path) -> None:
    """Item 5: 100 ad-hoc bots bulk-created; SIGKILL while their runners start; restart."""
    home, config, rec_dir = _command_home(make_home, tmp_path, {"max_concurrent": 100})
    home.write_config(config)
    for trial, pause in enumerate((0.02, 0.08)):
        home.launch()
        with home.client() as client:
            _bulk_create(client, [{"meeting_url": f"{URL}{trial}{n}"} for n in range(100)])
        time.sleep(pause)
        home.sigkill()
        home.launch()
        with home.client() as client:
            _wait_finished(home, client, 40)
        home.terminate()
    starts, joins = _starts_and_joins(rec_dir)
    assert len(starts) == 200
    doubled = {b: n for b, n in starts.items() if n > 1}
    assert not doubled, f"{len(doubled)} ad-hoc bot(s) got two runners after the crash"
    assert max(joins.values()) == 1


STUBBORN = """#!/bin/sh
# ignores SIGTERM and "leave": only SIGKILL ends it
trap '' TERM
rec="$REC_DIR/$BOTSCHED_BOT_ID.log"
echo "start $$" >> "$rec"
while IFS= read -r line; do
    echo "line $$ $line" >> "$rec"
    if [ "$line" = "join" ]; then echo "state joined_recording"; fi
done
"""


def test_a_leave_is_carried_out_after_a_daemon_restart(make_home, tmp_path: Path) -> None:
    """Item 6: ``leave``, then a graceful daemon stop; the runner ignores leave and SIGTERM.
    The restarted daemon must still kill it once the leave grace is over, and say so."""
    script = tmp_path / "stubborn.sh"
    script.write_text(STUBBORN)
    home, config, _rec_dir = _command_home(make_home, tmp_path, {"leave_grace_seconds": 1}, script=script)
    home.write_config(config)
    home.launch()
    with home.client() as client:
        bot_id = client.ok("create", meeting_url=URL)["id"]
        wait_until(lambda: client.ok("show", id=bot_id)["state"] == "joined_recording", 20, what="joined")
        client.ok("leave", id=bot_id)
    home.terminate()
    home.launch()
    with home.client() as client:
        def finished() -> dict[str, Any]:
            bot = client.ok("show", id=bot_id)
            assert bot["state"] in ("ended", "fatal_error")
            return bot
        try:
            bot = retry(finished, 20, "the bot left its meeting after the restart")
        except AssertionError:
            bot = client.ok("show", id=bot_id)
            raise AssertionError(f"after leave + restart the bot is still {bot['state']}: {bot['events']}") from None
    detail = bot["events"][-1]["detail"] or ""
    assert "no daemon watched" not in detail, detail
    assert "SIGKILL" in detail, detail


@pytest.mark.skipif(not can_mount(), reason="cannot mount a tmpfs in this sandbox")
def test_a_full_disk_at_join_time_sends_join_once_and_does_not_claim_lateness(make_home, tmp_path: Path) -> None:
    """Item 3 as reported: the home on a full disk at join_at."""
    home, config, rec_dir = _command_home(make_home, tmp_path, subdir="home")
    home.path.mkdir(mode=0o700)
    mount_small_tmpfs(home.path)
    make_home.mounts.append(home.path)
    home.write_config(config)
    home.launch()
    with home.client() as client:
        bot_id = client.ok("create", meeting_url=URL, join_at=in_s(3))["id"]
        wait_until(lambda: client.ok("show", id=bot_id)["state"] == "staged", 10, what="staged")
        # the runner is up: its shim's interpreter may start after the state says staged
        wait_until(lambda: _starts_and_joins(rec_dir)[0].get(bot_id) == 1, 10, what="the runner's start")
        join_at = client.ok("show", id=bot_id)["join_at"]
        filler = fill_disk(home.path)
        time.sleep(max(0.0, z_seconds(join_at) + 4 - time.time()))
        _, joins = _starts_and_joins(rec_dir)
        filler.unlink()
        assert joins.get(bot_id) == 1, f"the runner read join {joins.get(bot_id)} times on a full disk"
        wait_until(lambda: client.ok("show", id=bot_id)["state"] != "staged", 10, what="the join recorded")
        events = client.ok("show", id=bot_id)["events"]
    joining = [e for e in events if e["state"] == "joining"]
    assert len(joining) == 1, events
    assert "late" not in (joining[0]["detail"] or ""), joining
    _, joins = _starts_and_joins(rec_dir)
    assert joins.get(bot_id) == 1


def test_the_shim_starts_the_runner_when_its_pid_file_cannot_be_written(tmp_path: Path) -> None:
    """A full disk while a runner starts: the shim's pid file is only for a re-attach after a
    crash, so failing to write it must not keep the runner (and its join) from starting."""
    from botsched.daemon.runners.command import SHIM

    out = tmp_path / "ran"
    missing = tmp_path / "no-such-dir"
    done = subprocess.run(
        [sys.executable, "-I", "-S", SHIM, str(missing / "pid"), str(missing / "exit"),
         "/bin/sh", "-c", f"echo ran > {out}; exit 3"],
        capture_output=True, text=True, timeout=20,
    )
    assert out.read_text() == "ran\n"
    assert done.returncode == 3, "the runner's exit status is still the shim's"
    assert "cannot write" in done.stderr and "Traceback" not in done.stderr
