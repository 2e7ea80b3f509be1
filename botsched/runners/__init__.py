"""Runners: what "stage", "join" and "leave" mean for a bot (SPEC §6).

A runner is driven by the scheduler and reports back through a ``Report`` callback
(``report(bot_id, state, detail)``); the scheduler checks legality and stores it.
"""

from __future__ import annotations

from botsched.runners.base import Report, Runner, RunnerError
from botsched.runners.simulate import SimulateRunner

__all__ = ["Report", "Runner", "RunnerError", "SimulateRunner", "make_runner"]


def make_runner(kind: str, config: "object", report: Report) -> Runner:
    """The runner for config ``runner.kind``."""
    if kind == "simulate":
        return SimulateRunner(config, report)  # type: ignore[arg-type]
    if kind == "command":
        from botsched.runners.command import CommandRunner

        return CommandRunner(config, report)  # type: ignore[arg-type]
    raise RunnerError(f"unknown runner kind {kind!r}")
