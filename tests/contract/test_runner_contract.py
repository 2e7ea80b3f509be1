"""The runner contract: one suite, run against every runner kind (``simulate``, ``command``).

Each runner is driven the way the scheduler drives it (stage, join, leave, discard, close)
on a real event loop; its reports are recorded and checked against the state machine. The
``command`` runner runs a real program (a small Python bot) through its real shim.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from botsched.core import config as config_mod
from botsched.core import states
from botsched.core.config import Config
from botsched.core.model import Bot
from botsched.daemon.runners import make_runner
from botsched.daemon.runners.base import Runner

#: How long a bot stays in its meeting when nobody asks it to leave (seconds).
MEETING_S = 0.6
#: A bot program for the command runner that behaves like the simulated meeting: joins on
#: ``join``, leaves on ``leave``, or ends (exit 0) after MEETING_S by itself.
BOT_PROGRAM = textwrap.dedent(
    """
    import select, sys
    meeting_s = float(sys.argv[1])
    for line in sys.stdin:
        if line.strip() == "join":
            print("state joined_recording simulated", flush=True)
            break
    while select.select([sys.stdin], [], [], meeting_s)[0]:
        if sys.stdin.readline().strip() == "leave":
            print("state leaving asked to leave", flush=True)
            break
    """
)

Reports = list[tuple[str, str, "str | None"]]


def _simulate(tmp_path: Path) -> dict[str, Any]:
    return {"runner.kind": "simulate", "runner.simulate_join_seconds": 0.05,
            "runner.simulate_duration_seconds": MEETING_S}


def _command(tmp_path: Path) -> dict[str, Any]:
    program = tmp_path / "bot.py"
    program.write_text(BOT_PROGRAM)
    return {"runner.kind": "command", "runner.command": [sys.executable, str(program), str(MEETING_S)],
            "runner.leave_grace_seconds": 5.0}


RUNNERS = [pytest.param(_simulate, id="simulate"), pytest.param(_command, id="command")]


class Rig:
    """A runner with its reports recorded; the test runs its scenario on the rig's loop
    (runners are driven from inside the daemon's loop)."""

    def __init__(self, runner: Runner, reports: Reports, loop: asyncio.AbstractEventLoop) -> None:
        self.runner = runner
        self.reports = reports
        self.loop = loop

    def states_of(self, bot_id: str) -> list[str]:
        return [state for reported, state, _ in self.reports if reported == bot_id]

    def run(self, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.loop.run_until_complete(scenario())

    async def until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = self.loop.time() + timeout
        while not done() and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert done(), f"timed out; reports so far: {self.reports}"


@pytest.fixture(params=RUNNERS)
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    config = Config({**config_mod.defaults(), **request.param(tmp_path)})
    reports: Reports = []
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        runner = make_runner(config, lambda *report: reports.append(report), tmp_path / "runners")
        yield Rig(runner, reports, loop)

        async def stop_all() -> None:  # command runners outlive a daemon: stop the tests' own
            for bot_id in BOT_IDS:
                runner.discard(bot_id)
            await asyncio.sleep(0.2)
            await runner.close()

        loop.run_until_complete(stop_all())
    finally:
        asyncio.set_event_loop(None)
        loop.close()


BOT_IDS = ("bot_AAAAAAAAAAAAAAAA", "bot_BBBBBBBBBBBBBBBB")


def a_bot(bot_id: str = BOT_IDS[0]) -> Bot:
    return {"id": bot_id, "meeting_url": "https://meet.google.com/gvy-zzra-ktd", "bot_name": "Notes",
            "state": states.STAGED, "join_at": "2030-01-01T00:00:00Z", "created_at": "2029-12-31T23:00:00.000000Z",
            "updated_at": "2029-12-31T23:00:00.000000Z", "metadata": {"team": "qa"}, "deduplication_key": None,
            "events": []}


def legal_path(reported: list[str], start: str = states.JOINING) -> bool:
    current = start
    for state in reported:
        if not states.is_legal(current, state):
            return False
        current = state
    return True


def test_describe_names_the_kind(rig: Rig) -> None:
    assert rig.runner.describe().startswith(rig.runner.kind)


def test_free_slots_is_none_or_a_count(rig: Rig) -> None:
    free = rig.runner.free_slots()
    assert free is None or free >= 1


def test_staging_reports_nothing_until_the_join(rig: Rig) -> None:
    async def scenario() -> None:
        rig.runner.stage(a_bot())
        await asyncio.sleep(0.3)

    rig.run(scenario)
    assert rig.reports == []


def test_a_joined_bot_records_then_ends_by_itself(rig: Rig) -> None:
    bot = a_bot()

    async def scenario() -> None:
        rig.runner.stage(bot)
        rig.runner.join(bot["id"])
        await rig.until(lambda: states.ENDED in rig.states_of(bot["id"]))

    rig.run(scenario)
    reported = rig.states_of(bot["id"])
    assert reported[0] == states.JOINED_RECORDING
    assert reported[-1] == states.ENDED
    assert legal_path(reported), reported


def test_leave_takes_a_bot_out_of_its_meeting(rig: Rig) -> None:
    bot = a_bot()
    notes: list[str | None] = []

    async def scenario() -> None:
        rig.runner.stage(bot)
        rig.runner.join(bot["id"])
        await rig.until(lambda: states.JOINED_RECORDING in rig.states_of(bot["id"]))
        notes.append(rig.runner.leave(bot["id"]))
        await rig.until(lambda: states.ENDED in rig.states_of(bot["id"]))

    rig.run(scenario)
    assert notes == [None]  # asked once: nothing to warn about
    reported = rig.states_of(bot["id"])
    assert states.LEAVING in reported, reported
    assert reported.index(states.LEAVING) < reported.index(states.ENDED)
    assert legal_path(reported), reported


def test_reports_name_only_their_own_bot(rig: Rig) -> None:
    first, second = (a_bot(bot_id) for bot_id in BOT_IDS)

    async def scenario() -> None:
        rig.runner.stage(first)
        rig.runner.stage(second)
        rig.runner.join(first["id"])
        await rig.until(lambda: states.ENDED in rig.states_of(first["id"]))
        rig.runner.discard(second["id"])

    rig.run(scenario)
    assert rig.states_of(second["id"]) == []  # staged, never joined: nothing to say


def test_a_discarded_bot_never_joins(rig: Rig) -> None:
    bot = a_bot()

    async def scenario() -> None:
        rig.runner.stage(bot)
        rig.runner.discard(bot["id"])
        await asyncio.sleep(MEETING_S + 0.3)

    rig.run(scenario)
    assert states.JOINED_RECORDING not in rig.states_of(bot["id"])
