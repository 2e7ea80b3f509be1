"""Wall-clock changes (issue 5, SPEC §7): NTP steps forward and backward by hours, and a
suspend/resume gap, driven through ``Scheduler.tick()`` with an injected clock; then the
real asyncio loop (``Scheduler.run`` / ``_sleep_until``) with a clock that jumps, to show it
naps in bounded chunks and so notices a step within ``MAX_NAP_S``.

The rules: a bot joins at its wall-clock ``join_at`` -- never early, even after a backward
step; a join the gap swallowed happens at once with a detail saying how late, if it is
within ``misfire_grace_seconds``, and is ``fatal_error`` "missed" beyond it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from botsched.core import config as config_mod
from botsched.core.config import Config
from botsched.core.timeparse import format_instant, to_us
from botsched.daemon import scheduler as scheduler_mod
from botsched.daemon.scheduler import Scheduler
from botsched.daemon.store import NewBot, Store
from tests.support.fakes import FakeClock, RecordingRunner
from tests.support.tmpfs import fast_dir

S = 1_000_000
HOUR = 3600 * S
LEAD = 10 * S
GRACE = 300 * S
T0 = to_us(datetime(2026, 6, 1, 9, 0, 0, tzinfo=UTC))
LATE_RE = re.compile(r"joined (\d+(?:\.\d+)?)s late")


@pytest.fixture
def db_dir(tmp_path: Path) -> Iterator[Path]:
    """On tmpfs when possible: the store fsyncs, and the machine's disk is shared."""
    with fast_dir(tmp_path, "botsched-rel-") as path:
        yield path


class Rig:
    def __init__(self, directory: Path) -> None:
        self.clock = FakeClock(T0)
        self.store = Store(directory / "db")
        values = {**config_mod.defaults(), "scheduler.stage_lead_seconds": LEAD // S,
                  "scheduler.misfire_grace_seconds": GRACE // S}
        self.config = Config(values)
        self.runner = RecordingRunner(self.config)
        self.sched = Scheduler(self.store, self.runner, self.config, self.clock)

    def add(self, join_us: int) -> str:
        [bot_id] = self.store.insert([NewBot("https://meet.example.com/x", "bot", format_instant(join_us), join_us,
                                             {}, None)], self.clock.t)
        return bot_id

    def settle(self, t: int) -> int | None:
        """What ``run()`` does at wall time ``t``: tick, and again while something is due now."""
        self.clock.t = t
        for _ in range(20):
            due = self.sched.tick()
            if due is None or due > self.clock.t:
                return due
        raise AssertionError("the scheduler keeps saying something is due now")

    def state(self, bot_id: str) -> str:
        return self.store.get(bot_id)["state"]

    def last(self, bot_id: str) -> dict[str, Any]:
        return self.store.get(bot_id)["events"][-1]


@pytest.fixture
def rig(db_dir: Path) -> Iterator[Rig]:
    r = Rig(db_dir)
    yield r
    r.store.close()


def _late_s(event: dict[str, Any]) -> float:
    match = LATE_RE.search(event["detail"] or "")
    assert match, f"the join does not say how late: {event}"
    return float(match.group(1))


# -- NTP step forward by hours ---------------------------------------------------------------


def test_step_forward_three_hours(rig: Rig) -> None:
    staged = rig.add(T0 + 5 * S)  # staged at T0, would join at T0+5s
    soon = rig.add(T0 + 30 * S)  # stage time T0+20s, swallowed by the step
    within = rig.add(T0 + 3 * HOUR - 120 * S)  # 2 min before the new now: inside the grace
    beyond = rig.add(T0 + 1 * HOUR)  # 2 h before the new now: missed
    edge = rig.add(T0 + 3 * HOUR - GRACE)  # exactly at the grace: still joins
    future = rig.add(T0 + 3 * HOUR + 60 * S)  # after the new now: untouched

    assert rig.settle(T0) == T0 + 5 * S
    assert rig.state(staged) == "staged"
    rig.settle(T0 + 3 * HOUR)  # the clock jumps three hours ahead

    for bot_id in (staged, soon, beyond):
        assert rig.state(bot_id) == "fatal_error", (bot_id, rig.store.get(bot_id)["events"])
        assert "missed join_at" in rig.last(bot_id)["detail"], rig.last(bot_id)
        assert bot_id not in rig.runner.ops("join")
    assert staged in rig.runner.ops("discard"), "the staged bot's runner must be released"

    for bot_id, late_s in ((within, 120.0), (edge, GRACE / S)):
        assert rig.state(bot_id) == "joining", rig.store.get(bot_id)["events"]
        assert rig.runner.ops("join").count(bot_id) == 1
        assert _late_s(rig.last(bot_id)) == pytest.approx(late_s, abs=0.01)

    assert rig.state(future) == "scheduled"
    assert rig.sched.next_due_us() == T0 + 3 * HOUR + 60 * S - LEAD
    rig.settle(T0 + 3 * HOUR + 50 * S)
    assert rig.state(future) == "staged"
    rig.settle(T0 + 3 * HOUR + 60 * S)
    assert rig.state(future) == "joining"
    assert rig.last(future) == {"state": "joining", "at": format_instant(T0 + 3 * HOUR + 60 * S), "detail": None}


# -- NTP step backward by hours --------------------------------------------------------------


def test_step_backward_three_hours_nothing_joins_early(rig: Rig) -> None:
    staged = rig.add(T0 + 5 * S)
    scheduled = rig.add(T0 + 60 * S)
    assert rig.settle(T0) == T0 + 5 * S
    assert rig.state(staged) == "staged"

    back = T0 - 3 * HOUR
    assert rig.settle(back) == T0 + 5 * S, "the next due moment is still the wall-clock join_at"
    # a bot created while the clock is behind, joining at a wall time before the old T0
    early = rig.add(back + 30 * S)
    for t in (back + 1, back + 15 * S, back + 20 * S, back + 30 * S - 1, back + 30 * S, T0 - HOUR, T0 - 1,
              T0 + 5 * S - 1):
        due = rig.settle(t)
        assert rig.state(staged) == "staged" and rig.state(scheduled) == "scheduled"
        assert staged not in rig.runner.ops("join"), f"joined {(T0 + 5 * S - t) / S:.3f}s early"
        if t < back + 20 * S:
            assert rig.state(early) == "scheduled" and due == back + 20 * S
        elif t < back + 30 * S:
            assert rig.state(early) == "staged" and due == back + 30 * S
        else:
            assert rig.state(early) == "joining"
    assert rig.runner.ops("join") == [early]  # it joined at its own wall-clock time...
    assert [e["at"] for e in rig.store.get(early)["events"] if e["state"] == "joining"] == \
        [format_instant(back + 30 * S)], rig.store.get(early)["events"]

    rig.settle(T0 + 5 * S)  # ...and the others at theirs
    assert rig.state(staged) == "joining"
    assert rig.last(staged) == {"state": "joining", "at": format_instant(T0 + 5 * S), "detail": None}
    rig.settle(T0 + 50 * S - 1)
    assert rig.state(scheduled) == "scheduled"
    rig.settle(T0 + 50 * S)
    assert rig.state(scheduled) == "staged"
    rig.settle(T0 + 60 * S)
    assert rig.last(scheduled) == {"state": "joining", "at": format_instant(T0 + 60 * S), "detail": None}
    assert sorted(rig.runner.ops("join")) == sorted([early, staged, scheduled])


def test_step_backward_after_staging_keeps_the_runner_and_joins_on_wall_time(rig: Rig) -> None:
    bot_id = rig.add(T0 + 8 * S)
    rig.settle(T0)
    rig.settle(T0 - 2 * HOUR)
    rig.settle(T0 - HOUR)
    assert rig.runner.ops("stage") == [bot_id], "staged once; never re-staged after the step"
    assert rig.runner.ops("discard") == [] and rig.state(bot_id) == "staged"
    rig.settle(T0 + 8 * S)
    assert rig.runner.ops("join") == [bot_id]


# -- suspend / resume --------------------------------------------------------------------------


def test_suspend_resume_gap_within_grace_joins_at_once_saying_how_late(rig: Rig) -> None:
    staged = rig.add(T0 + 5 * S)
    scheduled = rig.add(T0 + 40 * S)  # its stage time and join both fall inside the gap
    rig.settle(T0)
    rig.settle(T0 + 100 * S)  # the machine slept 100 s
    assert rig.state(staged) == "joining" and _late_s(rig.last(staged)) == pytest.approx(95.0, abs=0.01)
    assert rig.state(scheduled) == "joining" and _late_s(rig.last(scheduled)) == pytest.approx(60.0, abs=0.01)
    assert rig.runner.ops("stage") == [staged, scheduled]
    assert sorted(rig.runner.ops("join")) == sorted([staged, scheduled])


def test_suspend_resume_gap_beyond_grace_is_missed(rig: Rig) -> None:
    staged = rig.add(T0 + 5 * S)
    scheduled = rig.add(T0 + 40 * S)
    later = rig.add(T0 + 20 * 60 * S)  # after the gap
    rig.settle(T0)
    rig.settle(T0 + 10 * 60 * S)  # slept 10 minutes, the grace is 5
    for bot_id in (staged, scheduled):
        assert rig.state(bot_id) == "fatal_error"
        assert "missed join_at" in rig.last(bot_id)["detail"]
    assert rig.runner.ops("join") == []
    assert rig.state(later) == "scheduled"
    rig.settle(T0 + 20 * 60 * S)
    assert rig.state(later) == "joining" and rig.last(later)["detail"] is None


# -- the asyncio loop with a jumping clock -------------------------------------------------------


def _run_loop(rig: Rig, scenario) -> Any:
    async def main() -> Any:
        task = asyncio.create_task(rig.sched.run())
        try:
            return await asyncio.wait_for(scenario(), 30)
        finally:
            rig.sched.stop()
            await asyncio.wait_for(task, 10)

    return asyncio.run(main())


async def _until(predicate, timeout: float) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def test_run_loop_notices_a_forward_step_within_one_nap(rig: Rig) -> None:
    """The loop sleeps towards a join an hour away in naps of at most MAX_NAP_S, re-reading
    the wall clock: after a step to the join time it joins within one nap."""
    bot_id = rig.add(T0 + HOUR)
    rig.store.stage(bot_id, T0 + HOUR, T0)  # staged long ago; only the join is left

    async def scenario() -> float:
        await asyncio.sleep(0.3)  # it is napping now
        assert rig.state(bot_id) == "staged"
        rig.clock.t = T0 + HOUR + 20_000  # NTP step: the join time is (just) past
        return await _until(lambda: rig.state(bot_id) == "joining", scheduler_mod.MAX_NAP_S + 3.0)

    noticed = _run_loop(rig, scenario)
    assert noticed <= scheduler_mod.MAX_NAP_S + 1.0, f"noticed the step after {noticed:.2f}s"
    assert rig.runner.ops("join") == [bot_id]
    from .relhelpers import record_figures

    record_figures("clock", forward_step_noticed_after_s=round(noticed, 3), max_nap_s=scheduler_mod.MAX_NAP_S)


def test_run_loop_does_not_join_early_after_a_backward_step(rig: Rig) -> None:
    bot_id = rig.add(T0 + 5 * S)
    rig.store.stage(bot_id, T0 + 5 * S, T0)

    async def scenario() -> float:
        await asyncio.sleep(0.2)
        rig.clock.t = T0 - HOUR  # step back while it naps towards T0+5s
        await asyncio.sleep(scheduler_mod.MAX_NAP_S * 2 + 0.5)  # two whole naps: nothing may happen
        assert rig.state(bot_id) == "staged" and rig.runner.ops("join") == []
        rig.clock.t = T0 + 5 * S  # wall time reaches join_at
        return await _until(lambda: rig.state(bot_id) == "joining", scheduler_mod.MAX_NAP_S + 3.0)

    _run_loop(rig, scenario)
    assert rig.last(bot_id)["at"] == format_instant(T0 + 5 * S)


class SteppingClock:
    """Reads ``target - 1 ms`` once (the loop decides to spin the last stretch), then, as if
    NTP stepped the clock back an hour, ``target - 1 h`` -- until 3 real seconds passed, when
    it gives ``target`` so that a stuck spin ends and the test cannot hang."""

    def __init__(self, target_us: int) -> None:
        self.target = target_us
        self.reads = 0
        self.stepped_at: float | None = None

    def now_us(self) -> int:
        self.reads += 1
        if self.reads == 1:
            return self.target - 1_000
        if self.stepped_at is None:
            self.stepped_at = time.monotonic()
        if time.monotonic() - self.stepped_at > 3.0:
            return self.target
        return self.target - HOUR


def test_a_backward_step_during_the_final_spin_does_not_freeze_the_loop(rig: Rig) -> None:
    """``_sleep_until`` busy-waits the last ``SPIN_S`` on the wall clock. If the clock steps
    back during that spin, the loop must not keep spinning until wall time catches up (an
    hour here): it would serve no request and make no other join meanwhile. Expected: the
    spin is bounded in real (monotonic) time, then the loop re-plans."""
    clock = SteppingClock(T0 + 10 * S)
    rig.sched.clock = clock

    async def scenario() -> float:
        rig.sched._wakeup = asyncio.Event()
        started = time.monotonic()
        await rig.sched._sleep_until(clock.target)
        return time.monotonic() - started

    blocked = asyncio.run(scenario())
    assert blocked < 0.5, (
        f"Scheduler._sleep_until spun {blocked:.2f}s on the event loop after a backward clock step during its "
        f"final {scheduler_mod.SPIN_S * 1000:.0f} ms spin (the fake clock released it after 3 s; a real 1 h step "
        "would freeze the daemon for an hour)"
    )
