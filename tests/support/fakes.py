"""Test doubles injected where the daemon takes a clock or a runner."""

from __future__ import annotations

from typing import Any

from botsched.core.config import Config
from botsched.core.model import Bot
from botsched.daemon.runners.base import Runner, RunnerError

__all__ = ["FakeClock", "RecordingRunner"]


class FakeClock:
    """The injectable clock: tests set ``t`` (microseconds since the epoch) by hand."""

    def __init__(self, now_us: int) -> None:
        self.t = now_us

    def now_us(self) -> int:
        return self.t


class RecordingRunner(Runner):
    """Records every op the scheduler asks for, so tests assert on what was driven.

    ``calls`` holds ``("stage", id, state)``, ``("join", id)``, ``("leave", id)``,
    ``("resume", id, state, since_us)``, ``("discard", id)``; ``fail[op] = message`` makes
    ``op`` raise ``RunnerError``; ``cap`` limits the slots (``active`` are the taken ones).
    """

    kind = "recording"

    def __init__(self, config: Config, cap: int | None = None) -> None:
        super().__init__(config, lambda *args: None)
        self.calls: list[tuple[Any, ...]] = []
        self.fail: dict[str, str] = {}
        self.cap = cap
        self.active: set[str] = set()

    def _check(self, op: str) -> None:
        if op in self.fail:
            raise RunnerError(self.fail[op])

    def stage(self, bot: Bot) -> None:
        self.calls.append(("stage", bot["id"], bot["state"]))
        self._check("stage")
        self.active.add(bot["id"])

    def join(self, bot_id: str) -> None:
        self.calls.append(("join", bot_id))
        self._check("join")

    def leave(self, bot_id: str) -> str | None:
        self.calls.append(("leave", bot_id))
        self._check("leave")
        return None

    def resume(self, bot: Bot, since_us: int) -> None:
        self.calls.append(("resume", bot["id"], bot["state"], since_us))
        self._check("resume")
        self.active.add(bot["id"])

    def discard(self, bot_id: str) -> None:
        self.calls.append(("discard", bot_id))
        self.active.discard(bot_id)

    def free_slots(self) -> int | None:
        return None if self.cap is None else self.cap - len(self.active)

    def ops(self, op: str) -> list[str]:
        """The bot ids ``op`` was called for, in order."""
        return [call[1] for call in self.calls if call[0] == op]
