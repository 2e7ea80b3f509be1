"""The outbox inside the real store (``SqliteStore`` on a real file): a state change and its
deliveries commit together or not at all; old states are right across a batch."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from botsched.core.model import NewBot
from botsched.daemon.store import SqliteStore
from botsched.daemon.store.base import StorageError
from botsched.daemon.webhooks import outbox

NOW = 1_800_000_000_000_000
URL = "https://meet.google.com/abc-defg-hij"


def adhoc(n: int = 1) -> list[NewBot]:
    return [NewBot(URL, f"bot {i}", None, None, {"i": str(i)}, None) for i in range(n)]


@pytest.fixture
def store(tmp_path: Path):
    made = SqliteStore(tmp_path / "botsched.db")
    yield made
    made.close()


def side(store: SqliteStore) -> sqlite3.Connection:
    conn = sqlite3.connect(store.path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def rows(conn: sqlite3.Connection) -> list[tuple[str, str | None, str, dict]]:
    """(bot_id, old_state, new_state, body) per delivery, in outbox order."""
    found = []
    for bot_id, new_state, body in conn.execute("SELECT bot_id, new_state, body FROM webhook_deliveries ORDER BY seq"):
        parsed = json.loads(body)
        found.append((bot_id, parsed["data"]["old_state"], new_state, parsed))
    return found


def test_no_endpoint_no_deliveries_then_one_per_event_and_endpoint(store: SqliteStore) -> None:
    conn = side(store)
    [early] = store.insert(adhoc(), NOW)
    assert rows(conn) == [] and store.deliveries_written == 0
    a = outbox.add_endpoint(conn, "https://a.example/hook", [], NOW)
    outbox.add_endpoint(conn, "https://b.example/hook", ["joining"], NOW)
    [bot_id] = store.insert(adhoc(), NOW + 1)
    assert [(r[0], r[1], r[2]) for r in rows(conn)] == [(bot_id, None, "ready")]
    store.transition_many([(bot_id, "ready", "joining", None), (early, "ready", "joining", "late")], NOW + 2)
    found = rows(conn)
    assert [(r[0], r[1], r[2]) for r in found[1:]] == [
        (bot_id, "ready", "joining"), (bot_id, "ready", "joining"),
        (early, "ready", "joining"), (early, "ready", "joining"),
    ]
    assert store.deliveries_written == 5
    body = found[-1][3]
    assert body["data"]["detail"] == "late" and body["data"]["bot"]["metadata"] == {"i": "0"}
    assert body["data"]["bot"]["state"] == "joining"
    ids = conn.execute("SELECT endpoint_id, count(*) FROM webhook_deliveries GROUP BY endpoint_id").fetchall()
    assert dict(ids)[a["id"]] == 3
    conn.close()


def test_a_failing_outbox_write_rolls_the_state_change_back(store: SqliteStore) -> None:
    """Same transaction: when the delivery cannot be written, the change is not made either."""
    conn = side(store)
    outbox.add_endpoint(conn, "https://a.example/hook", [], NOW)
    [bot_id] = store.insert(adhoc(), NOW)
    conn.execute("ALTER TABLE webhook_deliveries RENAME TO broken")
    with pytest.raises(StorageError):
        store.transition(bot_id, "ready", "joining", NOW + 1)
    bot = store.get(bot_id)
    assert bot is not None and bot["state"] == "ready" and [e["state"] for e in bot["events"]] == ["ready"]
    conn.execute("ALTER TABLE broken RENAME TO webhook_deliveries")
    assert store.transition(bot_id, "ready", "joining", NOW + 2)
    assert [(r[1], r[2]) for r in rows(conn)] == [(None, "ready"), ("ready", "joining")]
    conn.close()


def test_old_states_across_a_burst_and_filtered_events(store: SqliteStore) -> None:
    """A batch of 1,200 bots (more than one 500-bot chunk), two changes of one bot in one
    transaction, and an endpoint that takes only the second change: each old state is the
    state just before, kept or not."""
    conn = side(store)
    ids = store.insert(adhoc(1200), NOW)
    outbox.add_endpoint(conn, "https://a.example/hook", ["joined_recording"], NOW)
    changes = [(b, "ready", "joining", None) for b in ids] + [(b, "joining", "joined_recording", None) for b in ids]
    assert len(store.transition_many(changes, NOW + 1)) == 2400
    found = rows(conn)
    assert len(found) == 1200
    assert {(r[1], r[2]) for r in found} == {("joining", "joined_recording")}
    assert {r[0] for r in found} == set(ids)
    assert len({r[3]["id"] for r in found}) == 1200
    conn.close()


def test_a_disabled_endpoint_gets_nothing_new(store: SqliteStore) -> None:
    conn = side(store)
    endpoint = outbox.add_endpoint(conn, "https://a.example/hook", [], NOW)
    outbox.disable_endpoint(conn, endpoint["id"], NOW, "410 Gone")
    store.insert(adhoc(3), NOW)
    assert rows(conn) == []
    [listed] = outbox.list_endpoints(conn)
    assert listed["state"] == "disabled"
    conn.close()
