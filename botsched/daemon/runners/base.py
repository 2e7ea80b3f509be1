"""The runner interface the scheduler drives, and the daemon's file-descriptor budget."""

from __future__ import annotations

import os
import resource
from abc import ABC, abstractmethod
from collections.abc import Callable

from botsched.core.config import Config
from botsched.core.model import Bot

#: ``report(bot_id, new_state, detail)``: a runner says where its bot is now.
Report = Callable[[str, str, "str | None"], None]

#: Descriptors a runner may never take: one for every client connection the daemon accepts
#: (``daemon.MAX_CONNECTIONS`` = 256) and 64 for the store and its WAL, the logs, join and
#: kill records and the loop itself. Under a low limit, half the limit (``reserved_fds``).
RESERVED_FDS = 256 + 64


def raise_nofile_limit() -> int:
    """At daemon start: the soft ``RLIMIT_NOFILE`` up to the hard one (every runner costs
    the daemon descriptors; the usual soft 1024 is 200 runners). Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:  # the kernel allows at most fs.nr_open
        try:
            with open("/proc/sys/fs/nr_open") as handle:
                target = int(handle.read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    return soft


def nofile_limit() -> int:
    """The soft limit on open descriptors now (a huge number when unlimited)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 30 if soft == resource.RLIM_INFINITY else soft


def reserved_fds(limit: int) -> int:
    """How many of ``limit`` descriptors runners must leave to the rest of the daemon."""
    return min(RESERVED_FDS, limit // 2)


def open_fds() -> int:
    """Descriptors this process has open now."""
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(directory)) - 1  # less the one listing it
        except OSError:
            continue
    return 0


class RunnerError(Exception):
    """A runner could not do what was asked; the message becomes the bot's fatal detail."""


class Runner(ABC):
    kind: str = "?"
    #: True: ``arm_joins`` hands joins to the join process (``joins.py``), which sends them
    #: at their instant, off the event loop (the scheduler then records them once sent).
    arms_joins: bool = False
    #: What staging one bot costs the loop (starting a process): a burst is staged this
    #: much earlier per bot, so its last runner is up by join_at - stage_lead.
    stage_cost_us: int = 0

    def __init__(self, config: Config, report: Report) -> None:
        self.config = config  # the daemon's one Config: a reload updates it in place
        self.report = report
        #: Called when a runner slot frees up (set by the scheduler to re-plan).
        self.on_slot_freed: Callable[[], None] | None = None
        #: Called on the loop with ``(bot_id, due_us, sent_us, error)`` for joins the join
        #: process wrote (error None) or could not write (set by the scheduler to record them).
        self.on_joins_sent: Callable[[list[tuple[str, int, int, str | None]]], None] | None = None
        #: Several ``report`` calls at once, in order, in one commit (set by the scheduler).
        self.report_many: Callable[[list[tuple[str, str, str | None]]], None] | None = None

    def describe(self) -> str:
        """One line for ``daemon status``."""
        return self.kind

    def start(self) -> None:
        """At daemon start-up, on the loop (a runner that arms joins starts its join process)."""

    def send_joins_until(self, monotonic_s: float | None) -> None:
        """Armed joins go out only while ``time.monotonic()`` is below this (None: always): a
        cluster agent's leases. Runners that do not arm send joins from the loop, which checks."""

    @abstractmethod
    def stage(self, bot: Bot) -> None:
        """Allocate the bot's resources ahead of its join (raise ``RunnerError`` to fail it)."""

    @abstractmethod
    def join(self, bot_id: str) -> None:
        """Signal the join. Called at ``join_at`` exactly: must be quick and never block."""

    def arm_joins(self, due_us: int, bot_ids: list[str]) -> list[str]:
        """Send ``join`` to these staged bots at ``due_us`` from the join process, having
        first recorded the intent so that a restart never sends it twice. Returns the ids
        armed (the others are joined by the scheduler's ``join`` call)."""
        return []

    def armed(self) -> dict[str, int]:
        """The bots whose join is armed and not yet sent, with their instants."""
        return {}

    def remember_joins(self, bot_ids: list[str]) -> None:
        """The store could not record these joins (about to be sent): keep a record of the
        runner's own, so that a restarted daemon never sends them again."""

    @abstractmethod
    def leave(self, bot_id: str) -> str | None:
        """Ask a bot in the meeting, or already leaving, to leave; a runner asked again
        stops the bot at once. Returns a note for the user (a warning), or None."""

    @abstractmethod
    def resume(self, bot: Bot, since_us: int) -> None:
        """After a daemon restart: take over a non-terminal bot found in the store."""

    def free_slots(self) -> int | None:
        """How many more bots may be staged now; ``None`` = no limit."""
        return None

    def discard(self, bot_id: str) -> None:
        """The bot failed or was dropped by the scheduler: release whatever it holds (its
        armed join too: it must not be sent)."""

    def stop_strays(self, keep: set[str]) -> list[str]:
        """At start-up, after ``resume``: stop the runners a previous daemon of this home left
        for bots not in ``keep`` (a cluster agent restarted after its bots went to others:
        SPEC §10, a bot is never run by two runners); the ids stopped."""
        return []

    async def close(self) -> None:
        """Daemon shutdown: stop watching runners (they may keep running)."""
