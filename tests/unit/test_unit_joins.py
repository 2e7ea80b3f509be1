"""The join path (issue 12): joins written at their instant by the join process (or its
thread fallback), a whole instant in one pass; ``disarm`` and the fire exclusive; a joiner
killed holding armed joins loses none and repeats none. Real pipes, real process and
thread; the scheduler's side of arming is driven with a fake clock.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from botsched.core import states
from botsched.daemon.runners import joiner
from botsched.daemon.runners.joins import Fired, Joins, open_journal, reset_journal
from botsched.daemon.scheduler import ARM_LEAD_US, JOIN_GUARD_US, JOIN_SETTLE_US, Scheduler, SystemClock
from tests.support.fakes import RecordingRunner
from tests.unit.test_unit_scheduler import LEAD, T0, Harness, S


def _now_us() -> int:
    return time.time_ns() // 1000


def _pipe() -> tuple[int, int]:
    read, write = os.pipe()
    os.set_blocking(write, False)
    os.set_blocking(read, False)
    return read, write


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 100)
    except BlockingIOError:
        return b""


@pytest.fixture(params=["process", "thread"])
def joins(request: pytest.FixtureRequest) -> Iterator[Joins]:
    timer = Joins(lambda: None, grace_us=lambda: 5_000_000, thread=request.param == "thread")
    timer.start()
    assert timer.mode == request.param
    yield timer
    timer.stop()


def _fired(timer: Joins, count: int, within_s: float = 5.0) -> list[Fired]:
    """Poll (no loop here) until ``count`` reports are in."""
    got: list[Fired] = []
    deadline = time.monotonic() + within_s
    while len(got) < count and time.monotonic() < deadline:
        got += timer.take_fired()
        time.sleep(0.005)
    return got


def test_a_whole_instant_is_written_at_once_on_time(joins: Joins) -> None:
    pipes = [_pipe() for _ in range(20)]
    due = _now_us() + 80_000
    try:
        joins.arm(due, {f"b{i}": write for i, (_, write) in enumerate(pipes)})
        assert joins.armed("b3") and joins.armed_times() == {due}
        time.sleep(0.03)
        assert all(_read(read) == b"" for read, _ in pipes), "written before its instant"
        results = _fired(joins, 20)
        assert all(_read(read) == b"join\n" for read, _ in pipes)
        assert sorted(f.bot_id for f in results) == sorted(f"b{i}" for i in range(20))
        assert all(f.error is None and f.due_us == due and f.sent_us >= due for f in results)
        assert max(f.sent_us for f in results) - due < 50_000  # loose: the machine is shared
        assert not joins.armed("b3") and joins.take_fired() == []
    finally:
        for read, write in pipes:
            os.close(read)
            os.close(write)


def test_disarm_before_the_instant_means_never_written(joins: Joins) -> None:
    (r1, w1), (r2, w2) = _pipe(), _pipe()
    try:
        due = _now_us() + 60_000
        joins.arm(due, {"a": w1, "b": w2})
        assert joins.disarm("a") is True
        assert joins.disarm("a") is False
        assert [f.bot_id for f in _fired(joins, 1)] == ["b"]
        assert _read(r1) == b"" and _read(r2) == b"join\n"
        assert joins.disarm("b") is False  # sent: too late to take back
    finally:
        for fd in (r1, w1, r2, w2):
            os.close(fd)


def test_a_closed_runner_stdin_is_an_error_not_a_crash_and_a_missed_instant_is_not_sent() -> None:
    timer = Joins(lambda: None, grace_us=lambda: 1_000)
    read, write = _pipe()
    os.close(read)
    r2, w2 = _pipe()
    try:
        timer.arm(_now_us() + 20_000, {"gone": write})
        [result] = _fired(timer, 1)
        assert result.bot_id == "gone" and result.error  # EPIPE, named
        timer.arm(_now_us() - 10_000, {"late": w2})  # 10 ms past a 1 ms grace
        [late] = _fired(timer, 1)
        assert late.error == "missed" and _read(r2) == b""
        timer.send_until(time.monotonic() - 1)  # a cluster agent whose leases lapsed
        timer.arm(_now_us() + 20_000, {"lapsed": w2})
        [lapsed] = _fired(timer, 1)
        assert lapsed.error == "missed" and _read(r2) == b""
    finally:
        timer.stop()
        for fd in (write, r2, w2):
            os.close(fd)


def test_a_killed_joiner_loses_no_join_and_repeats_none(tmp_path: Path) -> None:
    """Killed with two instants armed, one already fired: the fired one is not sent again,
    the other is sent once by the fresh joiner; one whose instant is in the journal (the dead
    joiner may have written it) counts as sent and is not written again."""
    timer = Joins(lambda: None, grace_us=lambda: 5_000_000)
    journal, before = open_journal(tmp_path / "joins.fired")
    assert before == set()
    reset_journal(journal)
    timer.set_journal(journal)
    (r1, w1), (r2, w2), (r3, w3) = _pipe(), _pipe(), _pipe()
    try:
        first = _now_us() + 30_000
        timer.arm(first, {"first": w1})
        assert [f.bot_id for f in _fired(timer, 1)] == ["first"]
        second = _now_us() + 400_000
        timer.arm(second, {"second": w2})
        reached = _now_us() + 300_000
        timer.arm(reached, {"reached": w3})
        os.pwrite(journal, b"%d\n" % reached, os.fstat(journal).st_size)  # as if it reached it, then died
        old = timer.pid
        assert old is not None
        os.kill(old, signal.SIGKILL)
        time.sleep(0.05)
        fired = _fired(timer, 2)
        assert sorted((f.bot_id, f.error) for f in fired) == [("reached", None), ("second", None)]
        assert timer.pid not in (None, old) and timer.mode == "process"
        assert _read(r1) == b"join\n" and _read(r1) == b""  # once
        assert _read(r2) == b"join\n" and _read(r3) == b""  # sent by the fresh one; the reached one never
    finally:
        timer.stop()
        for fd in (r1, w1, r2, w2, r3, w3, journal):
            os.close(fd)


def test_a_joiner_that_keeps_dying_is_replaced_by_the_thread() -> None:
    timer = Joins(lambda: None, grace_us=lambda: 5_000_000)
    read, write = _pipe()
    try:
        timer.start()
        for _ in range(3):
            pid = timer.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
            timer.take_fired()  # notices
        assert timer.mode == "thread"
        timer.arm(_now_us() + 20_000, {"a": write})
        assert [f.bot_id for f in _fired(timer, 1)] == ["a"] and _read(read) == b"join\n"
    finally:
        timer.stop()
        os.close(read)
        os.close(write)


class ArmingRunner(RecordingRunner):
    """Arms like the command runner, without a joiner: the test says when joins were sent."""

    arms_joins = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending: dict[str, int] = {}

    def arm_joins(self, due_us: int, bot_ids: list[str]) -> list[str]:
        self.calls.append(("arm", due_us, tuple(bot_ids)))
        self.pending.update(dict.fromkeys(bot_ids, due_us))
        return bot_ids

    def armed(self) -> dict[str, int]:
        return dict(self.pending)

    def send(self, sent_us: int) -> None:
        fired = [(bot_id, due, sent_us, None) for bot_id, due in self.pending.items()]
        self.pending.clear()
        assert self.on_joins_sent is not None
        self.on_joins_sent(fired)


def _arming(tmp_path: Path) -> Harness:
    h = Harness(tmp_path)
    h.runner = ArmingRunner(h.config)
    h.sched = Scheduler(h.store, h.runner, h.config, h.clock)
    return h


def _one_armed(tmp_path: Path) -> tuple[Harness, int, str]:
    """A harness with one bot staged and its join (at ``first``) armed: (h, first, bot)."""
    h = _arming(tmp_path)
    first = T0 + 60 * S
    [early] = h.add_many(first, 1)
    h.at(first - LEAD)
    h.at(first - ARM_LEAD_US)
    assert h.runner.armed() == {early: first}
    return h, first, early


def test_the_scheduler_arms_staged_joins_ahead_and_never_wakes_at_their_instant(tmp_path: Path) -> None:
    h = _arming(tmp_path)
    join = T0 + 60 * S
    ids = h.add_many(join, 3)
    assert h.at(join - LEAD) == join - ARM_LEAD_US  # staged; the next thing is arming
    assert sorted(h.runner.ops("stage")) == sorted(ids) and not h.runner.ops("arm")
    nxt = h.at(join - ARM_LEAD_US)
    assert [(c[0], c[1], sorted(c[2])) for c in h.runner.calls if c[0] == "arm"] == [("arm", join, sorted(ids))]
    assert nxt is None  # the joiner has the instant: the loop does not wake (or spin) for it
    h.clock.t = join + 150
    h.runner.send(join + 150)
    assert {h.store.get(i)["state"] for i in ids} == {states.JOINING}
    assert not h.runner.ops("join")  # never through the loop's join as well
    assert h.at(join + 1000) is None


def test_staging_never_starts_a_runner_in_the_guard_before_an_armed_join(tmp_path: Path) -> None:
    h, first, early = _one_armed(tmp_path)
    later = h.add_many(first + LEAD - JOIN_GUARD_US // 2, 20)  # their staging falls inside the guard
    nxt = h.at(first - JOIN_GUARD_US // 2)
    assert not set(h.runner.ops("stage")) & set(later)  # held back...
    assert nxt is not None and nxt > first  # ...until the join is out
    h.runner.send(first)
    h.at(first + 10)
    assert set(later) <= set(h.runner.ops("stage"))
    assert h.store.get(early)["state"] == states.JOINING


def test_a_restart_rearms_a_staged_bot_whose_instant_is_ahead(tmp_path: Path) -> None:
    h = _arming(tmp_path)
    join = T0 + 60 * S
    [bot] = h.add_many(join, 1)
    h.at(join - LEAD)
    h.store.close()
    h2 = _arming(tmp_path)  # a new daemon on the same store
    h2.clock.t = join - 5 * S
    h2.sched.recover()
    h2.at(join - ARM_LEAD_US)
    assert h2.runner.armed() == {bot: join}


def test_the_simulate_runner_sends_armed_joins_from_the_join_process_and_then_simulates() -> None:
    from botsched.core import config as config_mod
    from botsched.core.config import Config
    from botsched.daemon.runners.simulate import SimulateRunner

    reports: list[tuple[str, str]] = []
    sent: list[tuple[str, int, int, str | None]] = []
    config = Config({**config_mod.defaults(), "runner.simulate_join_seconds": 0.05})

    async def main() -> None:
        runner = SimulateRunner(config, lambda bot_id, state, detail: reports.append((bot_id, state)))
        runner.on_joins_sent = sent.extend
        due = _now_us() + 50_000
        assert runner.arm_joins(due, ["a", "b"]) == ["a", "b"] and runner.armed() == {"a": due, "b": due}
        runner.discard("b")  # disarmed: never sent
        await asyncio.sleep(0.3)
        assert [(s[0], s[1], s[3]) for s in sent] == [("a", due, None)] and sent[0][2] >= due
        assert runner.armed() == {}
        assert reports == [("a", states.JOINED_RECORDING)]
        runner.join("a")  # a late loop-side join of a sent one is harmless (simulated)
        await runner.close()

    import asyncio

    asyncio.run(main())


def test_a_burst_is_staged_early_enough_for_its_last_runner(tmp_path: Path) -> None:
    h = _arming(tmp_path)
    h.runner.stage_cost_us = 15_000  # as the command runner: a process per bot
    join = T0 + 60 * S
    ids = h.add_many(join, 100)
    first = h.at(T0)
    assert first == join - LEAD - 100 * 15_000  # 1.5 s before the stage lead
    h.at(first)
    assert len(h.runner.ops("stage")) == 100, "the whole burst starts staging at once"
    assert {h.store.get(i)["state"] for i in ids} == {states.STAGED}


def test_runner_reports_read_together_are_one_commit_judged_in_order(tmp_path: Path) -> None:
    h = _arming(tmp_path)
    join = T0 + 60 * S
    a, b, c = h.add_many(join, 3)
    h.at(join - LEAD)
    h.at(join - ARM_LEAD_US)
    h.clock.t = join + 100
    h.runner.send(join + 100)
    commits: list[int] = []
    write = h.sched._write

    def counting(changes: Any, now: int) -> list[str]:
        commits.append(len(changes))
        return write(changes, now)

    h.sched._write = counting  # type: ignore[method-assign]
    h.sched.report_many([(a, states.JOINED_RECORDING, None), (b, states.JOINED_RECORDING, None),
                         (a, states.LEAVING, "done"), (c, states.ENDED, None),
                         ("bot_unknown0000000", states.ENDED, None)])
    assert commits == [4]  # c: joining -> ended is legal; the unknown bot is ignored
    assert [h.store.get(i)["state"] for i in (a, b, c)] == [states.LEAVING, states.JOINED_RECORDING, states.ENDED]


def _stat(pid: int) -> list[bytes] | None:
    """State, ppid, ... of a live (not zombie) process; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == b"Z" else fields


def _children(pid: int) -> list[int]:
    return [int(entry) for entry in os.listdir("/proc")
            if entry.isdigit() and (fields := _stat(int(entry))) is not None and int(fields[1]) == pid]


def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_join_process_keeps_one_idle_class_warmer_pinned_on_each_cpu_and_takes_them_with_it() -> None:
    timer = Joins(lambda: None, grace_us=lambda: 5_000_000)
    cpus = os.sched_getaffinity(0)
    try:
        timer.start()
        joiner = timer.pid
        assert joiner is not None
        _until(lambda: len(_children(joiner)) == len(cpus))
        warmers = _children(joiner)
        _until(lambda: all(os.sched_getscheduler(pid) == os.SCHED_IDLE for pid in warmers))
        assert sorted(cpu for pid in warmers for cpu in os.sched_getaffinity(pid)) == sorted(cpus)
        read, write = _pipe()
        timer.arm(_now_us() + 20_000, {"a": write})  # an instant with the warmers spinning: still written
        assert [f.bot_id for f in _fired(timer, 1)] == ["a"] and _read(read) == b"join\n"
        os.close(read)
        os.close(write)
        os.kill(joiner, signal.SIGKILL)
        _until(lambda: all(_stat(pid) is None for pid in warmers))  # PR_SET_PDEATHSIG
    finally:
        timer.stop()


def test_no_warmers_with_botsched_warm_cpus_0(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOTSCHED_WARM_CPUS", "0")
    timer = Joins(lambda: None, grace_us=lambda: 5_000_000)
    try:
        timer.start()
        joiner = timer.pid
        assert joiner is not None
        read, write = _pipe()
        timer.arm(_now_us() + 20_000, {"a": write})
        assert [f.bot_id for f in _fired(timer, 1)] == ["a"] and _read(read) == b"join\n"
        os.close(read)
        os.close(write)
        assert _children(joiner) == []
    finally:
        timer.stop()


def _raw_joiner() -> tuple[socket.socket, threading.Thread]:
    """The joiner's own loop on a socketpair (its protocol, no Joins in front)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    thread = threading.Thread(target=joiner.serve, args=(theirs,), daemon=True)
    thread.start()
    return ours, thread


def test_the_joiner_reports_an_instant_after_the_runners_had_the_cpus_unless_asked() -> None:
    """The report (the daemon's commit) waits ``REPORT_AFTER_US`` past the instant, so it
    does not compete with the runners just woken; a ``P`` sends it at once, before ``p``."""
    ours, thread = _raw_joiner()
    (r1, w1), (r2, w2) = _pipe(), _pipe()
    try:
        first = _now_us() + 60_000
        socket.send_fds(ours, [b"A %d 5000000 a" % first], [w1])
        message = ours.recv(4096)
        got_us = _now_us()
        assert message.split()[:2] == [b"F", b"%d" % first] and message.endswith(b" a")
        assert got_us - first >= joiner.REPORT_AFTER_US - 1_000  # held back...
        assert _read(r1) == b"join\n"  # ...while the join itself went out on time
        second = _now_us() + 40_000
        socket.send_fds(ours, [b"A %d 5000000 b" % second], [w2])
        while _now_us() < second + 300:
            time.sleep(0.0002)
        asked_us = _now_us()
        ours.send(b"P")
        replies = [ours.recv(4096), ours.recv(4096)]
        assert replies[0].startswith(b"F %d " % second) and replies[1] == b"p"  # the report first
        assert _now_us() - asked_us < joiner.REPORT_AFTER_US  # not held back once asked
    finally:
        ours.close()
        thread.join(timeout=5)
        for fd in (r1, w1, r2, w2):
            os.close(fd)
    assert not thread.is_alive()


def test_staging_due_at_an_armed_join_is_planned_after_its_quiet_window(tmp_path: Path) -> None:
    """A spread's next bot is due to stage exactly at an earlier bot's join: the loop plans
    it for ``JOIN_SETTLE_US`` after that instant, so it does not even wake at the instant."""
    h, first, early = _one_armed(tmp_path)
    [later] = h.add_many(first + LEAD, 1)  # its stage time is `first` itself
    assert h.sched.next_due_us() == first + JOIN_SETTLE_US
    h.runner.send(first)
    assert h.at(first + JOIN_SETTLE_US) is not None
    assert h.state(later) == states.STAGED and h.state(early) == states.JOINING


def test_the_loop_serves_io_while_it_waits_out_a_held_stage(tmp_path: Path) -> None:
    """Only a join the loop sends itself is worth a spin; waiting for anything else (a held
    stage re-checked every ms) must leave the loop free, or the join process's reports the
    hold waits for are never read."""
    h = Harness(tmp_path)

    async def main() -> list[str]:
        order: list[str] = []
        h.sched._wakeup = asyncio.Event()  # run() makes it; this calls _sleep_until alone
        asyncio.get_running_loop().call_soon(order.append, "io")
        await h.sched._sleep_until(h.sched.clock.now_us() + 1_500)  # within SPIN_S, not a join
        order.append("tick")
        return order

    h.sched.clock = SystemClock()
    assert asyncio.run(main()) == ["io", "tick"]
