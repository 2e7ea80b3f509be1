"""The default runner: no process, a believable meeting on timers (for trying botsched out).

joining -> joined_recording after ``simulate_join_seconds`` -> ended after
``simulate_duration_seconds``. The timeline is derived from when the bot entered its
state, so a restarted daemon resumes a simulated meeting where it was.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from botsched.core import states
from botsched.core.model import Bot
from botsched.daemon.runners.base import Runner
from botsched.daemon.runners.joins import Joins


class SimulateRunner(Runner):
    kind = "simulate"
    #: Simulated joins go out from the join process too, so the simulate runner measures
    #: the same join path as real runners (there is no process to write to; nothing outside
    #: the daemon sees a join, so no intent need survive a restart).
    arms_joins = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._armed: dict[str, int] = {}
        self.timer = Joins(self.collect_fired, grace_us=lambda: self.config.misfire_grace_us)

    def start(self) -> None:
        self.timer.start()

    def send_joins_until(self, monotonic_s: float | None) -> None:
        self.timer.send_until(monotonic_s)

    def arm_joins(self, due_us: int, bot_ids: list[str]) -> list[str]:
        for bot_id in bot_ids:
            self._armed[bot_id] = due_us
        self.timer.arm(due_us, dict.fromkeys(bot_ids, -1))
        return list(bot_ids)

    def armed(self) -> dict[str, int]:
        return dict(self._armed)

    def collect_fired(self) -> None:
        fired = self.timer.take_fired()
        if not fired:
            return
        for item in fired:
            self._armed.pop(item.bot_id, None)
            if item.error is None:
                self.join(item.bot_id)
        if self.on_joins_sent is not None:
            self.on_joins_sent([(f.bot_id, f.due_us, f.sent_us, f.error) for f in fired])

    def describe(self) -> str:
        return "simulate (no real bot: runs are simulated)"

    def _after(self, bot_id: str, delay_s: float, state: str, then: str | None = None) -> None:
        def fire() -> None:
            self._timers.pop(bot_id, None)
            self.report(bot_id, state, "simulated")
            if then is not None:
                self._after(bot_id, self._duration(then), then)

        self._cancel(bot_id)
        self._timers[bot_id] = asyncio.get_running_loop().call_later(max(delay_s, 0.0), fire)

    def _duration(self, state: str) -> float:
        if state == states.ENDED:
            return float(self.config["runner.simulate_duration_seconds"])
        return float(self.config["runner.simulate_join_seconds"])

    def _cancel(self, bot_id: str) -> None:
        timer = self._timers.pop(bot_id, None)
        if timer is not None:
            timer.cancel()

    def stage(self, bot: Bot) -> None:
        """Nothing to allocate."""

    def join(self, bot_id: str) -> None:
        if bot_id in self._armed:
            if not self.timer.disarm(bot_id):
                self.collect_fired()  # the joiner has just sent it
                return
            del self._armed[bot_id]
        self._after(bot_id, self._duration(states.JOINED_RECORDING), states.JOINED_RECORDING, then=states.ENDED)

    def leave(self, bot_id: str) -> None:
        self._cancel(bot_id)
        self.report(bot_id, states.LEAVING, "asked to leave")
        self._after(bot_id, 0.2, states.ENDED)

    def resume(self, bot: Bot, since_us: int) -> None:
        elapsed = time.time() - since_us / 1_000_000
        state = bot["state"]
        if state == states.JOINING:
            self._after(bot["id"], self._duration(states.JOINED_RECORDING) - elapsed, states.JOINED_RECORDING,
                        then=states.ENDED)
        elif state in states.IN_MEETING:
            self._after(bot["id"], self._duration(states.ENDED) - elapsed, states.ENDED)
        elif state in (states.LEAVING, states.POST_PROCESSING):
            self._after(bot["id"], 0.0, states.ENDED)

    def discard(self, bot_id: str) -> None:
        if self._armed.pop(bot_id, None) is not None:
            self.timer.disarm(bot_id)
        self._cancel(bot_id)

    async def close(self) -> None:
        for bot_id in list(self._armed):
            self.timer.disarm(bot_id)
        self._armed.clear()
        self.timer.stop()
        for bot_id in list(self._timers):
            self._cancel(bot_id)
