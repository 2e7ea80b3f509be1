"""The join path off the event loop: one thread owns the join instants.

The loop serves requests, commits, runner output and staging; asyncio runs every ready
callback before it looks at its timers, so a join fired from the loop waits behind a loop
iteration of other work. Here the runner hands each staged bot's join (its instant and the
already-open, non-blocking stdin fd of its runner) to this thread ahead of time. The thread
naps on a condition variable until ``SPIN_S`` before the earliest instant (re-reading the
wall clock at least every ``MAX_NAP_S``, so a clock step moves a join by a nap at most),
sleeps then spins the rest, and writes ``join\\n`` to every fd of that instant in one tight
loop: no lookups, no Python objects built at the instant. The results go back to the loop
(``on_fired``), which records the ``joining`` transitions afterwards.

The lock makes ``disarm`` and the fire exclusive: once ``disarm`` returns True the join will
not be written (the caller may close the fd); when it returns False the join was written
already (its result is queued) or was never armed.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_NAP_S = 1.0
#: Wake this long before the instant and spin the remainder (the condition variable's
#: timeout has ~0.1 ms slack and a waking thread must still get the GIL).
SPIN_S = 0.001
#: The GIL is handed over at most this often (default 5 ms): a thread waiting for it (the
#: join thread at its instant) gets it within this much of any pure-Python work.
SWITCH_INTERVAL_S = 0.0005
JOIN_LINE = b"join\n"


@dataclass(frozen=True)
class Fired:
    """One join the thread wrote (``error`` None) or could not write."""

    bot_id: str
    due_us: int
    sent_us: int
    error: str | None


def _raise_priority() -> bool:
    """SCHED_FIFO for the join thread when the system allows it (root, CAP_SYS_NICE, or an
    ``RLIMIT_RTPRIO`` such as systemd's ``LimitRTPRIO=1``). Each ``join`` written wakes a
    runner, and an ordinary thread is preempted by the runner it just woke: a burst of 200
    then takes ~20 ms to write on a loaded 2-core machine instead of ~1 ms. The thread
    only ever sleeps or writes a few bytes, and spins at most 200 µs, so it cannot starve
    anything. Without the privilege it stays an ordinary thread."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))  # 0: this thread
    except (OSError, AttributeError):
        return False
    return True


def _now_us() -> int:
    return time.time_ns() // 1000


class JoinTimer:
    def __init__(self, on_fired: Callable[[], None], clock: Callable[[], int] = _now_us,
                 max_late_us: Callable[[], int] | None = None, journal_fd: int = -1) -> None:
        self._on_fired = on_fired
        #: Each instant is appended here (one write) just before its joins are written: a
        #: restarted daemon knows which armed instants the dead one fired (maybe sent) and
        #: which it never reached (not sent: they are sent now).
        self.journal_fd = journal_fd
        self._clock = clock
        self._max_late_us = max_late_us
        self._cond = threading.Condition(threading.Lock())
        self._batches: dict[int, dict[str, int]] = {}  # due_us -> {bot_id: fd}
        self._due_of: dict[str, int] = {}
        self._fired: list[Fired] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: Whether the thread runs SCHED_FIFO (``_raise_priority``).
        self.realtime = False

    def start(self) -> None:
        if self._thread is not None:
            return
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._thread = threading.Thread(target=self._run, name="botsched-joins", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def arm(self, due_us: int, joins: dict[str, int]) -> None:
        """Write ``join`` to each fd at ``due_us`` (a bot armed again moves to the new time)."""
        with self._cond:
            for bot_id in joins:
                self._drop(bot_id)
            self._batches.setdefault(due_us, {}).update(joins)
            for bot_id in joins:
                self._due_of[bot_id] = due_us
            self._cond.notify()
        self.start()

    def disarm(self, bot_id: str) -> bool:
        """True: the join was pending and will not be written now."""
        with self._cond:
            return self._drop(bot_id)

    def armed(self, bot_id: str) -> bool:
        with self._cond:
            return bot_id in self._due_of

    def armed_times(self) -> set[int]:
        with self._cond:
            return set(self._batches)

    def take_fired(self) -> list[Fired]:
        with self._cond:
            fired, self._fired = self._fired, []
        return fired

    def _drop(self, bot_id: str) -> bool:
        due = self._due_of.pop(bot_id, None)
        if due is None:
            return False
        batch = self._batches.get(due)
        if batch is not None:
            batch.pop(bot_id, None)
            if not batch:
                del self._batches[due]
        return True

    def _run(self) -> None:
        self.realtime = _raise_priority()
        while True:
            with self._cond:
                while not self._batches and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                due = min(self._batches)
                left = (due - self._clock()) / 1e6
                if left > SPIN_S:
                    self._cond.wait(min(left - SPIN_S, MAX_NAP_S))
                    continue  # re-plan: an earlier batch may have come, or the clock moved
            self._spin_until(due)
            with self._cond:
                batch = self._batches.pop(due, None)
                if batch:
                    self._fire(due, batch)
            if batch:
                self._on_fired()

    def _spin_until(self, due: int) -> None:
        give_up = time.monotonic() + 2 * SPIN_S + 0.001  # a backward clock step must not trap us
        while True:
            left = due - self._clock()
            if left <= 0 or time.monotonic() > give_up:
                return
            if left > 200:
                time.sleep((left - 150) / 1e6)

    def _fire(self, due: int, batch: dict[str, int]) -> None:
        """Under the lock: every write first, then the bookkeeping."""
        now = self._clock()
        limit = self._max_late_us() if self._max_late_us is not None else None
        if limit is not None and now - due > limit:
            for bot_id in batch:
                self._due_of.pop(bot_id, None)
                self._fired.append(Fired(bot_id, due, now, "missed"))
            return
        errors: dict[str, str] = {}
        write = os.write
        if self.journal_fd >= 0:
            try:
                write(self.journal_fd, b"%d\n" % due)
            except OSError:
                pass  # best effort (full disk): a restart then counts this instant as not sent
        for bot_id, fd in batch.items():
            if fd < 0:
                continue  # a simulated runner: the instant is all there is to it
            try:
                if write(fd, JOIN_LINE) != len(JOIN_LINE):
                    errors[bot_id] = "short write to the runner's stdin"
            except OSError as exc:
                errors[bot_id] = os.strerror(exc.errno or errno.EIO)
        sent = self._clock()
        for bot_id in batch:
            self._due_of.pop(bot_id, None)
            self._fired.append(Fired(bot_id, due, sent, errors.get(bot_id)))
