"""Group commit (issue 12): durable request writes run on one writer thread, many per
commit, each failing or succeeding alone, answered only once committed. A real SQLite file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from botsched.core.model import Event, NewBot
from botsched.daemon.store import DuplicateKeys, NotScheduled, SqliteStore
from botsched.daemon.store.writer import GroupWriter

T0 = 1_900_000_000_000_000
URL = "https://meet.example.com/abc"


def _new(key: str | None = None) -> NewBot:
    return NewBot(URL, "bot", "2030-01-01T00:00:00Z", T0 + 3600_000_000, {}, key)


def _on_disk(path: Path) -> set[str]:
    """What a fresh connection sees: committed, not just in this process's memory."""
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT id FROM bots")}


def test_many_concurrent_creates_share_commits_and_are_committed_when_answered(tmp_path: Path) -> None:
    announced: list[Event] = []
    store = SqliteStore(tmp_path / "db", on_events=announced.extend)
    writer = GroupWriter(store, store.announce)

    async def one() -> str:
        [bot_id] = await writer.call(store.insert, [_new()], T0)
        assert bot_id in _on_disk(tmp_path / "db"), "answered before its commit"
        assert any(event.bot_id == bot_id for event in announced), "answered before its event was announced"
        return bot_id

    async def main() -> list[str]:
        return await asyncio.gather(*(one() for _ in range(300)))

    try:
        ids = asyncio.run(main())
        assert len(set(ids)) == 300
        assert writer.requests == 300
        assert writer.commits < 300, "no group commit: one commit per request"
        seqs = [event.seq for event in announced]
        assert sorted(seqs) == list(range(seqs[0] if seqs else 1, (seqs[0] if seqs else 1) + 300))
    finally:
        writer.stop()
        store.close()


def test_a_refused_request_in_a_group_undoes_only_itself(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db")
    [keeper] = store.insert([_new("k1")], T0)
    writer = GroupWriter(store, store.announce)

    async def main() -> list[object]:
        return await asyncio.gather(
            writer.call(store.insert, [_new("a")], T0),
            writer.call(store.insert, [_new("k1")], T0),  # clashes with keeper
            writer.call(store.delete_scheduled, "bot_AAAAAAAAAAAAAAAA"),
            writer.call(store.insert, [_new("b")], T0),
            return_exceptions=True,
        )

    try:
        first, clash, missing, last = asyncio.run(main())
        assert isinstance(clash, DuplicateKeys) and clash.clashes[0][2] == keeper
        assert isinstance(missing, NotScheduled)
        assert isinstance(first, list) and isinstance(last, list)
        assert _on_disk(tmp_path / "db") == {keeper, *first, *last}
        assert {b["state"] for b in store.get_many([*first, *last])} == {"scheduled"}
    finally:
        writer.stop()
        store.close()


def test_the_loop_runs_on_while_a_group_commits(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db")
    writer = GroupWriter(store, store.announce)

    def slow_insert() -> list[str]:
        time.sleep(0.3)  # a slow disk: the fsync stands for this
        return store.insert([_new()], T0)

    async def main() -> tuple[list[str], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        result = await writer.call(slow_insert)
        task.cancel()
        return result, ticks

    try:
        ids, ticks = asyncio.run(main())
        assert ids and ids[0] in _on_disk(tmp_path / "db")
        assert ticks >= 10, f"the loop ran only {ticks} times during a 0.3 s commit"
    finally:
        writer.stop()
        store.close()
