"""The runner interface the scheduler drives."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from botsched.config import Config

#: ``report(bot_id, new_state, detail)``: a runner says where its bot is now.
Report = Callable[[str, str, "str | None"], None]


class RunnerError(Exception):
    """A runner could not do what was asked; the message becomes the bot's fatal detail."""


class Runner(ABC):
    kind: str = "?"

    def __init__(self, config: Config, report: Report) -> None:
        self.config = config
        self.report = report
        #: Called when a runner slot frees up (set by the scheduler to re-plan).
        self.on_slot_freed: Callable[[], None] | None = None

    def describe(self) -> str:
        """One line for ``daemon status``."""
        return self.kind

    @abstractmethod
    def stage(self, bot: dict[str, Any]) -> None:
        """Allocate the bot's resources ahead of its join (raise ``RunnerError`` to fail it)."""

    @abstractmethod
    def join(self, bot_id: str) -> None:
        """Signal the join. Called at ``join_at`` exactly: must be quick and never block."""

    def remember_joins(self, bot_ids: list[str]) -> None:
        """The store could not record these joins (about to be sent): keep a record of the
        runner's own, so that a restarted daemon never sends them again."""

    @abstractmethod
    def leave(self, bot_id: str) -> None:
        """Ask a bot in the meeting to leave."""

    @abstractmethod
    def resume(self, bot: dict[str, Any], since_us: int) -> None:
        """After a daemon restart: take over a non-terminal bot found in the store."""

    def free_slots(self) -> int | None:
        """How many more bots may be staged now; ``None`` = no limit."""
        return None

    def discard(self, bot_id: str) -> None:
        """The bot failed or was dropped by the scheduler: release whatever it holds."""

    def reload(self, config: Config) -> None:
        self.config = config

    async def close(self) -> None:
        """Daemon shutdown: stop watching runners (they may keep running)."""
