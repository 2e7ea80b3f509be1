"""Unit tests of botsched.daemon.scheduler driven by a fake clock and a recording fake runner.

No event loop, no sleeping: every test calls ``tick()`` at chosen fake times.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from botsched.core import config as config_mod
from botsched.core.config import Config
from botsched.core.model import NewBot
from botsched.core.timeparse import format_instant, to_us
from botsched.daemon.runners.base import RunnerError
from botsched.daemon.scheduler import Scheduler
from botsched.daemon.store import Store
from tests.support.fakes import FakeClock, RecordingRunner

S = 1_000_000
LEAD = 10 * S
GRACE = 300 * S
T0 = to_us(datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC))
URL = "https://meet.example.com/abc"


def make_config(**overrides: Any) -> Config:
    values = {
        **config_mod.defaults(),
        "scheduler.stage_lead_seconds": LEAD // S,
        "scheduler.misfire_grace_seconds": GRACE // S,
    }
    values.update(overrides)
    return Config(values)


class Harness:
    def __init__(self, tmp_path: Path, cap: int | None = None, **overrides: Any) -> None:
        self.clock = FakeClock(T0)
        self.store = Store(tmp_path / "db")
        self.config = make_config(**overrides)
        self.runner = RecordingRunner(self.config, cap)
        self.sched = Scheduler(self.store, self.runner, self.config, self.clock)

    def add(self, join_us: int | None, now: int | None = None) -> str:
        text = None if join_us is None else format_instant(join_us)
        at = self.clock.t if now is None else now
        [bot_id] = self.store.insert([NewBot(URL, "bot", text, join_us, {}, None)], at)
        return bot_id

    def add_many(self, join_us: int, count: int) -> list[str]:
        return self.store.insert([NewBot(URL, "bot", format_instant(join_us), join_us, {}, None)] * count, self.clock.t)

    def at(self, t: int) -> int | None:
        self.clock.t = t
        return self.sched.tick()

    def settle(self, t: int | None = None) -> int | None:
        """Tick like ``run()`` does: again at once while something is already due."""
        if t is not None:
            self.clock.t = t
        for _ in range(20):
            nxt = self.sched.tick()
            if nxt is None or nxt > self.clock.t:
                return nxt
        raise AssertionError("the scheduler keeps saying something is due now")

    def state(self, bot_id: str) -> str:
        return self.store.get(bot_id)["state"]

    def events(self, bot_id: str) -> list[dict[str, Any]]:
        return self.store.get(bot_id)["events"]


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = Harness(tmp_path)
    yield harness
    harness.store.close()


# -- staging and joining on time --------------------------------------------------------


def test_nothing_happens_before_stage_time(h: Harness) -> None:
    join = T0 + 3600 * S
    bot_id = h.add(join)
    assert h.at(T0) == join - LEAD
    assert h.at(join - LEAD - 1) == join - LEAD
    assert h.state(bot_id) == "scheduled"
    assert h.runner.calls == []


def test_staged_exactly_at_stage_time_then_joined_exactly_at_join_at(h: Harness) -> None:
    join = T0 + 3600 * S + 123_456
    bot_id = h.add(join)
    assert h.at(join - LEAD) == join  # next due: the join
    assert h.state(bot_id) == "staged"
    assert h.runner.calls == [("stage", bot_id, "staged")]
    assert h.events(bot_id)[-1] == {"state": "staged", "at": format_instant(join - LEAD), "detail": None}

    assert h.at(join - 1) == join  # not a microsecond early
    assert h.state(bot_id) == "staged"
    assert h.runner.ops("join") == []

    assert h.at(join) is None
    assert h.state(bot_id) == "joining"
    assert h.runner.ops("join") == [bot_id]
    assert h.events(bot_id)[-1] == {"state": "joining", "at": format_instant(join), "detail": None}
    assert [e["state"] for e in h.events(bot_id)] == ["scheduled", "staged", "joining"]


def test_bot_created_inside_the_lead_is_staged_at_once(h: Harness) -> None:
    join = T0 + 4 * S
    bot_id = h.add(join)
    assert h.at(T0) == join
    assert h.state(bot_id) == "staged"
    assert h.runner.ops("stage") == [bot_id]


def test_tick_returns_the_earliest_next_due_time(h: Harness) -> None:
    assert h.at(T0) is None  # nothing queued
    a = h.add(T0 + 5 * S)  # inside the lead: staged now, joins at T0+5s
    b = h.add(T0 + 100 * S)  # staged at T0+90s
    c = h.add(T0 + 12 * S)  # staged at T0+2s
    assert h.at(T0) == T0 + 2 * S
    assert h.state(a) == "staged" and h.state(b) == h.state(c) == "scheduled"
    assert h.at(T0 + 2 * S) == T0 + 5 * S
    assert h.state(c) == "staged"
    assert h.at(T0 + 5 * S) == T0 + 12 * S
    assert h.state(a) == "joining"
    assert h.at(T0 + 12 * S) == T0 + 90 * S
    assert h.at(T0 + 90 * S) == T0 + 100 * S
    assert h.at(T0 + 100 * S) is None
    assert {h.state(x) for x in (a, b, c)} == {"joining"}


def test_scheduled_stage_time_can_come_before_a_staged_join(h: Harness) -> None:
    a = h.add(T0 + 8 * S)
    assert h.at(T0) == T0 + 8 * S
    b = h.add(T0 + 12 * S)  # stage time T0+2s, before a's join
    assert h.sched.next_due_us() == T0 + 2 * S
    assert h.at(T0 + 2 * S) == T0 + 8 * S
    assert h.state(a) == h.state(b) == "staged"


def test_burst_of_1000_bots_with_one_join_at_all_join_in_one_tick(h: Harness) -> None:
    join = T0 + 5 * S
    ids = h.add_many(join, 1000)
    # stage them in one transaction (staging through tick() costs one fsync'd commit per
    # bot, too slow for a unit test; the staging path is covered by the tests above)
    h.store.transition_many([(bot_id, "scheduled", "staged", None) for bot_id in ids], T0)
    assert h.sched.next_due_us() == join
    assert h.at(join - 1) == join
    assert h.store.counts()["staged"] == 1000
    assert h.runner.ops("join") == []
    assert h.at(join) is None  # one tick
    assert h.store.counts()["joining"] == 1000
    assert sorted(h.runner.ops("join")) == sorted(ids)
    assert {h.store.events(bot_id)[-1].at_us for bot_id in ids[::37]} == {join}


def test_burst_of_100_bots_is_staged_in_one_tick(h: Harness) -> None:
    join = T0 + 5 * S
    ids = h.add_many(join, 100)
    assert h.at(T0) == join
    assert h.store.counts()["staged"] == 100
    assert sorted(h.runner.ops("stage")) == sorted(ids)
    assert h.at(join) is None
    assert h.store.counts()["joining"] == 100


def test_more_bots_than_one_batch_are_all_handled_in_one_tick(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    from botsched.daemon import scheduler as scheduler_mod

    monkeypatch.setattr(scheduler_mod, "BATCH", 3)
    join = T0 + 5 * S
    ids = h.add_many(join, 10)
    adhoc = [h.add(None) for _ in range(7)]
    assert h.at(T0) == join
    assert h.store.counts()["staged"] == 10
    assert all(h.state(x) == "joining" for x in adhoc)
    assert h.at(join) is None
    assert h.store.counts()["joining"] == 17
    assert sorted(h.runner.ops("join")) == sorted(ids + adhoc)
    assert len(h.runner.ops("stage")) == 17  # nobody twice


def test_reschedule_before_staging_moves_the_stage_time(h: Harness) -> None:
    old, new = T0 + 600 * S, T0 + 1200 * S
    bot_id = h.add(old)
    assert h.at(T0) == old - LEAD
    h.store.reschedule(bot_id, format_instant(new), new, T0 + S)
    assert h.sched.next_due_us() == new - LEAD
    assert h.at(old - LEAD) == new - LEAD
    assert h.state(bot_id) == "scheduled"
    assert h.at(old) == new - LEAD
    assert h.state(bot_id) == "scheduled"
    assert h.runner.calls == []
    assert h.at(new - LEAD) == new
    assert h.state(bot_id) == "staged"
    assert h.at(new) is None
    assert h.state(bot_id) == "joining"


def test_reschedule_earlier_makes_it_due_sooner(h: Harness) -> None:
    bot_id = h.add(T0 + 3600 * S)
    h.at(T0)
    h.store.reschedule(bot_id, format_instant(T0 + 60 * S), T0 + 60 * S, T0)
    assert h.sched.next_due_us() == T0 + 50 * S


def _after_due_read(h: Harness, action: Any) -> None:
    """Run ``action`` right after the scheduler has read which scheduled bots are due,
    before it stages them: the window a racing request would have to hit."""
    original_due = h.store.due

    def due_then_act(state: str, until_us: int, limit: int = 10_000) -> Any:
        rows = original_due(state, until_us, limit)
        if state == "scheduled" and rows:
            action()
        return rows

    h.store.due = due_then_act  # type: ignore[method-assign]


def test_a_reschedule_that_slips_in_wins_over_staging(h: Harness) -> None:
    """The scheduler read both bots as due; before it stages them, the second is rescheduled."""
    a = h.add(T0 + 20 * S)
    b = h.add(T0 + 21 * S)
    later = T0 + 3600 * S
    _after_due_read(h, lambda: h.store.reschedule(b, format_instant(later), later, h.clock.t))
    assert h.at(T0 + 11 * S) == T0 + 20 * S
    assert h.state(a) == "staged"
    assert h.state(b) == "scheduled"
    assert h.store.get(b)["join_at"] == format_instant(later)
    assert h.runner.ops("stage") == [a]


def test_a_cancel_that_slips_in_wins_over_staging(h: Harness) -> None:
    a = h.add(T0 + 20 * S)
    b = h.add(T0 + 21 * S)
    _after_due_read(h, lambda: h.store.delete_scheduled(b))
    h.at(T0 + 11 * S)
    assert h.state(a) == "staged"
    assert h.runner.ops("stage") == [a]
    assert h.store.counts()["staged"] == 1 and sum(h.store.counts().values()) == 1


# -- ad-hoc bots ------------------------------------------------------------------------


def test_ad_hoc_bot_starts_and_joins_at_once(h: Harness) -> None:
    bot_id = h.add(None)
    assert h.sched.next_due_us() == T0
    assert h.at(T0) is None
    assert h.state(bot_id) == "joining"
    assert h.runner.calls == [("stage", bot_id, "ready"), ("join", bot_id)]
    assert [e["state"] for e in h.events(bot_id)] == ["ready", "joining"]


def test_ad_hoc_runner_failure_is_fatal(h: Harness) -> None:
    h.runner.fail["stage"] = "no browser available"
    bot_id = h.add(None)
    h.at(T0)
    assert h.state(bot_id) == "fatal_error"
    assert "no browser available" in h.events(bot_id)[-1]["detail"]
    assert h.runner.ops("join") == []


# -- misfires and clock steps -----------------------------------------------------------


def test_misfire_within_grace_joins_at_once_saying_how_late(h: Harness) -> None:
    join = T0 + 3600 * S
    bot_id = h.add(join)
    # the daemon was not running at stage time nor at join_at; it is back 60 s late
    assert h.settle(join + 60 * S) is None
    assert h.state(bot_id) == "joining"
    assert h.runner.ops("stage") == [bot_id] and h.runner.ops("join") == [bot_id]
    detail = h.events(bot_id)[-1]["detail"]
    assert detail and re.search(r"\b60(\.0+)?s late\b", detail), detail


def test_misfire_exactly_at_grace_still_joins(h: Harness) -> None:
    join = T0 + 3600 * S
    bot_id = h.add(join)
    h.settle(join + GRACE)
    assert h.state(bot_id) == "joining"


def test_misfire_past_grace_is_fatal_missed_join_at(h: Harness) -> None:
    join = T0 + 3600 * S
    bot_id = h.add(join)
    assert h.settle(join + GRACE + 1) is None
    assert h.state(bot_id) == "fatal_error"
    detail = h.events(bot_id)[-1]["detail"]
    assert "missed join_at" in detail
    assert h.runner.calls == []


def test_staged_bot_past_grace_is_fatal_and_discarded(h: Harness) -> None:
    join = T0 + 3600 * S
    bot_id = h.add(join)
    h.at(join - LEAD)
    assert h.state(bot_id) == "staged"
    h.settle(join + GRACE + 5 * S)
    assert h.state(bot_id) == "fatal_error"
    assert "missed join_at" in h.events(bot_id)[-1]["detail"]
    assert h.runner.ops("join") == []
    assert h.runner.ops("discard") == [bot_id]


def test_clock_jumps_forward_hours(h: Harness) -> None:
    far = T0 + 3 * 3600 * S
    missed = h.add(T0 + 3600 * S)  # 2 h late after the jump
    late = h.add(far - 100 * S)  # 100 s late
    soon = h.add(far + 5 * S)  # inside the lead: staged, not joined
    later = h.add(far + 3600 * S)  # untouched
    assert h.at(T0) == T0 + 3600 * S - LEAD
    nxt = h.settle(far)
    assert h.state(missed) == "fatal_error"
    assert "missed join_at" in h.events(missed)[-1]["detail"]
    assert h.state(late) == "joining"
    assert re.search(r"\b100(\.0+)?s late\b", h.events(late)[-1]["detail"])
    assert h.state(soon) == "staged"
    assert h.state(later) == "scheduled"
    assert nxt == far + 5 * S
    assert missed not in h.runner.ops("join")


def test_staged_bot_within_grace_after_a_forward_jump_joins_late(h: Harness) -> None:
    join = T0 + 60 * S
    bot_id = h.add(join)
    h.at(join - LEAD)
    h.settle(join + 30 * S)
    assert h.state(bot_id) == "joining"
    assert re.search(r"\b30(\.0+)?s late\b", h.events(bot_id)[-1]["detail"])


def test_clock_steps_backward_nothing_joins_early(h: Harness) -> None:
    join = T0 + 3600 * S
    staged = h.add(join)
    scheduled = h.add(join + 3600 * S)
    assert h.at(join - LEAD) == join
    # an NTP step back by two hours
    assert h.at(join - 2 * 3600 * S) == join
    assert h.state(staged) == "staged"
    assert h.state(scheduled) == "scheduled"
    assert h.runner.ops("join") == []
    assert h.at(join - 1) == join
    assert h.state(staged) == "staged"
    # the wall clock catches up: it joins at its wall-clock join_at, on time
    assert h.at(join) == join + 3600 * S - LEAD
    assert h.state(staged) == "joining"
    assert h.events(staged)[-1]["detail"] is None


def test_zero_lead_stages_and_joins_at_join_at(tmp_path: Path) -> None:
    h = Harness(tmp_path, **{"scheduler.stage_lead_seconds": 0})
    join = T0 + 30 * S
    bot_id = h.add(join)
    assert h.at(T0) == join
    assert h.settle(join) is None
    assert h.state(bot_id) == "joining"
    assert h.events(bot_id)[-1]["detail"] is None  # on time, not "late"


# -- runner failures --------------------------------------------------------------------


def test_runner_raising_in_stage_is_fatal_with_detail(h: Harness) -> None:
    h.runner.fail["stage"] = "cannot allocate a browser"
    join = T0 + 3600 * S
    bot_id = h.add(join)
    assert h.at(join - LEAD) is None
    assert h.state(bot_id) == "fatal_error"
    assert [e["state"] for e in h.events(bot_id)] == ["scheduled", "staged", "fatal_error"]
    assert "cannot allocate a browser" in h.events(bot_id)[-1]["detail"]
    h.at(join)
    assert h.runner.ops("join") == []


def test_runner_raising_in_join_is_fatal_with_detail(h: Harness) -> None:
    h.runner.fail["join"] = "pipe closed"
    join = T0 + 30 * S
    bot_id = h.add(join)
    h.at(join - LEAD)
    h.at(join)
    assert h.state(bot_id) == "fatal_error"
    assert "pipe closed" in h.events(bot_id)[-1]["detail"]


def test_failed_join_releases_the_runner(h: Harness) -> None:
    # Runner.discard: "The bot failed or was dropped by the scheduler: release whatever it
    # holds". A staged runner whose join fails is a failed bot: its process/slot must not leak.
    h.runner.fail["join"] = "pipe closed"
    join = T0 + 30 * S
    bot_id = h.add(join)
    h.at(join - LEAD)
    h.at(join)
    assert h.state(bot_id) == "fatal_error"
    assert h.runner.ops("discard") == [bot_id]


def test_failed_ad_hoc_join_releases_the_runner(h: Harness) -> None:
    h.runner.fail["join"] = "pipe closed"
    bot_id = h.add(None)
    h.at(T0)
    assert h.state(bot_id) == "fatal_error"
    assert h.runner.ops("stage") == [bot_id]
    assert h.runner.ops("discard") == [bot_id]


def test_one_failing_bot_does_not_stop_the_others(h: Harness) -> None:
    join = T0 + 30 * S
    ids = h.add_many(join, 3)
    original_stage = h.runner.stage

    def fail_second(bot: dict[str, Any]) -> None:
        original_stage(bot)
        if bot["id"] == ids[1]:
            raise RunnerError("boom")

    h.runner.stage = fail_second  # type: ignore[method-assign]
    h.at(join - LEAD)
    h.at(join)
    assert [h.state(i) for i in ids] == ["joining", "fatal_error", "joining"]


# -- runner reports ---------------------------------------------------------------------


def joined(h: Harness) -> str:
    join = T0 + 30 * S
    bot_id = h.add(join)
    h.at(join - LEAD)
    h.at(join)
    assert h.state(bot_id) == "joining"
    return bot_id


def test_report_applies_legal_transitions(h: Harness) -> None:
    bot_id = joined(h)
    h.clock.t += 2 * S
    h.sched.report(bot_id, "waiting_room", "in the lobby")
    h.sched.report(bot_id, "joined_recording", None)
    h.sched.report(bot_id, "joined_not_recording", "paused")
    h.sched.report(bot_id, "leaving", None)
    h.sched.report(bot_id, "post_processing", "uploading")
    h.sched.report(bot_id, "ended", None)
    assert [e["state"] for e in h.events(bot_id)] == [
        "scheduled",
        "staged",
        "joining",
        "waiting_room",
        "joined_recording",
        "joined_not_recording",
        "leaving",
        "post_processing",
        "ended",
    ]
    assert h.events(bot_id)[3] == {"state": "waiting_room", "at": format_instant(h.clock.t), "detail": "in the lobby"}
    assert h.events(bot_id)[-1]["detail"] is None


@pytest.mark.parametrize("bad", ["staged", "scheduled", "ready", "joining", "bogus_state"])
def test_report_ignores_illegal_transitions(h: Harness, bad: str) -> None:
    bot_id = joined(h)
    before = h.store.get(bot_id)
    h.sched.report(bot_id, bad, "nonsense")
    assert h.store.get(bot_id) == before


def test_report_after_terminal_is_ignored(h: Harness) -> None:
    bot_id = joined(h)
    h.sched.report(bot_id, "fatal_error", "crashed")
    before = h.store.get(bot_id)
    h.sched.report(bot_id, "ended", None)
    h.sched.report(bot_id, "joined_recording", None)
    assert h.store.get(bot_id) == before
    assert before["state"] == "fatal_error"


def test_report_for_unknown_bot_is_ignored(h: Harness) -> None:
    h.sched.report("bot_AAAAAAAAAAAAAAAA", "ended", None)
    assert h.store.events() == []


# -- recovery ---------------------------------------------------------------------------


def walk(h: Harness, bot_id: str, path: list[str], at: int) -> None:
    current = h.state(bot_id)
    for new in path:
        assert h.store.transition(bot_id, current, new, at)
        current = new


def test_recover_resumes_staged_and_in_meeting_bots(h: Harness) -> None:
    scheduled = h.add(T0 + 3600 * S)
    ready = h.add(None)
    staged = h.add(T0 + 1800 * S)
    walk(h, staged, ["staged"], T0 + 1 * S)
    in_call = h.add(T0 + 1800 * S)
    walk(h, in_call, ["staged", "joining", "joined_recording"], T0 + 2 * S)
    leaving = h.add(T0 + 1800 * S)
    walk(h, leaving, ["staged", "joining", "leaving"], T0 + 3 * S)
    post = h.add(T0 + 1800 * S)
    walk(h, post, ["staged", "joining", "post_processing"], T0 + 4 * S)
    ended = h.add(T0 + 1800 * S)
    walk(h, ended, ["staged", "joining", "ended"], T0 + 5 * S)

    h.sched.recover()
    resumed = {call[1]: call for call in h.runner.calls if call[0] == "resume"}
    assert set(resumed) == {staged, in_call, leaving, post}
    assert resumed[staged] == ("resume", staged, "staged", T0 + 1 * S)
    assert resumed[in_call] == ("resume", in_call, "joined_recording", T0 + 2 * S)
    assert resumed[post][3] == T0 + 4 * S
    assert h.state(scheduled) == "scheduled" and h.state(ready) == "ready"
    assert [c for c in h.runner.calls if c[0] != "resume"] == []


def test_recover_failure_is_fatal_with_a_reason(h: Harness) -> None:
    bot_id = h.add(T0 + 1800 * S)
    walk(h, bot_id, ["staged", "joining", "joined_recording"], T0)
    h.runner.fail["resume"] = "runner process is gone"
    h.sched.recover()
    assert h.state(bot_id) == "fatal_error"
    assert "runner process is gone" in h.events(bot_id)[-1]["detail"]


# -- the runner cap ---------------------------------------------------------------------


def test_runner_cap_keeps_extra_bots_scheduled_until_a_slot_frees(tmp_path: Path) -> None:
    h = Harness(tmp_path, cap=2, **{"runner.max_concurrent": 2})
    join = T0 + 5 * S
    a, b, c = h.add_many(join, 3)
    nxt = h.at(T0)
    assert sorted(h.state(x) for x in (a, b, c)) == ["scheduled", "staged", "staged"]
    waiting = next(x for x in (a, b, c) if h.state(x) == "scheduled")
    assert nxt == join  # the staged ones' join; a full runner pokes when a slot frees
    notes = [e for e in h.events(waiting) if e["detail"] and "slot" in e["detail"]]
    assert len(notes) == 1
    h.at(T0 + 1 * S)
    assert len([e for e in h.events(waiting) if e["detail"] and "slot" in e["detail"]]) == 1  # said once
    h.at(join)
    first = next(x for x in (a, b, c) if h.state(x) == "joining")
    h.clock.t = join + 1 * S
    h.runner.active.discard(first)  # the runner finished: its slot is free
    h.sched.report(first, "ended", None)
    due = h.sched.next_due_us()
    assert due is not None and due <= h.clock.t  # the waiting bot is due again at once
    h.settle(join + 1 * S)
    assert h.state(waiting) == "joining"


# -- punctuality guard ------------------------------------------------------------------


def test_staging_waits_for_a_join_due_within_the_guard(h: Harness) -> None:
    """A stage (a commit and a process start) must not run just before a join."""
    joiner = h.add(T0 + LEAD + 1 * S)
    h.at(T0 + 1 * S)  # staged now, joins at T0 + LEAD + 1 s
    late_stage_join = T0 + 2 * LEAD + 1 * S - 2_000  # its stage time is 2 ms before joiner's join
    other = h.add(late_stage_join)
    assert h.state(joiner) == "staged"
    stage_time = late_stage_join - LEAD
    h.at(stage_time)
    assert h.state(other) == "scheduled"  # held back: a join is due in 2 ms
    h.at(T0 + LEAD + 1 * S)
    assert h.state(joiner) == "joining" and h.state(other) == "staged"


def test_staging_is_not_starved_by_a_stream_of_joins(h: Harness) -> None:
    """Held-back staging goes ahead anyway once it is more than the defer limit late."""
    x = T0 + 100 * S
    joiner = h.add(x + 2_000)
    h.at(x + 2_000 - LEAD)
    assert h.state(joiner) == "staged"
    other = h.add(x - 600_000 + LEAD, now=x - 1)  # its stage time was 600 ms ago
    h.clock.t = x  # a join is due in 2 ms, but staging is overdue
    h.sched.tick()
    assert h.state(other) == "staged"
    assert h.state(joiner) == "staged"  # and nothing joined early


def test_wal_checkpoints_are_the_schedulers_not_sqlites(h: Harness) -> None:
    """SQLite's own checkpoint would run inside a commit, maybe right before a join; the
    scheduler runs it in a worker thread once enough commits piled up."""
    assert h.store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    assert not h.sched.checkpoint_due()
    for i in range(200):
        h.add(T0 + 3600 * S + i)
    assert h.sched.checkpoint_due()
    wal_before = h.store.wal_bytes()
    h.store.checkpoint()
    h.store.commits_since_checkpoint = 0
    assert not h.sched.checkpoint_due()
    h.add(T0 + 7200 * S)  # the WAL is reused from its start after a full checkpoint
    assert h.store.wal_bytes() <= wal_before
