"""The scheduler: stage bots ``stage_lead`` before ``join_at`` and join them at ``join_at``.

Two layers, so the rules are testable without waiting:

- ``Scheduler.tick()`` is plain synchronous Python: given the clock's *now*, do every due
  transition and return when the next one is due. Tests drive it with a ``FakeClock``.
- ``Scheduler.run()`` is the asyncio loop around it. It wakes exactly when the next bot is
  due (not on a poll): it naps in bounded chunks of at most ``MAX_NAP_S`` re-reading the
  wall clock (so NTP steps and suspend/resume cannot shift a join by more than a chunk),
  wakes ``SPIN_S`` early and spins the last stretch, because the event loop's timers
  round up to whole milliseconds. ``poke()`` re-plans at once when a request makes
  something due sooner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from botsched.core import states
from botsched.core.config import Config
from botsched.core.model import Bot, Due
from botsched.daemon.runners import Runner, RunnerError
from botsched.daemon.store.base import Change, StorageError, Store

log = logging.getLogger("botsched.daemon.scheduler")

MAX_NAP_S = 1.0
SPIN_S = 0.002
#: A join later than this (the daemon was down, or the bot waited for a runner slot)
#: says how late in its event; a normal join is a fraction of a millisecond late.
LATE_NOTE_US = 100_000
#: Staging waits while a join is due this soon...
JOIN_GUARD_US = 5_000
#: ...unless staging is already this late.
MAX_STAGE_DEFER_US = 500_000
BATCH = 5_000
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
        runner.on_slot_freed = self.poke

    # -- the rules ----------------------------------------------------------------

    def next_due_us(self) -> int | None:
        """When the next transition is due: the earliest of staging, joining, ad-hoc start."""
        candidates = []
        when = self._next_time(states.STAGED)
        if when is not None:
            candidates.append(when)
        if self.runner.free_slots() != 0:  # when full, a freed slot pokes us
            when = self.store.next_time(states.SCHEDULED)
            if when is not None:
                candidates.append(when - self.config.stage_lead_us)
            when = self._next_time(states.READY)
            if when is not None:
                candidates.append(when)
        return min(candidates) if candidates else None

    def next_join_us(self) -> int | None:
        """When the next join is due (staging can wait; joins cannot)."""
        times = [self._next_time(state) for state in (states.STAGED, states.SCHEDULED, states.READY)]
        known = [t for t in times if t is not None]
        return min(known) if known else None

    def _next_time(self, state: str) -> int | None:
        """``store.next_time``, leaving out bots whose join was sent but not yet recorded
        (they still look due in the store): their record is retried within
        ``RECORD_RETRY_US`` instead of spinning, and they are never joined again."""
        when = self.store.next_time(state)
        if not self._unrecorded_ids or when is None:
            return when
        now = self.clock.now_us()
        if when > now:
            return when
        horizon = now + RECORD_RETRY_US
        times = [bot.join_at_us for bot in self.store.due(state, horizon, BATCH) if bot.id not in self._unrecorded_ids]
        return min(times, default=horizon)

    def tick(self) -> int | None:
        """Do everything due now; return when the next thing is due (``None``: nothing queued).

        Joins come first. Staging (a commit and process starts) is held back while a join
        is due within ``JOIN_GUARD_US``, so it cannot make that join late — unless staging
        itself is already ``MAX_STAGE_DEFER_US`` overdue (no starvation under a join storm).
        """
        now = self.clock.now_us()
        if self._unrecorded:
            self._flush_records()
        while self._join_due(now) == BATCH:
            pass
        if self._may_stage(now):
            while self._start_ready(now) == BATCH:
                pass
            while self._stage_due(now) == BATCH:
                pass
        return self.next_due_us()

    def _may_stage(self, now: int) -> bool:
        next_join = self._next_time(states.STAGED)
        if next_join is None or next_join - now > JOIN_GUARD_US:
            return True
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
        due = [bot for bot in self.store.due(states.STAGED, now, BATCH) if bot.id not in self._unrecorded_ids]
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
                return set(self.store.transition_many(changes, now))
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
                self.store.transition_many(changes, at_us)
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
            self.store.transition_many(failed, now)
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
        due = self.store.due(states.SCHEDULED, now + self.config.stage_lead_us, BATCH)
        live = self._fail_missed(due, states.SCHEDULED, now)
        admitted = self._admit(live, now)
        staged = set(self.store.stage_many(admitted, now))  # a cancel or reschedule may have won
        for bot in admitted:
            if bot.id not in staged:
                continue
            try:
                self.runner.stage(self._bot(bot.id))
            except RunnerError as exc:
                self.store.transition(bot.id, states.STAGED, states.FATAL_ERROR, self.clock.now_us(),
                                      f"runner could not start: {exc}")
        return len(due) if len(admitted) == len(live) else 0  # capped: wait for a freed slot

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
        self.store.transition(bot_id, current[0], state, self.clock.now_us(), detail)

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
                self._target_us = self.tick()
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
                return
            if remaining <= SPIN_S:
                give_up = time.monotonic() + 2 * SPIN_S  # a backward clock step must not trap us here
                while self.clock.now_us() < target_us and time.monotonic() < give_up:
                    pass
                return
            try:
                await asyncio.wait_for(self._wakeup.wait(), min(remaining - SPIN_S, MAX_NAP_S))
            except TimeoutError:
                continue
            self._wakeup.clear()
            return
