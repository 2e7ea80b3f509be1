"""Unit tests of what is SQLite's own in botsched.daemon.store: the file, the schema, the WAL,
commits visible to other connections. The behaviour every store shares is in
tests/contract/test_store_contract.py."""

from __future__ import annotations

import itertools
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from botsched.core.errors import BotschedError
from botsched.core.model import Event, NewBot
from botsched.core.timeparse import format_instant, to_us
from botsched.daemon.store import (
    SCHEMA_VERSION,
    DuplicateKeys,
    IllegalTransition,
    Store,
)

S = 1_000_000
T0 = to_us(datetime(2025, 6, 16, 16, 40, 12, 518204, tzinfo=UTC))
ID_RE = re.compile(r"bot_[A-Za-z0-9]{16}")
TIME_US_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
URL = "https://meet.google.com/gvy-zzra-ktd"


def bot(
    join_us: int | None = T0 + 3600 * S,
    *,
    dedup: str | None = None,
    name: str = "My scheduled bot",
    metadata: dict[str, str] | None = None,
    url: str = URL,
) -> NewBot:
    text = None if join_us is None else format_instant(join_us, 0 if join_us % S == 0 else 6)
    return NewBot(url, name, text, join_us, metadata or {}, dedup)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "db")
    yield s
    s.close()


def one(store: Store, new: NewBot, now: int = T0) -> str:
    [bot_id] = store.insert([new], now)
    return bot_id


def finish(store: Store, bot_id: str, now: int, final: str = "ended") -> None:
    """Walk a scheduled bot through the lifecycle to a terminal state."""
    path = ["scheduled", "staged", "joining", "joined_recording", final]
    for old, new in itertools.pairwise(path):
        assert store.transition(bot_id, old, new, now)


# -- the file ---------------------------------------------------------------------------


def test_schema_version_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "db"
    Store(path).close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert raw.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    raw.close()


def test_reopening_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "db"
    first = Store(path)
    a = one(first, bot(T0 + 10 * S, dedup="k", metadata={"m": "v"}))
    first.stage(a, T0 + 10 * S, T0 + S)
    before = first.get(a)
    last = first.last_seq()
    first.close()
    second = Store(path)
    assert second.get(a) == before
    assert second.integrity_check() == "ok"
    with pytest.raises(DuplicateKeys):
        one(second, bot(dedup="k"))  # the dedup index survived too
    b = one(second, bot())
    assert second.events(b)[0].seq > last
    second.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db"
    Store(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(BotschedError, match="newer"):
        Store(path)


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "db"
    path.write_bytes(b"this is not a database file at all" * 100)
    with pytest.raises(BotschedError):
        Store(path)


# -- the event listener -----------------------------------------------------------------


def test_listener_fires_after_commit_only(tmp_path: Path) -> None:
    path = tmp_path / "db"
    seen: list[tuple[list[Event], dict[str, str]]] = []

    def listener(events: list[Event]) -> None:
        # another connection must already see the change: the commit is done
        other = sqlite3.connect(path)
        visible = dict(other.execute("SELECT id, state FROM bots"))
        other.close()
        seen.append((list(events), visible))

    s = Store(path, on_events=listener)
    a, b = s.insert([bot(T0 + S), bot(T0 + 2 * S)], T0)
    assert len(seen) == 1
    events, visible = seen[0]
    assert [(e.bot_id, e.state) for e in events] == [(a, "scheduled"), (b, "scheduled")]
    assert visible == {a: "scheduled", b: "scheduled"}

    s.stage(a, T0 + S, T0)
    assert [(e.bot_id, e.state) for e in seen[-1][0]] == [(a, "staged")]
    assert seen[-1][1] == {a: "staged", b: "scheduled"}
    assert len(seen) == 2

    # nothing changed: no announcement
    assert s.transition(b, "staged", "joining", T0) is False
    assert s.stage(a, T0 + S, T0) is False
    s.reschedule(b, "2030-01-01T00:00:00Z", T0 + 999 * S, T0)
    assert len(seen) == 2

    # rolled back: no announcement, and nothing visible
    with pytest.raises(DuplicateKeys):
        s.insert([bot(dedup="d"), bot(dedup="d")], T0)
    with pytest.raises(IllegalTransition):
        s.transition_many([(a, "staged", "joining", None), (b, "scheduled", "ended", None)], T0)
    assert len(seen) == 2
    assert s.get(a)["state"] == "staged"

    # a cancel announces nothing new either
    s.delete_scheduled(b)
    assert len(seen) == 2
    s.close()
