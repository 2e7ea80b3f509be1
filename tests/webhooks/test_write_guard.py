"""The worker keeps the write lock free right before a join (injected clock, no sleeps
beyond a few tens of milliseconds)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from botsched.core.config import Config, defaults
from botsched.daemon.webhooks.service import WRITE_GUARD_AFTER_S, WRITE_GUARD_S, Webhooks
from botsched.daemon.webhooks.worker import DeliveryWorker


def test_before_write_waits_through_a_join_that_is_about_to_commit(tmp_path: Path) -> None:
    now = [1_000.0]
    due: list[int | None] = [None]
    hooks = Webhooks(str(tmp_path / "db"), Config(defaults()), clock=lambda: now[0], next_join_us=lambda: due[0])
    try:
        assert hooks._before_write() == 0.0  # nothing due
        due[0] = int((now[0] + 0.02) * 1e6)
        assert abs(hooks._before_write() - (0.02 + WRITE_GUARD_AFTER_S)) < 1e-6
        due[0] = int((now[0] + WRITE_GUARD_S * 2) * 1e6)
        assert hooks._before_write() == 0.0  # far enough away
        due[0] = int((now[0] - 5) * 1e6)
        assert hooks._before_write() == 0.0  # overdue (a stuck bot) must not stall the outbox
    finally:
        hooks.db.close()


def test_a_held_write_waits_once_then_writes_go_at_once() -> None:
    calls: list[float] = []

    async def db(fn: Any) -> Any:
        calls.append(time.monotonic())
        return fn(sqlite3.connect(":memory:"))

    async def main() -> None:
        worker = DeliveryWorker(db, sender=None, hold=lambda: 0.1)  # type: ignore[arg-type]
        start = time.monotonic()
        await worker._write(lambda c: 1)
        assert calls[-1] - start >= 0.095, "the write did not wait for the join"
        mark = time.monotonic()
        await worker._write(lambda c: 2)
        assert calls[-1] - mark < 0.05, "joins back to back must not starve the outbox"
        await worker._write(lambda c: 3)
        assert calls[-1] - mark >= 0.095, "the guard is back after one free write"

    asyncio.run(main())
