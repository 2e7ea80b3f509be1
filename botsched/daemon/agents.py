"""``botsched agents`` (SPEC §10): the shape of one agent's row, and what is said about it.

Stdlib only: the SQLite daemon answers ``agents`` too (one row, itself) without loading the
cluster code; the PostgreSQL store fills the same rows from its registry table.
"""

from __future__ import annotations

import socket
from typing import NamedTuple, TypedDict

from botsched import __version__
from botsched.core import states
from botsched.core.config import Config
from botsched.core.timeparse import format_instant
from botsched.daemon.runners import Runner

__all__ = ["CLOCK_WARN_MS", "AgentBeat", "AgentRow", "agent_name", "local_row", "offset_warnings", "slots"]

#: An agent whose clock is further than this from the database's is warned about: each agent
#: sends its joins by its own clock, so its offset is how early or late its bots join.
CLOCK_WARN_MS = 50.0

#: The states in which a bot takes a runner slot.
_RUNNING = frozenset(states.ALL_STATES) - states.TERMINAL - {states.SCHEDULED}


class AgentRow(TypedDict):
    """One element of ``botsched agents --json``, exactly as SPEC §10 lists it."""

    name: str
    version: str
    runner: str
    slots_used: int
    slots_total: int | None
    last_heartbeat: str
    clock_offset_ms: float | None
    alive: bool


class AgentBeat(NamedTuple):
    """What an agent's heartbeat writes to the registry about itself."""

    name: str
    instance: str
    host: str
    pid: int
    version: str
    runner: str
    slots_used: int
    slots_total: int | None
    clock_offset_ms: float | None


def agent_name(config: Config) -> str:
    """``cluster.agent_name``, else the host name."""
    return str(config["cluster.agent_name"]) or socket.gethostname()


def slots(runner: Runner, config: Config, running: int) -> tuple[int, int | None]:
    """(used, total) runner slots; total is None when the runner has no limit (simulate), and
    then ``running`` (the bots this daemon runs) is what is used."""
    free = runner.free_slots()
    if free is None:
        return running, None
    total = int(config["runner.max_concurrent"])
    return max(total - free, 0), total


def local_row(config: Config, runner: Runner, counts: dict[str, int], now_us: int) -> AgentRow:
    """The single-machine daemon as ``agents`` shows it: the only agent of its SQLite store,
    alive (it is answering), its clock the store's own (offset 0)."""
    used, total = slots(runner, config, sum(count for state, count in counts.items() if state in _RUNNING))
    return {"name": agent_name(config), "version": __version__, "runner": str(config["runner.kind"]),
            "slots_used": used, "slots_total": total, "last_heartbeat": format_instant(now_us),
            "clock_offset_ms": 0.0, "alive": True}


def offset_warnings(rows: list[AgentRow]) -> list[str]:
    """A warning for each live agent whose clock is more than ``CLOCK_WARN_MS`` off."""
    return [
        f"agent {row['name']}'s clock is {row['clock_offset_ms']:+.1f} ms off the database server's: its bots "
        f"join that much {'late' if row['clock_offset_ms'] < 0 else 'early'} (sync its clock, e.g. with NTP)"
        for row in rows
        if row["alive"] and row["clock_offset_ms"] is not None and abs(row["clock_offset_ms"]) > CLOCK_WARN_MS
    ]
