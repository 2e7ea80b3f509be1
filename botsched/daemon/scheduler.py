"""The scheduler: stage bots ``stage_lead`` before ``join_at`` and join them at ``join_at``.

Two layers, so the rules are testable without waiting:

- ``Scheduler.tick()`` is plain synchronous Python: given the clock's *now*, do every due
  transition and return when the next one is due. Tests drive it with a ``FakeClock``.
- ``Scheduler.run()`` is the asyncio loop around it. It wakes exactly when the next bot is
  due (not on a poll): it naps in bounded chunks of at most ``MAX_NAP_S`` re-reading the
  wall clock (so NTP steps and suspend/resume cannot shift a join by more than a chunk),
  wakes ``SPIN_S`` early and spins the last stretch before a join it sends itself, because
  the event loop's timers round up to whole milliseconds (staging and arming take the
  timer's millisecond; joins armed in the join process are sent there). It yields to the
  loop between any two ticks. ``poke()`` re-plans at once when a request makes something
  due sooner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from botsched.core import states
from botsched.core.config import Config
from botsched.core.model import Bot, Due
from botsched.daemon.runners import Runner, RunnerError
from botsched.daemon.store.base import Change, StorageError, Store
from botsched.daemon.waiting import wait_event

log = logging.getLogger("botsched.daemon.scheduler")

MAX_NAP_S = 1.0
SPIN_S = 0.002
#: A join later than this (the daemon was down, or the bot waited for a runner slot)
#: says how late in its event; a normal join is a fraction of a millisecond late.
LATE_NOTE_US = 100_000
#: Staging waits while a join is due this soon...
JOIN_GUARD_US = 5_000
#: ...and until this long after it: the runners just woken need the CPUs (staging forks a
#: shim and commits). The join process reports an instant as late (``REPORT_AFTER_US``), so
#: staging and the report's commit share one tick. Staging that began at the instant itself
#: (a spread's next bot is staged exactly one stage lead before its join) made the idle
#: spread's runner-side p99 ~3 ms; 5 ms later, ~0.2 ms (docs/reliability.md).
JOIN_SETTLE_US = 5_000
#: ...unless staging is already this late.
MAX_STAGE_DEFER_US = 500_000
BATCH = 5_000
#: A runner that arms joins (``Runner.arms_joins``) gets each staged bot's join this long
#: before its join_at: the join process then sends it whatever the loop is doing. Longer
#: rides out a busier loop; shorter makes the window in which a daemon kill, then a
#: restart after join_at, counts an unsent join as sent (docs/reliability.md, issue 12).
ARM_LEAD_US = 1_000_000
#: A join due sooner than this is not armed (the join process could not be told in time): the
#: loop sends it, as for runners that do not arm.
ARM_MARGIN_US = 2_000
#: The loop re-plans at least this often, so a request only wakes it when it makes
#: something due sooner than that.
PLAN_HORIZON_US = 1_000_000
#: Ticks caused by requests (a create due soon pokes the scheduler) are at least this far
#: apart: 64 connections creating bots would otherwise cost the loop a tick each.
POKE_COALESCE_S = 0.01
#: Held-back staging looks again this soon at the earliest (a join being sent right now
#: must not make the loop tick in a busy loop until the join process's report is in).
HOLD_RECHECK_US = 1_000
#: A burst is staged early by ``Runner.stage_cost_us`` per bot, looking this far ahead...
MAX_EARLY_STAGE_US = 60_000_000
#: ...at this many bots at most.
EARLY_STAGE_SCAN = 1_000
#: Staging starts runners in chunks this big, checking for a due join between chunks.
STAGE_CHUNK = 8
#: While the store refuses to record joins already sent (a storage fault), retry this often.
RECORD_RETRY_US = 1_000_000


class Clock(Protocol):
    def now_us(self) -> int:
        """Wall-clock time, microseconds since the epoch."""
        ...


class SystemClock:
    def now_us(self) -> int:
        return time.time_ns() // 1000


def _seconds(us: int) -> str:
    return f"{us / 1_000_000:.3f}".rstrip("0").rstrip(".") + "s"


def _quiet(when: int, join_us: int | None) -> int:
    """``when``, or the end of the join's quiet window it falls in (``JOIN_GUARD_US`` before
    to ``JOIN_SETTLE_US`` after ``join_us``). Arming and staging are moved there before the
    loop sleeps, so it does not even wake at the instant: a spread's next bot is due to stage
    (and, ``ARM_LEAD_US`` ahead, to be armed) exactly at an earlier bot's join, and a loop
    waking there only to hold back took a CPU from that join's runner."""
    if join_us is not None and join_us - JOIN_GUARD_US <= when < join_us + JOIN_SETTLE_US:
        return join_us + JOIN_SETTLE_US
    return when


class Scheduler:
    def __init__(self, store: Store, runner: Runner, config: Config, clock: Clock | None = None) -> None:
        self.store = store
        self.runner = runner
        self.config = config  # the daemon's one Config: a reload updates it in place
        self.clock = clock or SystemClock()
        self._wakeup: asyncio.Event | None = None
        self._target_us: int | None = None
        self._stopping = False
        self._checkpoint_running = False
        #: Bots already told (by an event) that they wait for a runner slot.
        self._waiting: set[str] = set()
        #: Changes the store refused (a storage fault) after their joins were sent, in
        #: order, each with its true time: retried until recorded, never sent again.
        self._unrecorded: list[tuple[list[Change], int]] = []
        self._unrecorded_ids: set[str] = set()
        #: Staged bots (with a runner) whose join is not handed to the join process yet.
        self._to_arm: dict[str, int] = {}
        self._next_arm_us = 0  # the earliest join_at in _to_arm (a lower bound)
        self._last_tick = 0.0
        #: Staging waits until then: a join is due (set when the guard held staging back).
        self._stage_hold_us = 0
        #: The next join the loop sends itself (not armed in the join process): the only
        #: target worth spinning for (``next_due_us`` sets it).
        self._loop_join_us: int | None = None
        runner.on_slot_freed = self.poke
        runner.on_joins_sent = self.joins_sent
        runner.report_many = self.report_many

    # -- the rules ----------------------------------------------------------------

    def next_due_us(self) -> int | None:
        """When the next transition is due: the earliest of staging, joining, ad-hoc start."""
        candidates = []
        when = self._next_time(states.STAGED, exclude_armed=True)
        self._loop_join_us = when
        if when is not None:
            candidates.append(when)
        next_join = self._next_time(states.STAGED)
        if self._to_arm:
            candidates.append(_quiet(self._next_arm_us - ARM_LEAD_US, next_join))
        if self.runner.free_slots() != 0:  # when full, a freed slot pokes us
            staging = []
            when = self._next_stage_us()
            if when is not None:
                staging.append(when)
            when = self._next_time(states.READY)
            if when is not None:
                staging.append(when)
            if staging:
                candidates.append(_quiet(max(min(staging), self._stage_hold_us), next_join))
        return min(candidates) if candidates else None

    def next_join_us(self) -> int | None:
        """When the next join is due (staging can wait; joins cannot)."""
        times = [self._next_time(state) for state in (states.STAGED, states.SCHEDULED, states.READY)]
        known = [t for t in times if t is not None]
        return min(known) if known else None

    def _next_time(self, state: str, exclude_armed: bool = False) -> int | None:
        """``store.next_time``, leaving out bots whose join was sent but not yet recorded
        (they still look due in the store): their record is retried within
        ``RECORD_RETRY_US`` instead of spinning, and they are never joined again. With
        ``exclude_armed``, joins armed in the join process are left out too: it
        sends them and pokes us (the loop must not wake, let alone spin, at their instant)."""
        when = self.store.next_time(state)
        if when is None:
            return None
        armed = self.runner.armed() if exclude_armed and state == states.STAGED else {}
        if not self._unrecorded_ids and not armed:
            return when
        now = self.clock.now_us()
        if when > now and when not in armed.values():
            return when
        if when > now and not self._unrecorded_ids:
            # the earliest is armed: we are poked when it is sent, and look again then
            later = [bot.join_at_us for bot in self.store.due(state, when, BATCH) if bot.id not in armed]
            return min(later, default=None)
        horizon = now + RECORD_RETRY_US
        skip = self._unrecorded_ids.union(armed)
        times = [bot.join_at_us for bot in self.store.due(state, horizon, BATCH) if bot.id not in skip]
        return min(times, default=horizon)

    def tick(self) -> int | None:
        """Do everything due now; return when the next thing is due (``None``: nothing queued).

        Joins come first. Staging (a commit and process starts) is held back while a join
        is due within ``JOIN_GUARD_US`` and until ``JOIN_SETTLE_US`` after it, so it cannot
        make that join late or take a CPU from the runners it wakes — unless staging
        itself is already ``MAX_STAGE_DEFER_US`` overdue (no starvation under a join storm).
        """
        now = self.clock.now_us()
        if self._unrecorded:
            self._flush_records()
        while self._join_due(now) == BATCH:
            pass
        self._arm_due(now)
        if self._may_stage(now):
            self._stage_hold_us = 0
            while self._start_ready(now) == BATCH:
                pass
            while self._stage_due(now) == BATCH:
                pass
            self._arm_due(self.clock.now_us())
        return self.next_due_us()

    def _arm_due(self, now: int) -> None:
        """Hand the joins due within ``ARM_LEAD_US`` to the join process, one call per instant."""
        if not self._to_arm or self._next_arm_us - now > ARM_LEAD_US:
            return
        by_time: dict[int, list[str]] = {}
        for bot_id, join_at in list(self._to_arm.items()):
            if join_at - now > ARM_LEAD_US:
                continue
            del self._to_arm[bot_id]
            if join_at - now > ARM_MARGIN_US:
                by_time.setdefault(join_at, []).append(bot_id)
        self._next_arm_us = min(self._to_arm.values(), default=0)
        for join_at, bot_ids in sorted(by_time.items()):
            self.runner.arm_joins(join_at, bot_ids)

    def _want_armed(self, bot_id: str, join_at_us: int) -> None:
        if not self._to_arm or join_at_us < self._next_arm_us:
            self._next_arm_us = join_at_us
        self._to_arm[bot_id] = join_at_us

    def joins_sent(self, fired: list[tuple[str, int, int, str | None]]) -> None:
        """The join process sent these joins (or could not): staged -> joining (or
        fatal_error) for the whole lot in one commit, each at the instant it was sent."""
        by_time: dict[int, list[Change]] = {}
        for bot_id, due_us, sent_us, error in fired:
            if error == "missed":
                why = self._missed(Due(bot_id, states.STAGED, due_us), sent_us) or "missed its join_at"
                change: Change = (bot_id, states.STAGED, states.FATAL_ERROR, why)
                self.runner.discard(bot_id)
            elif error is not None:
                change = (bot_id, states.STAGED, states.FATAL_ERROR, f"join failed: {error}")
                self.runner.discard(bot_id)
            else:
                late = sent_us - due_us
                detail = f"joined {_seconds(late)} late" if late > LATE_NOTE_US else None
                change = (bot_id, states.STAGED, states.JOINING, detail)
            by_time.setdefault(sent_us, []).append(change)
        for sent_us, changes in by_time.items():
            self._record(changes, sent_us)
        self.poke()

    def _may_stage(self, now: int) -> bool:
        next_join = self._next_time(states.STAGED)
        if next_join is None or next_join - now > JOIN_GUARD_US:
            return True
        self._stage_hold_us = max(next_join + JOIN_SETTLE_US, now + HOLD_RECHECK_US)  # never past: no busy loop
        candidates = [t for t in (self._next_time(states.READY),) if t is not None]
        scheduled = self.store.next_time(states.SCHEDULED)
        if scheduled is not None:
            candidates.append(scheduled - self.config.stage_lead_us)
        return bool(candidates) and now - min(candidates) > MAX_STAGE_DEFER_US

    def _missed(self, due: Due, now: int) -> str | None:
        late = now - due.join_at_us
        if late > self.config.misfire_grace_us:
            return (
                f"missed join_at by {_seconds(late)} (more than misfire_grace_seconds = "
                f"{self.config['scheduler.misfire_grace_seconds']}); the daemon was not running or was blocked"
            )
        return None

    def _join_due(self, now: int) -> int:
        """staged -> joining for every bot whose join_at has come: record, then signal."""
        skip = self._unrecorded_ids.union(self.runner.armed()) if self.runner.arms_joins else self._unrecorded_ids
        due = [bot for bot in self.store.due(states.STAGED, now, BATCH) if bot.id not in skip]
        changes: list[Change] = []
        joins: list[str] = []
        for bot in due:
            missed = self._missed(bot, now)
            if missed:
                self.runner.discard(bot.id)
                changes.append((bot.id, states.STAGED, states.FATAL_ERROR, missed))
                continue
            late = now - bot.join_at_us
            detail = f"joined {_seconds(late)} late" if late > LATE_NOTE_US else None
            changes.append((bot.id, states.STAGED, states.JOINING, detail))
            joins.append(bot.id)
        self._record_then_join(changes, joins, now)
        return len(due)

    def _record_then_join(self, changes: list[Change], joins: list[str], now: int) -> None:
        """Record the whole batch in one commit, *then* send the joins.

        A kill between the two leaves joins recorded that may not have been sent; a restart
        treats them as sent: ``join`` goes at most once (docs/reliability.md says why). When
        the store refuses the record (disk full...), the joins still go on time, the runner
        keeps a record of its own, and the change (with its true time) is retried until
        stored: a storage error never makes a second ``join``."""
        if not changes:
            return
        failed: list[Change] = []
        with self.store.hold_announcements():  # nothing (fan-out, log) between record and send
            moved = self._record(changes, now)
            if self._unrecorded_ids.intersection(joins):
                self.runner.remember_joins([bot_id for bot_id in joins if bot_id in self._unrecorded_ids])
            for bot_id in joins:
                if bot_id not in moved:
                    continue  # lost a race in the store: not this batch's to join
                try:
                    self.runner.join(bot_id)
                except RunnerError as exc:
                    self.runner.discard(bot_id)
                    failed.append((bot_id, states.JOINING, states.FATAL_ERROR, f"join failed: {exc}"))
        if failed:
            self._record(failed, self.clock.now_us())

    def _record(self, changes: list[Change], now: int) -> set[str]:
        """Store ``changes``; the ids that moved. Behind (or on) a storage fault the changes
        queue, in order, and count as made."""
        if not self._unrecorded:
            try:
                return set(self._write(changes, now))
            except StorageError as exc:
                log.error("cannot record %d change(s) (%s, ...): %s; retrying every %s", len(changes),
                          changes[0][0], exc.message, _seconds(RECORD_RETRY_US))
        self._unrecorded.append((changes, now))
        self._unrecorded_ids.update(change[0] for change in changes)
        return {change[0] for change in changes}

    def _flush_records(self) -> bool:
        """Store the queued changes, oldest first, each at its own time; True once none is left."""
        done = 0
        while self._unrecorded:
            changes, at_us = self._unrecorded[0]
            try:
                self._write(changes, at_us)
            except StorageError:
                break
            self._unrecorded.pop(0)
            done += len(changes)
        self._unrecorded_ids = {change[0] for changes, _ in self._unrecorded for change in changes}
        if done:
            log.warning("recorded %d change(s) the store had refused; %d still waiting", done,
                        sum(len(changes) for changes, _ in self._unrecorded))
        return not self._unrecorded

    def _admit(self, due: list[Due], now: int) -> list[Due]:
        """The bots the runner cap lets start now; the others get a "waiting" event, once."""
        free = self.runner.free_slots()
        admitted = due if free is None else due[:free]
        for bot in admitted:
            self._waiting.discard(bot.id)
        limit = self.config["runner.max_concurrent"]
        for bot in due[len(admitted):]:
            if bot.id not in self._waiting:
                self._waiting.add(bot.id)
                self.store.note(bot.id, now, f"waiting for a runner slot (runner.max_concurrent = {limit} in use)")
        return admitted

    def _fail_missed(self, due: list[Due], state: str, now: int) -> list[Due]:
        """Move bots past the misfire grace to fatal_error; return the others."""
        missed = [(bot, self._missed(bot, now)) for bot in due]
        failed = [(bot.id, state, states.FATAL_ERROR, why) for bot, why in missed if why]
        if failed:
            self._write(failed, now)
            if state == states.READY:  # a runner adopted after a restart, if any
                for bot_id, *_ in failed:
                    self.runner.discard(bot_id)
        return [bot for bot, why in missed if not why]

    def _start_ready(self, now: int) -> int:
        """Ad-hoc bots: start the runner and join at once (ready -> joining)."""
        due = [bot for bot in self.store.due(states.READY, now, BATCH) if bot.id not in self._unrecorded_ids]
        live = self._fail_missed(due, states.READY, now)
        admitted = self._admit(live, now)
        changes: list[Change] = []
        joins: list[str] = []
        for bot in admitted:
            try:
                self.runner.stage(self._bot(bot.id))
            except RunnerError as exc:
                self.runner.discard(bot.id)
                changes.append((bot.id, states.READY, states.FATAL_ERROR, f"runner failed: {exc}"))
                continue
            changes.append((bot.id, states.READY, states.JOINING, None))
            joins.append(bot.id)
        self._record_then_join(changes, joins, now)
        return len(due) if len(admitted) == len(live) else 0

    def _stage_due(self, now: int) -> int:
        """scheduled -> staged once join_at - stage_lead has come, in one transaction
        (fenced on join_at), then start their runners."""
        due = self._stage_window(now)
        live = self._fail_missed(due, states.SCHEDULED, now)
        admitted = self._admit(live, now)
        # in order of join_at, a chunk at a time: never a runner start in the last
        # JOIN_GUARD_US before a join (the rest waits for the next tick)
        for start in range(0, len(admitted), STAGE_CHUNK):
            if start and self._join_imminent():
                return 0
            chunk = admitted[start:start + STAGE_CHUNK]
            staged = set(self.store.stage_many(chunk, now))  # a cancel or reschedule may have won
            for bot in chunk:
                if bot.id not in staged:
                    continue
                try:
                    self.runner.stage(self._bot(bot.id))
                except RunnerError as exc:
                    self.store.transition(bot.id, states.STAGED, states.FATAL_ERROR, self.clock.now_us(),
                                          f"runner could not start: {exc}")
                    continue
                if self.runner.arms_joins:
                    self._want_armed(bot.id, bot.join_at_us)
            if self.runner.arms_joins:
                self._arm_due(self.clock.now_us())
        return len(due) if len(admitted) == len(live) else 0  # capped: wait for a freed slot

    def _early(self) -> list[Due] | None:
        """The scheduled bots a costly stager looks ahead at (None: staging costs nothing)."""
        cost = self.runner.stage_cost_us
        if not cost:
            return None
        horizon = self.clock.now_us() + self.config.stage_lead_us + MAX_EARLY_STAGE_US
        return self.store.due(states.SCHEDULED, horizon, EARLY_STAGE_SCAN)

    def _next_stage_us(self) -> int | None:
        """When staging must start: join_at - stage_lead, earlier for a burst (the i-th bot
        in join order by (i + 1) x stage_cost_us, so the whole burst is up in time)."""
        lead = self.config.stage_lead_us
        ahead = self._early()
        if ahead is None:
            when = self.store.next_time(states.SCHEDULED)
            return None if when is None else when - lead
        cost = self.runner.stage_cost_us
        return min((bot.join_at_us - lead - (i + 1) * cost for i, bot in enumerate(ahead)), default=None)

    def _stage_window(self, now: int) -> list[Due]:
        """The scheduled bots to stage now, in join order (see ``_next_stage_us``)."""
        lead = self.config.stage_lead_us
        ahead = self._early()
        if ahead is None:
            return self.store.due(states.SCHEDULED, now + lead, BATCH)
        cost = self.runner.stage_cost_us
        count = 0
        for i, bot in enumerate(ahead):
            if now >= bot.join_at_us - lead - (i + 1) * cost:
                count = i + 1
        return ahead[:count]

    def _join_imminent(self) -> bool:
        """A join (armed or not) is due within ``JOIN_GUARD_US``, or was due less than
        ``JOIN_SETTLE_US`` ago: hold staging until it has settled."""
        now = self.clock.now_us()
        next_join = self.store.next_time(states.STAGED)
        armed = self.runner.armed().values()
        soonest = min([t for t in (next_join, *armed) if t is not None and t >= now - JOIN_SETTLE_US], default=None)
        if soonest is None or soonest - now > JOIN_GUARD_US:
            return False
        self._stage_hold_us = max(soonest + JOIN_SETTLE_US, now + HOLD_RECHECK_US)
        return True

    def _bot(self, bot_id: str) -> Bot:
        """A bot the queue just named (one loop, one writer: it cannot have gone since)."""
        bot = self.store.get(bot_id)
        if bot is None:
            raise RunnerError(f"{bot_id} is no longer in the store")
        return bot

    def report(self, bot_id: str, state: str, detail: str | None) -> None:
        """A runner's state report: applied when legal, logged and ignored when not."""
        if bot_id in self._unrecorded_ids:
            self._flush_records()
        queued = [change[2] for changes, _ in self._unrecorded for change in changes if change[0] == bot_id]
        if queued:  # its join is not stored yet: queue the report behind it, from the state it will have
            if states.is_legal(queued[-1], state):
                self._record([(bot_id, queued[-1], state, detail)], self.clock.now_us())
            return
        current = self.store.state_since(bot_id)
        if current is None:
            log.warning("runner reported %s for unknown bot %s; ignored", state, bot_id)
            return
        if not states.is_legal(current[0], state):
            log.warning("runner reported illegal transition %s -> %s for %s; ignored", current[0], state, bot_id)
            return
        self._write([(bot_id, current[0], state, detail)], self.clock.now_us())

    def report_many(self, reports: list[tuple[str, str, str | None]]) -> None:
        """Runner reports read together (a burst's ``state`` lines): the legal ones in one
        commit, each judged from the state the ones before it leave. Behind a storage fault
        (changes queued), one at a time as ``report``."""
        if self._unrecorded:
            for report in reports:
                self.report(*report)
            return
        after: dict[str, str] = {}
        changes: list[Change] = []
        for bot_id, state, detail in reports:
            current = after.get(bot_id)
            if current is None:
                since = self.store.state_since(bot_id)
                if since is None:
                    log.warning("runner reported %s for unknown bot %s; ignored", state, bot_id)
                    continue
                current = since[0]
            if not states.is_legal(current, state):
                log.warning("runner reported illegal transition %s -> %s for %s; ignored", current, state, bot_id)
                continue
            changes.append((bot_id, current, state, detail))
            after[bot_id] = state
        if changes:
            self._write(changes, self.clock.now_us())

    def _write(self, changes: Sequence[Change], now: int) -> list[str]:
        """Where every compare-and-set about a running bot goes: the store here; a cluster
        agent (daemon/cluster.py) fences each on its claim instead."""
        return self.store.transition_many(changes, now)

    def recover(self) -> None:
        """At start-up: hand every bot that was past staging back to the runner.

        ``scheduled`` and ``ready`` bots need nothing: ``tick`` handles them, including the
        misfire rule for joins missed while the daemon was down.
        """
        waiting = (states.SCHEDULED, states.READY)
        active = [s for s in states.ALL_STATES if s not in states.TERMINAL and s not in waiting]
        for due in self.store.in_states(active):
            since = self.store.state_since(due.id)
            if since is None:
                continue
            try:
                self.runner.resume(self._bot(due.id), since[1])
            except RunnerError as exc:
                self.store.transition(due.id, due.state, states.FATAL_ERROR, self.clock.now_us(), str(exc))
                continue
            if due.state == states.STAGED and self.runner.arms_joins:
                self._want_armed(due.id, due.join_at_us)  # re-armed: an intent still ahead was never sent

    # -- the loop -----------------------------------------------------------------

    def poke(self, due_us: int | None = None) -> None:
        """Re-plan now if something became due before the moment we are sleeping towards."""
        if self._wakeup is None:
            return
        if due_us is None or self._target_us is None or due_us < self._target_us:
            self._wakeup.set()

    def stop(self) -> None:
        self._stopping = True
        if self._wakeup is not None:
            self._wakeup.set()

    async def run(self) -> None:
        self._wakeup = asyncio.Event()
        while not self._stopping:
            try:
                target = self.tick()
                self._last_tick = time.monotonic()
                # never "until poked": a request due later than the horizon then need not wake
                # us (re-planning costs a tick; 64 connections creating bots would cost one each)
                horizon = self.clock.now_us() + PLAN_HORIZON_US
                self._target_us = horizon if target is None else min(target, horizon)
                if self.checkpoint_due():
                    self._checkpoint_in_background()
            except Exception:  # a bug or a storage fault must not kill the loop
                log.exception("scheduler tick failed; retrying in 1 s")
                self._target_us = self.clock.now_us() + 1_000_000
            await self._sleep_until(self._target_us)

    def checkpoint_due(self) -> bool:
        """The store says when (its policy); the scheduler only keeps one at a time running,
        in a worker thread, between ticks."""
        return not self._checkpoint_running and self.store.checkpoint_due()

    def _checkpoint_in_background(self) -> None:
        self._checkpoint_running = True

        def done(future: asyncio.Future[None]) -> None:
            self._checkpoint_running = False
            if not future.cancelled() and future.exception() is not None:
                log.warning("WAL checkpoint failed: %s", future.exception())

        asyncio.get_running_loop().run_in_executor(None, self.store.checkpoint).add_done_callback(done)

    async def _sleep_until(self, target_us: int | None) -> None:
        assert self._wakeup is not None
        while not self._stopping:
            if target_us is None:
                await self._wakeup.wait()
                self._wakeup.clear()
                return
            remaining = (target_us - self.clock.now_us()) / 1_000_000
            if remaining <= 0:
                await asyncio.sleep(0)  # the loop's I/O between ticks, whatever comes due
                return
            if remaining <= SPIN_S and target_us != self._loop_join_us:
                # staging, arming, a held-back stage: a timer's millisecond is fine. A spin
                # here held the loop (no I/O, not even the join process's reports the hold
                # waits for) through back-to-back 1 ms re-checks for up to 500 ms.
                await asyncio.sleep(remaining)
                return
            if remaining <= SPIN_S:
                give_up = time.monotonic() + 2 * SPIN_S  # a backward clock step must not trap us here
                while self.clock.now_us() < target_us and time.monotonic() < give_up:
                    pass
                await asyncio.sleep(0)
                return
            if not await wait_event(self._wakeup, min(remaining - SPIN_S, MAX_NAP_S)):
                continue
            self._wakeup.clear()
            await self._coalesce()
            return

    async def _coalesce(self) -> None:
        """Woken by a request: wait out ``POKE_COALESCE_S`` since the last tick, so the
        pokes of many requests share one tick (staging can wait a few ms; joins are the
        join process's, and do not wait for ticks)."""
        gap = POKE_COALESCE_S - (time.monotonic() - self._last_tick)
        if gap > 0 and not self._stopping:
            await asyncio.sleep(gap)
