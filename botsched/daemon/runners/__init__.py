"""Runners: what "stage", "join" and "leave" mean for a bot (SPEC §6).

A runner is driven by the scheduler and reports back through a ``Report`` callback
(``report(bot_id, state, detail)``); the scheduler checks legality and stores it.
"""

from __future__ import annotations

from pathlib import Path

from botsched.core.config import Config
from botsched.daemon.runners.base import Report, Runner, RunnerError
from botsched.daemon.runners.simulate import SimulateRunner

__all__ = ["Report", "Runner", "RunnerError", "SimulateRunner", "make_runner"]


def make_runner(config: Config, report: Report, log_dir: Path) -> Runner:
    """The runner for config ``runner.kind`` (per-bot output goes under ``log_dir``)."""
    kind = config["runner.kind"]
    if kind == "simulate":
        return SimulateRunner(config, report)
    if kind == "command":
        from botsched.daemon.runners.command import CommandRunner

        return CommandRunner(config, report, log_dir)
    raise RunnerError(f"unknown runner kind {kind!r}")
